"""Retried steps and repeated deliveries: nothing is said twice, nothing is dropped."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from carrier_core import Character, Runtime, run_turn
from carrier_core.decision import Decision, render_decision
from carrier_core.memory import MemoryKind
from carrier_core.models import ModelError, ScriptedModel
from carrier_core.store.store import Store
from carrier_core.turn.act import FAILED_ACTION_REPLY, act
from carrier_core.turn.decide import decide
from carrier_core.turn.ingest import ingest
from carrier_core.turn.schedule import next_turn
from tests.conftest import make_runtime


def xml(*actions: str, text: str = "") -> str:
    return render_decision(Decision(actions=list(actions), text=text))


def message(agent_id: uuid.UUID, text: str, **extra: Any) -> dict[str, Any]:
    return {"agent_id": agent_id, "room": "lobby", "sender": "u1", "text": text, **extra}


@pytest.fixture
def agent(scripted_runtime: Runtime, ada: Character) -> uuid.UUID:
    return scripted_runtime.register_agent(ada)


def test_a_retried_decide_returns_the_stored_decision_without_a_model_call(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="first"))
    turn_id = ingest(scripted_runtime, message(agent, "hi")).turn_id
    first = decide(scripted_runtime, turn_id, 1)
    again = decide(scripted_runtime, turn_id, 1)
    assert again.decision == first.decision and again.step == 1
    assert len(scripted.requests) == 1
    assert scripted_runtime.store.turn(turn_id).steps_taken == 1


def test_a_retried_act_returns_what_the_first_run_recorded(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    # The first run fails (the model is down when REPLY asks it for text); the retry must
    # not run the handler again, nor replace the apology with a second reply.
    scripted.add(xml("REPLY"), ModelError("outage"), "a late reply")
    turn_id = ingest(scripted_runtime, message(agent, "hi")).turn_id
    decide(scripted_runtime, turn_id, 1)
    first = act(scripted_runtime, turn_id, 0)
    retry = act(scripted_runtime, turn_id, 0)
    assert first.error == "ModelError: outage"
    assert retry == first
    assert [r.task for r in scripted.requests] == ["decide", "reply"]
    replies = scripted_runtime.store.turn_memories(turn_id, MemoryKind.MESSAGE)
    texts = [m.content.text for m in replies]
    assert texts == [FAILED_ACTION_REPLY.format(action="REPLY")]


def test_a_failed_turn_is_resumed_when_its_message_comes_again(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(ModelError("503 from provider"), xml("REPLY", text="back now"))
    failed = run_turn(scripted_runtime, message(agent, "hello?", client_message_id="m-1"))
    assert failed.status == "failed" and failed.replies == []
    retried = run_turn(scripted_runtime, message(agent, "hello?", client_message_id="m-1"))
    assert retried.turn_id == failed.turn_id and retried.duplicate
    assert retried.status == "done" and retried.error is None
    assert retried.reply_texts == ["back now"]
    # And a third delivery of the finished turn runs nothing.
    third = run_turn(scripted_runtime, message(agent, "hello?", client_message_id="m-1"))
    assert third.reply_texts == ["back now"] and len(scripted.requests) == 2


def test_an_abandoned_turn_is_resumed_once_its_runners_lease_runs_out(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    from carrier_core.models import HashEmbedding, ModelSet

    runtime = make_runtime(
        store, ModelSet(small=scripted, large=scripted, embedding=HashEmbedding())
    )
    agent = runtime.register_agent(ada)
    scripted.add(xml("REPLY", text="finally"))
    # A process ingested the message and claimed the room, then died before deciding.
    ingested = ingest(runtime, message(agent, "anyone?", client_message_id="m-2"))
    assert ingested.runner is not None
    busy = run_turn(runtime, message(agent, "anyone?", client_message_id="m-2"))
    assert busy.duplicate and busy.status == "queued" and scripted.requests == []
    with store._pool.connection() as conn:
        conn.execute(
            "UPDATE rooms SET runner_until = now() - interval '1 second' WHERE id ="
            " (SELECT room_id FROM turns WHERE id = %s)",
            (ingested.turn_id,),
        )
    resumed = run_turn(runtime, message(agent, "anyone?", client_message_id="m-2"))
    assert resumed.status == "done" and resumed.reply_texts == ["finally"]


def test_concurrent_deliveries_of_one_message_give_one_memory_turn_and_reply(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="just once"))
    results = []

    def deliver() -> None:
        results.append(run_turn(scripted_runtime, message(agent, "hey", client_message_id="m-3")))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.turn_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert len(scripted.requests) == 1
    with scripted_runtime.store._pool.connection() as conn:
        row = conn.execute("SELECT count(*) AS n FROM memories WHERE kind = 'message'").fetchone()
    assert row is not None and row["n"] == 2  # the message and one reply


def test_client_message_ids_are_scoped_to_their_sender(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="to sam"), xml("REPLY", text="to bo"))
    sam = run_turn(scripted_runtime, message(agent, "hi", client_message_id="1", room_kind="group"))
    bo = run_turn(
        scripted_runtime,
        message(agent, "hi", client_message_id="1", room_kind="group", sender="u2"),
    )
    assert sam.turn_id != bo.turn_id and not bo.duplicate
    assert (sam.reply_texts, bo.reply_texts) == (["to sam"], ["to bo"])


def test_decide_sees_the_conversation_as_it_stood_for_its_message(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("REPLY", text="about A"))
    first = ingest(scripted_runtime, message(agent, "message A"))
    ingest(scripted_runtime, message(agent, "message B, sent before A was answered"))
    decide(scripted_runtime, first.turn_id)
    prompt = scripted.requests[0].prompt
    assert "message A" in prompt
    assert "message B" not in prompt


#: Two runs of one act step meet in its handler (tests below); each waits for the other.
MEET = threading.Barrier(2, timeout=10)


def _meet_and_say(ctx: Any, decision: Decision) -> Any:
    from carrier_core.plugin import ActionResult

    MEET.wait()
    return ActionResult(replies=["said once"])


def meeting_plugin() -> Any:
    from carrier_core.plugin import Action, Plugin

    return Plugin(name="meeting", actions=[Action("MEET", "Meet.", _meet_and_say)])


def test_two_runs_of_one_act_step_at_once_store_one_reply_and_agree_on_it(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    """A runner taken over while the old one still runs (or a retried invocation) may run
    an action twice at once: one stores its reply with the step, the other stores nothing
    and answers with what the first recorded, so no run names a reply that is not there."""
    agent = scripted_runtime.register_agent(
        Character(name="Ada", plugins=["tests.test_redelivery:meeting_plugin"])
    )
    scripted.add(xml("MEET"))
    turn_id = ingest(scripted_runtime, message(agent, "hi")).turn_id
    decide(scripted_runtime, turn_id, 1)
    MEET.reset()
    results: list[Any] = [None, None]

    def run(n: int) -> None:
        results[n] = act(scripted_runtime, turn_id, 0)

    threads = [threading.Thread(target=run, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    first, second = results
    assert first is not None and second is not None
    assert first.reply_ids == second.reply_ids
    stored = scripted_runtime.store.turn_memories(turn_id, MemoryKind.MESSAGE)
    assert [m.id for m in stored] == first.reply_ids
    assert [m.content.text for m in stored] == ["said once"]


def test_a_repeated_delivery_while_a_runner_takes_its_turn_does_not_deadlock(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    """A runner locks the room, then its turn (`carrier_next_turn`); a message delivered
    again locks them in the same order, so neither waits for the other in a circle."""
    store = scripted_runtime.store
    first = ingest(scripted_runtime, message(agent, "hi", client_message_id="m-1"))
    room_id = store.turn(first.turn_id).room_id
    redelivered: list[Any] = []
    errors: list[BaseException] = []
    with store._pool.connection() as runner, runner.transaction():
        runner.execute("SELECT id FROM rooms WHERE id = %s FOR UPDATE", (room_id,))

        def deliver_again() -> None:
            again = message(agent, "hi", client_message_id="m-1")
            try:
                redelivered.append(ingest(scripted_runtime, again))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=deliver_again)
        thread.start()
        thread.join(0.5)  # it is waiting for the room now, holding nothing the runner needs
        runner.execute("UPDATE turns SET updated_at = now() WHERE id = %s", (first.turn_id,))
    thread.join(10)
    assert errors == [] and len(redelivered) == 1
    assert redelivered[0].turn_id == first.turn_id and not redelivered[0].created


def test_a_simple_reply_takes_its_room_before_its_turn(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    """A decide step that stores its simple reply takes the room's row before the turn's,
    in the order runners and redeliveries take them: one holding the room and then
    taking the turn (as a redelivery does) neither deadlocks with it nor waits for it."""
    scripted.add(xml("REPLY", text="in order"))
    ingested = ingest(scripted_runtime, message(agent, "hello"), take_expired=True)
    assert ingested.runner is not None
    turn = next_turn(scripted_runtime, ingested.runner)
    assert turn is not None
    room_id = scripted_runtime.store.turn(turn.turn_id).room_id
    outcome: list[Any] = []
    with scripted_runtime.store._pool.connection() as other, other.transaction():
        other.execute("SELECT FROM rooms WHERE id = %s FOR UPDATE", (room_id,))
        decider = threading.Thread(
            target=lambda: outcome.append(decide(scripted_runtime, turn.turn_id, 1))
        )
        decider.start()
        time.sleep(0.5)  # the decide step now waits for the room, holding nothing of the turn
        other.execute("SET LOCAL lock_timeout = '3s'")
        other.execute("UPDATE turns SET updated_at = now() WHERE id = %s", (turn.turn_id,))
    decider.join(timeout=10)
    [decided] = outcome
    assert decided.acted is not None and len(decided.acted.reply_ids) == 1
