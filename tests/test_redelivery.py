"""Retried steps and repeated deliveries: nothing is said twice, nothing is dropped."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from carrier_core import Character, Runtime, run_turn
from carrier_core.decision import Decision, render_decision
from carrier_core.memory import MemoryKind
from carrier_core.models import ModelError, ScriptedModel
from carrier_core.store import Store
from carrier_core.turn import act, decide, ingest
from carrier_core.turn.act import FAILED_ACTION_REPLY
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
