"""Plugin events, services and init: handlers hear a turn's events in order, in-process and
through the emulated state machine; a failing handler is recorded and the turn answers; a
service starts once, on first use, and stops with its runtime; init runs once per runtime."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from carrier_aws.local.emulator import Emulator
from carrier_aws.runners import timed_out
from carrier_aws.webhooks import finish_turn_and_plan_deliveries
from carrier_core import Character, Runtime, run_turn
from carrier_core.config import Settings
from carrier_core.decision import Decision, render_decision
from carrier_core.events import EventType
from carrier_core.models import HashEmbedding, ModelSet, ScriptedModel
from carrier_core.plugin import Plugin
from carrier_core.services import ServiceError
from carrier_core.store.store import Store
from carrier_core.tenants import create_key
from carrier_core.turn.context import TurnContext
from carrier_core.turn.ingest import ingest
from carrier_core.turn.run import run_room
from carrier_core.turn.schedule import next_turn, take_over
from carrier_core.world import LOCAL_TENANT_ID
from tests import event_plugin
from tests.conftest import make_runtime
from tests.test_emulated import RETRY_SCALE, post, wait_turn
from tests.test_schedule import expire_lease

LISTENING = "tests.event_plugin:listening"


def xml(*actions: str, text: str = "") -> str:
    return render_decision(Decision(actions=list(actions), text=text))


@pytest.fixture(autouse=True)
def fresh_plugin() -> Iterator[None]:
    for kept in (event_plugin.HEARD, event_plugin.INITS, *event_plugin.TALLIES.values()):
        kept.clear()
    yield


def _agent(runtime: Runtime, *plugins: str) -> uuid.UUID:
    name = f"Evt-{uuid.uuid4().hex[:6]}"
    return runtime.register_agent(Character(name=name, plugins=list(plugins)))


def _message(agent: uuid.UUID, text: str, **extra: Any) -> dict[str, Any]:
    return {"agent_id": agent, "room": "lobby", "sender": "grace", "text": text, **extra}


def heard(turn_id: uuid.UUID | str) -> list[str]:
    """The events the listening plugin heard in one turn, by name, in order."""
    return [name for name, turn, _ in event_plugin.HEARD if str(turn) == str(turn_id)]


#: A turn that replies once, with the listening plugin's evaluator (reflection is not due).
REPLIED = [
    "RUN_STARTED",
    "ACTION_STARTED",
    "MESSAGE_SENT",
    "ACTION_COMPLETED",
    "EVALUATOR_STARTED",
    "EVALUATOR_COMPLETED",
    "RUN_ENDED",
]


def test_an_event_handler_sees_the_turns_events_in_order(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = _agent(scripted_runtime, LISTENING)
    scripted.add(xml("REPLY", text="Hello Grace."), xml("TALLY"))
    first = run_turn(scripted_runtime, _message(agent, "hi", client_message_id="m1"))
    assert first.reply_texts == ["Hello Grace."]
    assert heard(first.turn_id) == ["ENTITY_JOINED", "MESSAGE_RECEIVED", *REPLIED]

    data = {name: data for name, turn, data in event_plugin.HEARD if turn == first.turn_id}
    [reply] = first.replies
    assert (
        data["ENTITY_JOINED"]["entity_id"]
        == scripted_runtime.store.memory(first.message_id).entity_id
    )
    assert data["MESSAGE_RECEIVED"]["message_id"] == first.message_id
    assert data["MESSAGE_RECEIVED"]["text"] == "hi"
    assert data["ACTION_STARTED"] == {"action": "REPLY"}
    assert data["MESSAGE_SENT"] == {"reply_id": reply.id, "text": "Hello Grace.", "action": "REPLY"}
    assert data["ACTION_COMPLETED"] == {"action": "REPLY", "reply_ids": [reply.id], "status": "ok"}
    assert data["EVALUATOR_COMPLETED"] == {"evaluator": "note", "status": "ok"}
    assert data["RUN_ENDED"]["status"] == "done" and data["RUN_ENDED"]["error"] is None

    # The same sender again: no longer joining the room.
    second = run_turn(scripted_runtime, _message(agent, "count", client_message_id="m2"))
    assert second.reply_texts == ["tally 1"]
    assert heard(second.turn_id)[:3] == ["MESSAGE_RECEIVED", "RUN_STARTED", "ACTION_STARTED"]

    # A redelivered message finds its turn: nothing fires again.
    before = len(event_plugin.HEARD)
    again = run_turn(scripted_runtime, _message(agent, "hi", client_message_id="m1"))
    assert again.duplicate and len(event_plugin.HEARD) == before


def test_a_failing_handler_is_recorded_and_the_turn_still_answers(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = _agent(scripted_runtime, "tests.event_plugin:tripping", LISTENING)
    scripted.add(xml("REPLY", text="Still here."))
    result = run_turn(scripted_runtime, _message(agent, "hi"))

    assert result.status == "done" and result.reply_texts == ["Still here."]
    # Plugins after the failing one still hear every event.
    assert heard(result.turn_id) == ["ENTITY_JOINED", "MESSAGE_RECEIVED", *REPLIED]
    failures = [
        (s.step, s.status, s.detail)
        for s in scripted_runtime.store.turn_steps(result.turn_id)
        if s.step.startswith("event:")
    ]
    assert failures == [
        (
            f"event:{kind}",
            "error",
            {"plugin": "tripping", "error": f"RuntimeError: the listener tripped on {kind}"},
        )
        for kind in ("RUN_STARTED", "MESSAGE_SENT")
    ]


def test_a_turn_given_up_fires_run_timeout_then_run_ended(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    runtime = scripted_runtime
    runtime.settings.turn_max_attempts = 1
    agent = _agent(runtime, LISTENING)
    stuck = ingest(runtime, _message(agent, "the turn that never ends"))
    assert stuck.runner is not None
    assert next_turn(runtime, stuck.runner) is not None  # its runner stops mid-turn
    expire_lease(runtime.store, stuck.runner.room_id)
    [stalled] = runtime.store.stalled_rooms()
    runner = take_over(runtime, stalled)
    assert runner is not None
    run_room(runtime, runner)

    assert runtime.store.turn(stuck.turn_id).status == "failed"
    events = [(n, d) for n, t, d in event_plugin.HEARD if t == stuck.turn_id]
    assert [n for n, _ in events] == [
        "ENTITY_JOINED",
        "MESSAGE_RECEIVED",
        "RUN_TIMEOUT",
        "RUN_ENDED",
    ]
    error = runtime.store.turn(stuck.turn_id).error
    assert events[2][1] == {"error": error} and "taken up 1 times" in str(error)
    assert events[3][1]["status"] == "failed"


def test_the_finish_function_s_timed_out_failures_fire_run_timeout(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    """In the cloud the finish function ends the turn with the failure a Catch passed on:
    the GiveUp state's TurnAbandoned and a step's time-out are RUN_TIMEOUT, others not."""
    assert timed_out({"Error": "TurnAbandoned", "Cause": "taken up 3 times"})
    assert timed_out({"Error": "States.Timeout"}) and timed_out({"Error": "Sandbox.Timedout"})
    assert not timed_out({"Error": "ModelUnavailable"}) and not timed_out({})
    agent = _agent(scripted_runtime, LISTENING)
    ingested = ingest(scripted_runtime, _message(agent, "hello"))
    end, _, _ = finish_turn_and_plan_deliveries(
        scripted_runtime, ingested.turn_id, "States.Timeout: decide", timed_out=True
    )
    assert end is not None and end.status == "failed"
    assert heard(ingested.turn_id)[-2:] == ["RUN_TIMEOUT", "RUN_ENDED"]
    # Ended already: a second finish fires nothing.
    finish_turn_and_plan_deliveries(scripted_runtime, ingested.turn_id, None)
    assert heard(ingested.turn_id)[-2:] == ["RUN_TIMEOUT", "RUN_ENDED"]
    assert len(heard(ingested.turn_id)) == 4


def test_a_service_starts_once_on_first_use_and_stops_with_its_runtime(
    settings: Settings, store: Store, scripted: ScriptedModel
) -> None:
    models = ModelSet(small=scripted, large=scripted, embedding=HashEmbedding())
    runtime = Runtime.open(settings, models)
    try:
        agent = _agent(runtime, LISTENING)
        scripted.add(xml("REPLY", text="No tally needed."))
        run_turn(runtime, _message(agent, "hello"))
        assert event_plugin.TALLIES["started"] == []  # nothing asked for it yet

        scripted.add(xml("TALLY"), xml("TALLY"))
        replies = [run_turn(runtime, _message(agent, "count")).reply_texts for _ in range(2)]
        assert replies == [["tally 1"], ["tally 2"]]
        [tally] = event_plugin.TALLIES["started"]
        assert tally.runtime is runtime and runtime.services.started == ["tally"]
        assert event_plugin.TALLIES["stopped"] == []
    finally:
        runtime.close()
    assert event_plugin.TALLIES["stopped"] == [tally]
    assert runtime.services.started == []


def test_a_service_no_plugin_declares_is_named(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = _agent(scripted_runtime, LISTENING)
    scripted.add(xml("REPLY", text="hi"))
    turn_id = run_turn(scripted_runtime, _message(agent, "hello")).turn_id
    ctx = TurnContext.load(scripted_runtime, turn_id)
    with pytest.raises(ServiceError, match="no service named 'weather' in the plugins of Evt-"):
        ctx.service("weather")


def test_init_runs_once_per_runtime_with_the_runtime(
    scripted_runtime: Runtime, scripted: ScriptedModel, store: Store
) -> None:
    agent = _agent(scripted_runtime, LISTENING)
    scripted.add(xml("REPLY", text="one"), xml("REPLY", text="two"))
    for text in ("one", "two"):
        run_turn(scripted_runtime, _message(agent, text))
    inits = event_plugin.INITS
    assert inits == [scripted_runtime]

    other = make_runtime(store, ModelSet(small=scripted, large=scripted, embedding=HashEmbedding()))
    scripted.add(xml("REPLY", text="three"))
    run_turn(other, _message(agent, "three"))
    assert inits == [scripted_runtime, other]


def test_a_plugin_whose_init_fails_is_skipped_and_named_and_the_turn_answers(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = _agent(scripted_runtime, "tests.event_plugin:unlicensed")
    character = scripted_runtime.store.character(agent)
    plugins = scripted_runtime.plugins_for(character)
    assert dict(plugins.skipped)["unlicensed"] == "init failed: PermissionError: no licence key"
    assert plugins.action("PAID") is None

    scripted.add(xml("PAID", text="Let me try."))
    result = run_turn(scripted_runtime, _message(agent, "do the paid thing"))
    assert result.status == "done" and result.reply_texts == ["Let me try."]
    steps = {s.step: s for s in scripted_runtime.store.turn_steps(result.turn_id)}
    assert steps["act:PAID"].status == "skipped"
    assert event_plugin.HEARD == []  # its handlers are skipped with it


def test_an_unknown_event_name_is_named() -> None:
    with pytest.raises(
        ValueError, match="plugin 'odd': no event named 'MESSAGE_RECIEVED'; known: "
    ):
        Plugin(name="odd", events={"MESSAGE_RECIEVED": [print]})
    with pytest.raises(ValueError, match="the handlers of RUN_ENDED must be a list of callables"):
        Plugin(name="odd", events={EventType.RUN_ENDED: print})  # type: ignore[dict-item]


def test_the_events_fire_in_order_through_the_emulated_state_machine(
    database_url: str, store: Store, runtime: Runtime, ada: Character
) -> None:
    """The Lambda path: the API's ingest, the state machine's decide, act and evaluate
    functions and the finish function fire the same events as the loop in-process."""
    agent = runtime.register_agent(ada.model_copy(update={"plugins": [LISTENING]}))
    with Emulator(database_url, retry_interval_scale=RETRY_SCALE) as emulator:
        key = create_key(store, LOCAL_TENANT_ID).secret
        client = TestClient(emulator.app, headers={"Authorization": f"Bearer {key}"})
        accepted = post(client, agent, "My name is Grace")
        assert wait_turn(client, accepted["turn_id"])["status"] == "done"
        emulator.drain()
    assert heard(accepted["turn_id"]) == ["ENTITY_JOINED", "MESSAGE_RECEIVED", *REPLIED]
