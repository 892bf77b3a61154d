"""SEND_MESSAGE end to end with the scripted model: the agent sends a message to another of
its rooms, or to someone in their direct room with it, the way a reply goes (a message of
the agent's in the target room, with the turn's id; that room's webhooks and WebSocket
connections); an unreachable target, another agent's room or another tenant's, gets
nothing sent and an error on the turn."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from websockets.sync.client import connect

from carrier_aws.local.emulator import Emulator
from carrier_core import Character, Runtime
from carrier_core.api.turns import turn_view
from carrier_core.decision import Decision, render_decision
from carrier_core.memory import Memory, MemoryKind
from carrier_core.models import (
    Generation,
    HashEmbedding,
    ModelRequest,
    ModelSet,
    OfflineModel,
    ScriptedModel,
)
from carrier_core.models.base import Usage
from carrier_core.plugin import Action, ActionResult, ModelProvider, OutgoingMessage, Plugin
from carrier_core.store.store import Store
from carrier_core.turn.act import act
from carrier_core.turn.context import TurnContext
from carrier_core.turn.run import run_turn
from carrier_core.webhooks import create_webhook, plan_deliveries
from carrier_core.world import end_user_scope, entity_id_for, room_id_for
from tests.conftest import TenantKey, make_runtime
from tests.test_turn import count, message, xml
from tests.test_websocket import WAIT_S, frames_until_done, serve, url


def asked(*messages: dict[str, str]) -> str:
    """The small model's reading of a SEND_MESSAGE request."""
    return json.dumps({"messages": list(messages)})


def in_room(runtime: Runtime, agent: uuid.UUID, room: str) -> list[Memory]:
    with runtime.store.connection() as conn:
        rows = conn.execute(
            "SELECT id FROM memories WHERE room_id = %s AND kind = 'message' ORDER BY seq",
            (room_id_for(agent, "api", room),),
        ).fetchall()
    return [runtime.store.memory(row["id"]) for row in rows]


@pytest.fixture
def agent(scripted_runtime: Runtime, scripted: ScriptedModel, ada: Character) -> uuid.UUID:
    """Ada, who has been in the group room "ops" (Grace spoke there) and in a direct room
    with Grace ("grace-dm")."""
    agent = scripted_runtime.register_agent(ada)
    scripted.add(xml("IGNORE"), xml("REPLY", text="Hi Grace."))
    grace = {"sender": "grace", "sender_name": "Grace"}
    run_turn(scripted_runtime, message(agent, "Ada, hi", room="ops", room_kind="group", **grace))
    run_turn(scripted_runtime, message(agent, "hello", room="grace-dm", **grace))
    return agent


def test_a_message_goes_to_another_room_as_the_agents_and_the_asker_is_told(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(
        xml("SEND_MESSAGE"),
        asked({"target": "#ops", "targetType": "room", "text": "The deploy is done."}),
    )
    result = run_turn(scripted_runtime, message(agent, "Tell the ops room the deploy is done"))
    assert result.reply_texts == ["Sent to ops."]
    [sent] = result.sent
    assert (sent.content.text, sent.content.actions) == ("The deploy is done.", ["SEND_MESSAGE"])
    assert (sent.entity_id, sent.room_id) == (agent, room_id_for(agent, "api", "ops"))
    assert [m.content.text for m in in_room(scripted_runtime, agent, "ops")][-1] == (
        "The deploy is done."
    )
    # The small model was shown where the agent can send: ops, and Sam and Grace in theirs.
    reading = scripted.requests[-1]
    assert reading.task == "send_message"
    assert "Rooms you can post in: ops." in reading.prompt
    assert "People you can message directly: Sam, Grace." in reading.prompt
    # GET turn: the reply in the asker's room, the sent message apart with its room.
    view = turn_view(scripted_runtime, scripted_runtime.store.turn(result.turn_id))
    assert [r.text for r in view.replies] == ["Sent to ops."]
    assert [(s.room, s.text) for s in view.sent] == [("ops", "The deploy is done.")]

    # Run again (a retried action): the step's record answers, nothing is stored twice.
    again = act(scripted_runtime, result.turn_id, 0)
    assert again.sent_ids == [sent.id]
    # A step and what it said are one statement, so one is never stored without the other;
    # even with its record taken away by hand, the message's place in the turn (its dedupe
    # key) keeps it from being stored twice.
    with scripted_runtime.store.connection() as conn:
        conn.execute(
            "DELETE FROM turn_steps WHERE turn_id = %s AND key = 'act:1:0'", (result.turn_id,)
        )
    scripted.add(asked({"target": "ops", "targetType": "room", "text": "The deploy is done."}))
    act(scripted_runtime, result.turn_id, 0)
    assert len(in_room(scripted_runtime, agent, "ops")) == 2  # Grace's, and the sent one once


def test_a_person_is_reached_in_their_direct_room(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(
        xml("SEND_MESSAGE"),
        asked({"target": "grace", "targetType": "user", "text": "Sam will be late."}),
    )
    result = run_turn(scripted_runtime, message(agent, "Let Grace know I'll be late"))
    assert result.reply_texts == ["Sent to grace."]
    dm = in_room(scripted_runtime, agent, "grace-dm")
    assert [m.content.text for m in dm] == ["hello", "Hi Grace.", "Sam will be late."]
    assert [m.id for m in result.sent] == [dm[-1].id]  # stored as the turn's


def test_an_unreachable_target_sends_nothing_and_the_turn_records_why(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    before = count(scripted_runtime.store, "SELECT count(*) FROM memories")
    scripted.add(
        xml("SEND_MESSAGE"),
        asked({"target": "#nowhere", "targetType": "room", "text": "Anyone?"}),
    )
    dm = run_turn(scripted_runtime, message(agent, "Post 'Anyone?' in #nowhere"))
    assert dm.reply_texts == ["I can't reach #nowhere from here."]  # in a DM, the asker is told
    assert dm.sent == []
    [step] = [s for s in scripted_runtime.store.turn_steps(dm.turn_id) if s.step.startswith("act")]
    assert step.status == "error"
    assert step.detail["error"] == "no room or person the agent can reach: #nowhere"
    # In a group, the turn records it and the room hears nothing.
    scripted.add(
        xml("SEND_MESSAGE"),
        asked({"target": "Zed", "targetType": "user", "text": "Hi"}),
    )
    group = run_turn(
        scripted_runtime, message(agent, "Ada, tell Zed hi", room="ops", room_kind="group")
    )
    assert group.replies == [] and group.sent == []
    [step] = [
        s for s in scripted_runtime.store.turn_steps(group.turn_id) if s.step == "act:SEND_MESSAGE"
    ]
    assert (step.status, step.detail["error"]) == (
        "error",
        "no room or person the agent can reach: Zed",
    )
    # Only the two messages asked and the DM's answer were stored.
    assert count(scripted_runtime.store, "SELECT count(*) FROM memories") == before + 3


def test_a_name_several_people_answer_to_reaches_none_of_them(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    """A name is what a sender calls themself: Eve calling herself Grace too (she spoke
    last) must not receive what is meant for Grace."""
    scripted.add(xml("REPLY", text="Hi."))
    run_turn(
        scripted_runtime, message(agent, "hi", room="eve-dm", sender="eve", sender_name="Grace")
    )
    scripted.add(
        xml("SEND_MESSAGE"),
        asked({"target": "Grace", "targetType": "user", "text": "Your test is negative."}),
    )
    asked_for = run_turn(scripted_runtime, message(agent, "Tell Grace her test is negative"))
    assert asked_for.sent == []
    assert asked_for.reply_texts == ["More than one person is called Grace: who do you mean?"]
    [step] = [
        s for s in scripted_runtime.store.turn_steps(asked_for.turn_id) if s.step.startswith("act")
    ]
    assert step.detail["error"] == "more than one person is called Grace"
    assert [m.content.text for m in in_room(scripted_runtime, agent, "eve-dm")] == ["hi", "Hi."]
    # By id, each is reached.
    grace = entity_id_for(agent, "api", "grace")
    scripted.add(
        xml("SEND_MESSAGE"),
        asked({"target": str(grace), "targetType": "user", "text": "Your test is negative."}),
    )
    run_turn(scripted_runtime, message(agent, "Tell Grace her test is negative"))
    assert in_room(scripted_runtime, agent, "grace-dm")[-1].content.text == "Your test is negative."


def test_a_room_is_reached_by_its_name_whoever_else_is_called_so(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="Hi."), xml("REPLY", text="Hi."))
    for sender in ("o1", "o2"):  # two people calling themselves Ops
        run_turn(
            scripted_runtime,
            message(agent, "hi", room=f"{sender}-dm", sender=sender, sender_name="Ops"),
        )
    scripted.add(
        xml("SEND_MESSAGE"),
        asked({"target": "ops", "targetType": "room", "text": "The deploy is done."}),
    )
    result = run_turn(scripted_runtime, message(agent, "Tell the ops room the deploy is done"))
    assert result.reply_texts == ["Sent to ops."]


def test_someone_who_spoke_in_an_end_users_room_is_not_reached_there(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    """An operator answering in Alice's room is someone of Alice's there (`sender_key`):
    the tenant's message for that operator goes to the operator's own direct room, never
    into Alice's conversation, and a message for Hal, who has none, goes nowhere."""
    scripted.add(xml("REPLY", text="Hi."), xml("REPLY", text="Hi."), xml("REPLY", text="Hi."))
    alice_hi = message(agent, "hi", room="user:alice:chat", sender="alice", sender_name="Alice")
    run_turn(scripted_runtime, alice_hi)
    for sender in ("grace", "hal"):
        run_turn(
            scripted_runtime,
            message(
                agent,
                "Following up",
                room="user:alice:chat",
                sender=sender,
                sender_name=sender.title(),
            ),
        )
    scripted.add(
        xml("SEND_MESSAGE"),
        asked({"target": "Grace", "targetType": "user", "text": "Sam will be late."}),
        xml("SEND_MESSAGE"),
        asked({"target": "Hal", "targetType": "user", "text": "Bob's test is positive."}),
    )
    to_grace = run_turn(scripted_runtime, message(agent, "Let Grace know I'll be late"))
    to_hal = run_turn(scripted_runtime, message(agent, "Tell Hal Bob's test is positive"))

    assert [m.room_id for m in to_grace.sent] == [room_id_for(agent, "api", "grace-dm")]
    assert to_hal.sent == [] and to_hal.reply_texts == ["I can't reach Hal from here."]
    alice = [m.content.text for m in in_room(scripted_runtime, agent, "user:alice:chat")]
    assert "Sam will be late." not in alice and "Bob's test is positive." not in alice
    # Alice herself is reached in her room; Grace's and Hal's visits do not make it theirs.
    [shown] = re.findall(r"People you can message directly: (.*)\.", scripted.requests[-1].prompt)
    assert sorted(shown.split(", ")) == ["Alice", "Grace", "Sam"]


def test_with_the_offline_small_model_nothing_is_sent(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    """The offline model cannot read a request to send: the action asks instead of guessing."""
    runtime = make_runtime(
        store, ModelSet(small=OfflineModel(), large=scripted, embedding=HashEmbedding())
    )
    agent = runtime.register_agent(ada)
    scripted.add(xml("REPLY", text="Hi."), xml("SEND_MESSAGE"))
    run_turn(runtime, message(agent, "hi", room="ops"))
    result = run_turn(runtime, message(agent, "Tell ops the deploy is done"))
    assert (result.reply_texts, result.sent) == (["Where should I send what, exactly?"], [])


def test_another_agents_or_tenants_rooms_cannot_be_reached(
    scripted_runtime: Runtime,
    scripted: ScriptedModel,
    agent: uuid.UUID,
    ada: Character,
    make_tenant: Callable[[str], TenantKey],
) -> None:
    other_tenant = make_tenant("globex").tenant_id
    theirs = scripted_runtime.register_agent(
        Character(name="Bo", plugins=["tests.test_send_message:sneaky"]), other_tenant
    )
    scripted.add(xml("REPLY", text="Hello."))
    run_turn(scripted_runtime, message(theirs, "hi", room="vault"))
    stored = len(in_room(scripted_runtime, theirs, "vault"))

    # Asked by name: only Ada's own rooms are searched.
    scripted.add(
        xml("SEND_MESSAGE"), asked({"target": "vault", "targetType": "room", "text": "psst"})
    )
    refused = run_turn(scripted_runtime, message(agent, "Post psst in vault"))
    assert refused.reply_texts == ["I can't reach vault from here."]
    # Named by id, by a plugin's action of Bo's: act refuses a room that is not Bo's.
    SNEAKY["room_id"] = room_id_for(agent, "api", "ops")
    scripted.add(xml("SNEAK"))
    sneak = run_turn(scripted_runtime, message(theirs, "do it", room="vault"))
    assert sneak.sent == []
    [step] = [s for s in scripted_runtime.store.turn_steps(sneak.turn_id) if s.step == "act:SNEAK"]
    assert step.status == "error"
    assert f"sent a message to {SNEAKY['room_id']}, not a room of its agent" in step.detail["error"]
    assert [m.content.text for m in in_room(scripted_runtime, agent, "ops")] == ["Ada, hi"]
    assert len(in_room(scripted_runtime, theirs, "vault")) == stored + 2  # "do it", the apology


@pytest.mark.parametrize(
    ("key", "scope"),
    [
        ("user:bob:chat", "user:bob:"),
        ("user:bob:a:b", "user:bob:"),  # a room key may hold colons; a subject may not
        ("user:a%3Ab:chat", "user:a%3Ab:"),  # as scoped_key writes the subject "a:b"
        ("ops", ""),
        ("user:", ""),
        ("user::chat", ""),
    ],
)
def test_an_end_users_scope_is_the_start_of_their_keys(key: str, scope: str) -> None:
    assert end_user_scope(key) == scope
    assert not end_user_scope(key) or not "user:bobby:chat".startswith(end_user_scope(key))


def test_in_an_end_users_room_only_their_own_rooms_are_shown_and_reached(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    """Rooms an end user names are kept as `user:<subject>:<key>` (`scoped_key`)."""
    bob = {"sender": "bob", "sender_name": "Bob"}
    scripted.add(xml("REPLY", text="Hi."), xml("REPLY", text="Hi."), xml("REPLY", text="Hi."))
    run_turn(scripted_runtime, message(agent, "hi", room="user:alice:chat", sender="alice"))
    run_turn(
        scripted_runtime, message(agent, "hi", room="user:bob:notes", room_kind="group", **bob)
    )
    run_turn(scripted_runtime, message(agent, "hi", room="user:bob:chat", **bob))

    scripted.add(
        xml("SEND_MESSAGE"),
        asked({"target": "#notes", "targetType": "room", "text": "Buy milk."}),
    )
    sent = run_turn(scripted_runtime, message(agent, "Note: buy milk", room="user:bob:chat", **bob))
    assert sent.reply_texts == ["Sent to notes."]
    assert in_room(scripted_runtime, agent, "user:bob:notes")[-1].content.text == "Buy milk."
    # Shown Bob's own rooms only, as he names them: not ops, Grace or Alice.
    prompt = scripted.requests[-1].prompt
    assert "Rooms you can post in: notes." in prompt
    assert "People you can message directly: Bob." in prompt
    assert "ops" not in prompt and "Grace" not in prompt and "alice" not in prompt

    # Named by its stored key (the prompt's room section shows keys so), it is found too.
    scripted.add(
        xml("SEND_MESSAGE"),
        asked({"target": "user:bob:notes", "targetType": "room", "text": "And eggs."}),
    )
    again = run_turn(scripted_runtime, message(agent, "Note: eggs", room="user:bob:chat", **bob))
    assert again.reply_texts == ["Sent to notes."]

    for target, kind in [("ops", "room"), ("user:alice:chat", "room"), ("alice", "user")]:
        scripted.add(
            xml("SEND_MESSAGE"), asked({"target": target, "targetType": kind, "text": "psst"})
        )
        refused = run_turn(
            scripted_runtime, message(agent, f"Tell {target} psst", room="user:bob:chat", **bob)
        )
        assert refused.reply_texts == [f"I can't reach {target} from here."], target
    assert [m.content.text for m in in_room(scripted_runtime, agent, "ops")] == ["Ada, hi"]
    assert [m.content.text for m in in_room(scripted_runtime, agent, "user:alice:chat")] == [
        "hi",
        "Hi.",
    ]


def test_an_action_in_an_end_users_room_cannot_send_to_another_end_users(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    cy = scripted_runtime.register_agent(
        Character(name="Cy", plugins=["tests.test_send_message:sneaky"])
    )
    scripted.add(xml("REPLY", text="Hello."), xml("REPLY", text="Hello."))
    run_turn(scripted_runtime, message(cy, "hi", room="user:alice:chat", sender="alice"))
    run_turn(scripted_runtime, message(cy, "hi", room="ops", room_kind="group"))
    SNEAKY["room_id"] = room_id_for(cy, "api", "user:alice:chat")

    scripted.add(xml("SNEAK"))
    sneak = run_turn(scripted_runtime, message(cy, "do it", room="user:bob:chat", sender="bob"))

    assert sneak.sent == []
    [step] = [s for s in scripted_runtime.store.turn_steps(sneak.turn_id) if s.step == "act:SNEAK"]
    assert step.status == "error"
    assert "not a room of this end user's" in step.detail["error"]
    assert len(in_room(scripted_runtime, cy, "user:alice:chat")) == 2  # "hi", "Hello."
    # The tenant's own room may send to any room of its agent, an end user's included.
    scripted.add(xml("SNEAK"))
    allowed = run_turn(scripted_runtime, message(cy, "do it", room="ops", room_kind="group"))
    assert [m.room_id for m in allowed.sent] == [SNEAKY["room_id"]]


#: The room the SNEAK action sends to, set by the test.
SNEAKY: dict[str, Any] = {}


def _sneak(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(sent=[OutgoingMessage(SNEAKY["room_id"], "psst")])


sneaky = Plugin(name="sneaky", actions=[Action("SNEAK", "Send where it should not.", _sneak)])


def test_webhooks_get_a_sent_message_for_the_room_it_went_to(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    runtime = make_runtime(
        store,
        ModelSet(small=scripted, large=scripted, embedding=HashEmbedding()),
        webhook_allow_private_urls=True,
    )
    agent = runtime.register_agent(ada)
    scripted.add(xml("IGNORE"))
    run_turn(runtime, message(agent, "Ada, hi", room="ops", room_kind="group", sender="g"))
    ops = create_webhook(runtime, agent, "http://127.0.0.1:9/ops", room="ops")
    lobby = create_webhook(runtime, agent, "http://127.0.0.1:9/lobby", room="lobby")
    everywhere = create_webhook(runtime, agent, "http://127.0.0.1:9/all")
    scripted.add(
        xml("SEND_MESSAGE"), asked({"target": "ops", "targetType": "room", "text": "Done."})
    )
    turn_id = run_turn(runtime, message(agent, "Tell ops: done")).turn_id

    planned = [store.delivery(d) for d in plan_deliveries(runtime, turn_id)]
    got = sorted(
        (d.webhook_id, d.payload["room"], d.payload["reply"]["text"]) for d in planned if d
    )
    assert got == sorted(
        [
            (ops.webhook.id, "ops", "Done."),
            (lobby.webhook.id, "lobby", "Sent to ops."),
            (everywhere.webhook.id, "ops", "Done."),
            (everywhere.webhook.id, "lobby", "Sent to ops."),
        ]
    )
    assert {d.payload["turn_id"] for d in planned if d} == {str(turn_id)}


# -- through the bundle: the target room's WebSocket connections hear it ---------------------


class CourierModel:
    """Chooses SEND_MESSAGE for "tell <room>: <text>", and reads that request."""

    name = "courier"

    def __init__(self) -> None:
        self._offline = OfflineModel()

    def generate(self, request: ModelRequest) -> Generation:
        said = request.hints.get("message", "")
        room, _, text = said.removeprefix("tell ").partition(": ")
        if request.task == "decide" and said.startswith("tell "):
            answer = render_decision(Decision(thought="Passing it on.", actions=["SEND_MESSAGE"]))
        elif request.task == "send_message":
            answer = asked({"target": room, "targetType": "room", "text": text})
        else:
            return self._offline.generate(request)
        return Generation(text=answer, usage=Usage(1, 1), model=self.name)


courier = Plugin(
    name="courier",
    models=[
        ModelProvider(
            "courier",
            lambda character: ModelSet(
                small=CourierModel(), large=CourierModel(), embedding=HashEmbedding()
            ),
        )
    ],
)


def test_the_target_rooms_connections_hear_the_sent_message(
    database_url: str, store: Store, runtime: Runtime, make_tenant: Callable[[str], TenantKey]
) -> None:
    tenant = make_tenant("acme")
    agent = runtime.register_agent(
        Character(
            name="Ada",
            plugins=["tests.test_send_message:courier"],
            settings={"model_provider": "courier"},
        ),
        tenant.tenant_id,
    )
    run_turn(runtime, message(agent, "Ada, hello", room="ops", room_kind="group"))
    with (
        Emulator(database_url, retry_interval_scale=0.01) as emulator,
        serve(emulator) as server,
        connect(url(server, agent, "lobby", tenant.key)) as talker,
        connect(url(server, agent, "ops", tenant.key)) as ops,
    ):
        talker.send(
            json.dumps(
                {"action": "sendMessage", "text": "tell ops: lunch is here", "sender": "sam"}
            )
        )
        said = frames_until_done(talker)
        heard = json.loads(ops.recv(timeout=WAIT_S))
    replies = [f for f in said if f["type"] == "reply"]
    assert [r["text"] for r in replies] == ["Sent to ops."]
    turn_id = replies[0]["turn_id"]
    [sent] = [
        m
        for m in store.turn_memories(uuid.UUID(turn_id), MemoryKind.MESSAGE)
        if m.room_id == room_id_for(agent, "api", "ops")
    ]
    assert heard == {
        "type": "reply",
        "event": "MESSAGE_SENT",
        "turn_id": turn_id,
        "id": str(sent.id),
        "text": "lunch is here",
        "actions": ["SEND_MESSAGE"],
        "attachments": [],
    }
