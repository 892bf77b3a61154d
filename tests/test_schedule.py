"""Per-room scheduling in the core: one runner per room, turns in order, nothing stranded.

The cloud runs the same functions from a state machine (tests/test_emulated.py); here
they are driven directly against the embedded Postgres.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from carrier_aws.runners import next_state
from carrier_core import Character, Runtime, run_turn
from carrier_core.frames import finished_frames
from carrier_core.memory import MemoryKind
from carrier_core.models import HashEmbedding, ModelSet, ModelUnavailable, ScriptedModel
from carrier_core.store.runners import Runner, Stalled
from carrier_core.store.store import Store
from carrier_core.turn.decide import decide
from carrier_core.turn.ingest import ingest
from carrier_core.turn.run import finish_turn, run_room
from carrier_core.turn.schedule import hand_off, next_turn, take_over
from tests.conftest import make_runtime
from tests.test_redelivery import message, xml


@pytest.fixture
def agent(scripted_runtime: Runtime, ada: Character) -> uuid.UUID:
    return scripted_runtime.register_agent(ada)


def room_row(store: Store, room_id: uuid.UUID) -> dict[str, Any]:
    with store.connection() as conn:
        row = conn.execute(
            "SELECT runner_generation, runner_until FROM rooms WHERE id = %s", (room_id,)
        ).fetchone()
    assert row is not None
    return dict(row)


def expire_lease(store: Store, room_id: uuid.UUID) -> None:
    """As if the runner had stopped renewing its lease a while ago."""
    with store.connection() as conn:
        conn.execute(
            "UPDATE rooms SET runner_until = now() - interval '1 second' WHERE id = %s",
            (room_id,),
        )


def test_a_room_s_turns_are_taken_in_arrival_order_then_the_lease_is_given_back(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    runtime = scripted_runtime
    first, second, third = (ingest(runtime, message(agent, f"m{n}")) for n in range(3))
    # The first delivery found the room free and claimed its runner; the others queue.
    assert first.runner is not None
    assert first.runner.room_id == runtime.store.turn(first.turn_id).room_id
    assert (second.runner, third.runner) == (None, None)
    assert {first.status, second.status, third.status} == {"queued"}

    runner = first.runner
    taken = []
    while (turn := next_turn(runtime, runner)) is not None:
        assert runtime.store.turn(turn.turn_id).status == "running" and turn.attempt == 1
        taken.append(turn.turn_id)
        finish_turn(runtime, turn.turn_id)
    assert taken == [first.turn_id, second.turn_id, third.turn_id]
    assert room_row(runtime.store, runner.room_id)["runner_until"] is None
    # Free again: the next message claims a new runner.
    following = ingest(runtime, message(agent, "m3")).runner
    assert following is not None and following.room_id == runner.room_id
    assert following.generation > runner.generation


def test_messages_racing_a_runner_that_gives_the_room_back_are_never_stranded(
    store: Store, ada: Character
) -> None:
    """Many deliveries at once, each either claims the room (and runs it) or queues behind
    the runner that holds it; a runner finding nothing gives the lease back in the same
    transaction. If a message could slip between, its turn would stay queued forever."""
    from carrier_core.models import offline_models

    runtime = make_runtime(store, offline_models(), pool_size=8)
    agent = runtime.register_agent(ada)
    for round_ in range(3):
        threads = [
            threading.Thread(
                target=run_turn, args=(runtime, message(agent, f"r{round_} message {n}"))
            )
            for n in range(12)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    with store.connection() as conn:
        statuses = conn.execute("SELECT status, count(*) AS n FROM turns GROUP BY status")
        assert {r["status"]: r["n"] for r in statuses.fetchall()} == {"done": 36}
        [room] = conn.execute("SELECT runner_until FROM rooms").fetchall()
    assert room["runner_until"] is None


def test_a_coalescing_agent_answers_queued_messages_in_one_turn_that_sees_them_all(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    runtime = scripted_runtime
    agent = runtime.register_agent(
        Character(name="Coalescing Ada", settings={"double_texting": "coalesce"})
    )
    scripted.add(xml("REPLY", text="all three, then"))
    turns = [ingest(runtime, message(agent, text)) for text in ("one", "two", "three")]
    assert turns[0].runner is not None
    run_room(runtime, turns[0].runner)

    [decision] = [r for r in scripted.requests if r.task == "decide"]  # one for three messages
    prompt = decision.prompt
    assert all(text in prompt for text in ("one", "two", "three"))
    records = [runtime.store.turn(t.turn_id) for t in turns]
    assert [r.status for r in records] == ["coalesced", "coalesced", "done"]
    assert [r.answered_by for r in records[:2]] == [turns[2].turn_id] * 2
    replies = runtime.store.turn_memories(turns[2].turn_id, MemoryKind.MESSAGE)
    assert [m.content.text for m in replies] == ["all three, then"]
    # A client listening for any of the three turns hears that it ended.
    answering = str(turns[2].turn_id)
    assert finished_frames(runtime, turns[2].turn_id) == [
        {
            "type": "turn.done",
            "event": "RUN_ENDED",
            "turn_id": str(t.turn_id),
            "answered_by": answering,
        }
        for t in turns[:2]
    ] + [{"type": "turn.done", "event": "RUN_ENDED", "turn_id": answering}]


def test_in_order_is_the_default_every_message_its_own_turn(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    models = ModelSet(small=scripted, large=scripted, embedding=HashEmbedding())
    runtime = make_runtime(store, models, reflection_interval=100)  # decide calls only
    agent = runtime.register_agent(ada)
    scripted.add(*(xml("REPLY", text=f"to {n}") for n in range(3)))
    turns = [ingest(runtime, message(agent, f"message {n}")) for n in range(3)]
    assert turns[0].runner is not None
    run_room(runtime, turns[0].runner)
    assert [r.task for r in scripted.requests] == ["decide"] * 3
    assert [runtime.store.turn(t.turn_id).status for t in turns] == ["done"] * 3


def test_a_turn_whose_runners_keep_stopping_is_failed_and_the_room_moves_on(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    runtime = scripted_runtime
    stuck = ingest(runtime, message(agent, "the turn that never ends"))
    after = ingest(runtime, message(agent, "the next one"))
    assert stuck.runner is not None
    room_id = stuck.runner.room_id
    runner: Runner | None = stuck.runner
    max_attempts = runtime.settings.turn_max_attempts
    for attempt in range(1, max_attempts + 1):
        assert runner is not None
        turn = next_turn(runtime, runner)
        assert turn is not None and turn.turn_id == stuck.turn_id
        assert (turn.attempt, turn.give_up) == (attempt, None)
        # The runner stops mid-turn; its lease runs out; the sweep takes the room over.
        expire_lease(runtime.store, room_id)
        [stalled] = runtime.store.stalled_rooms()
        runner = take_over(runtime, stalled)
    assert runner is not None
    scripted.add(xml("REPLY", text="next, at last"))
    run_room(runtime, runner)

    failed = runtime.store.turn(stuck.turn_id)
    assert failed.status == "failed" and failed.attempts == max_attempts + 1
    assert failed.error is not None and f"taken up {max_attempts} times" in failed.error
    assert runtime.store.turn(after.turn_id).status == "done"
    assert room_row(runtime.store, room_id)["runner_until"] is None


def test_a_superseded_runner_stops_and_leaves_the_room_to_its_successor(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    runtime = scripted_runtime
    ingested = ingest(runtime, message(agent, "hello"))
    old = ingested.runner
    assert old is not None
    expire_lease(runtime.store, old.room_id)
    [stalled] = runtime.store.stalled_rooms()
    assert stalled.runner == old
    new = take_over(runtime, stalled)
    assert new is not None and new.room_id == old.room_id and new.generation > old.generation
    # Taking over again from the same reading does nothing: someone already did.
    assert take_over(runtime, stalled) is None
    assert next_turn(runtime, old) is None
    assert room_row(runtime.store, old.room_id)["runner_until"] is not None  # still new's
    turn = next_turn(runtime, new)
    assert turn is not None and turn.turn_id == ingested.turn_id


def test_the_sweep_finds_lapsed_leases_and_waiting_turns_with_no_runner(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    runtime = scripted_runtime
    held = ingest(runtime, message(agent, "hello"))
    assert held.runner is not None
    assert runtime.store.stalled_rooms() == []  # a live lease is left alone
    assert [s.runner for s in runtime.store.stalled_rooms(every_lease=True)] == [held.runner]
    with runtime.store.connection() as conn:  # a lease lost some other way
        conn.execute("UPDATE rooms SET runner_until = NULL")
    [orphan] = runtime.store.stalled_rooms()
    assert orphan == Stalled(held.runner.room_id, held.runner.generation, None)
    assert orphan.runner is None
    successor = take_over(runtime, orphan)
    assert successor is not None and successor.generation > held.runner.generation


def test_a_retriable_model_error_shows_the_turn_as_retrying_with_the_error(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    runtime = scripted_runtime
    scripted.add(ModelUnavailable("503 from the provider"))
    ingested = ingest(runtime, message(agent, "hello"))
    assert ingested.runner is not None
    next_turn(runtime, ingested.runner)
    with pytest.raises(ModelUnavailable):
        decide(runtime, ingested.turn_id, 1)
    turn = runtime.store.turn(ingested.turn_id)
    assert turn.status == "retrying"
    assert turn.error == "ModelUnavailable: 503 from the provider"


def test_a_long_lived_room_is_handed_to_a_fresh_execution(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    runtime = scripted_runtime
    ingested = ingest(runtime, message(agent, "hello"))
    ingest(runtime, message(agent, "again"))
    runner = ingested.runner
    assert runner is not None
    started: list[Runner] = []
    state = next_state(runtime, runner, 5, started.append, limit=5)
    assert state == {
        "room_id": str(runner.room_id),
        "generation": runner.generation,
        "turns": 5,
        "turn_id": None,
        "error": None,
    }
    [successor] = started
    assert successor.room_id == runner.room_id and successor.generation > runner.generation
    assert room_row(runtime.store, runner.room_id)["runner_until"] is not None
    # The old runner is done; the new one takes the room's turns up in order.
    assert next_turn(runtime, runner) is None
    following = next_state(runtime, started[0], 0, started.append, limit=5)
    assert following["turn_id"] == str(ingested.turn_id) and following["give_up"] is None
    assert hand_off(runtime, runner) is None  # superseded: no successor of its own


def test_finishing_a_turn_takes_the_room_s_next_one_in_the_same_statement(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    """The finish step's two halves, one round trip: the turn ends (its events fire, a turn
    ended already is left be) and the room's next turn is taken for the runner as
    `next_turn` takes it; the last one gives the room back; a superseded runner ends its
    turn and is given nothing more."""
    runtime = scripted_runtime
    first, second = (ingest(runtime, message(agent, f"m{n}")) for n in range(2))
    runner = first.runner
    assert runner is not None
    turn = next_turn(runtime, runner)
    assert turn is not None and turn.turn_id == first.turn_id
    before = runtime.store.round_trips.count
    following = finish_turn(runtime, first.turn_id, runner=runner)
    assert runtime.store.round_trips.count - before == 1
    assert runtime.store.turn(first.turn_id).status == "done"
    assert following is not None and following.turn_id == second.turn_id
    assert following.attempt == 1 and runtime.store.turn(second.turn_id).status == "running"
    # Ended already (a retried finish): its end stands, and the runner is given its turn
    # again, as `next_turn` would give it, not counted as a new attempt.
    again = finish_turn(runtime, first.turn_id, error="late", runner=runner)
    assert again == following
    assert runtime.store.turn(first.turn_id).status == "done"
    assert finish_turn(runtime, second.turn_id, runner=runner) is None
    assert room_row(runtime.store, runner.room_id)["runner_until"] is None  # given back

    third = ingest(runtime, message(agent, "m2"))
    assert third.runner is not None
    assert next_turn(runtime, third.runner) is not None
    assert hand_off(runtime, third.runner) is not None  # third.runner is superseded
    assert finish_turn(runtime, third.turn_id, error="boom", runner=third.runner) is None
    assert runtime.store.turn(third.turn_id).status == "failed"


def test_finishing_a_turn_locks_its_room_before_the_turn(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    """As every runner does (and a redelivery, which holds the room and then wants the
    turn): while another transaction holds the room, the finish waits without having
    touched the turn's row, so the two never deadlock."""
    runtime = scripted_runtime
    ingested = ingest(runtime, message(agent, "hello"))
    runner = ingested.runner
    assert runner is not None and next_turn(runtime, runner) is not None
    results: list[Any] = []
    with runtime.store.transaction() as conn:
        conn.execute("SELECT 1 FROM rooms WHERE id = %s FOR UPDATE", (runner.room_id,))
        finishing = threading.Thread(
            target=lambda: results.append(finish_turn(runtime, ingested.turn_id, runner=runner))
        )
        finishing.start()
        finishing.join(timeout=0.5)
        assert finishing.is_alive(), "the finish did not wait for the room"
        # The turn's row is free: the finish has not updated it yet.
        conn.execute("SELECT 1 FROM turns WHERE id = %s FOR UPDATE NOWAIT", (ingested.turn_id,))
    finishing.join(timeout=10)
    assert results == [None] and runtime.store.turn(ingested.turn_id).status == "done"


def test_a_message_stored_while_the_runner_gives_the_room_back_claims_it_after(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    """The runner's last look and its giving back are one transaction holding the room row:
    a message stored meanwhile waits for it, then finds the room free and claims it."""
    runtime = scripted_runtime
    first = ingest(runtime, message(agent, "first"))
    assert first.runner is not None
    finish_turn(runtime, first.turn_id)
    results: list[Any] = []
    with runtime.store.transaction() as conn:
        # The runner, mid-way: it holds the room and has found nothing left.
        conn.execute("SELECT 1 FROM rooms WHERE id = %s FOR UPDATE", (first.runner.room_id,))
        late = threading.Thread(
            target=lambda: results.append(ingest(runtime, message(agent, "late")))
        )
        late.start()
        late.join(timeout=0.5)
        assert late.is_alive(), "the delivery did not wait for the room"
        conn.execute("UPDATE rooms SET runner_until = NULL WHERE id = %s", (first.runner.room_id,))
    late.join(timeout=10)
    [ingested] = results
    assert ingested.runner is not None and ingested.runner.room_id == first.runner.room_id
    assert ingested.runner.generation > first.runner.generation


def test_a_done_turn_stays_done_when_a_failure_is_reported_after_it_ended(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    """The finish step marks the turn done, then fails to give its runner the next turn
    (the database goes away): the state machine's Catch reports a failure for a turn that
    had already ended. Its answer stands."""
    runtime = scripted_runtime
    ingested = ingest(runtime, message(agent, "hello"))
    finish_turn(runtime, ingested.turn_id)
    finish_turn(runtime, ingested.turn_id, error="DatabaseUnavailable: the database went away")
    turn = runtime.store.turn(ingested.turn_id)
    assert (turn.status, turn.error) == ("done", None)


def test_a_room_made_again_never_reuses_a_runner_s_name(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    """Execution names are kept for 90 days: a room deleted and made again (the same id,
    from the same key) must not name a runner that already ran."""
    runtime = scripted_runtime
    first = ingest(runtime, message(agent, "hello"))
    assert first.runner is not None
    finish_turn(runtime, first.turn_id)
    assert next_turn(runtime, first.runner) is None
    runtime.store.delete_room(first.runner.room_id)
    again = ingest(runtime, message(agent, "hello again"))
    assert again.runner is not None and again.runner.room_id == first.runner.room_id
    assert again.runner.name != first.runner.name


def test_a_runner_asking_again_for_its_turn_is_not_another_attempt(
    scripted_runtime: Runtime, agent: uuid.UUID
) -> None:
    """A finish step retried after its answer was lost asks for the next turn again: the
    same runner taking the same turn up is one attempt, not a stopped runner."""
    runtime = scripted_runtime
    ingested = ingest(runtime, message(agent, "hello"))
    assert ingested.runner is not None
    attempts = [next_turn(runtime, ingested.runner) for _ in range(5)]
    assert {(t.turn_id, t.attempt, t.give_up) for t in attempts if t} == {
        (ingested.turn_id, 1, None)
    }


def test_a_late_step_does_not_reopen_an_ended_turn(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    """A step that outlived its execution (its runner replaced, the turn ended since)
    writes its decision late: the turn stays as it ended."""
    runtime = scripted_runtime
    ingested = ingest(runtime, message(agent, "hello"))
    finish_turn(runtime, ingested.turn_id, error="TurnAbandoned: given up")
    scripted.add(xml("REPLY", text="too late"))
    decide(runtime, ingested.turn_id, 1)
    turn = runtime.store.turn(ingested.turn_id)
    assert (turn.status, turn.error) == ("failed", "TurnAbandoned: given up")
