"""A whole turn in one process: ingest → decide → act → evaluate → embed.

The same step functions run one per Lambda in the cloud; here they are
chained in a loop that moves as the step table (`steps.py`) allows. A turn may take
several decide steps when an action asks to continue, or the model asks for dynamic
providers, never more than `max_steps`; it pauses, keeping its room, while an action
waits for approval.

`run_turn` is its room's runner in this process (`carrier_core.turn.schedule`):
when its message finds the room free it answers every turn queued there, in order;
when another runner holds the room, the turn is left queued for it. A message
delivered again finds its turn: a finished turn is not run again, a failed one is
queued again, and a turn whose runner stopped (its lease ran out) is taken up again:
the steps remember what they did, so nothing is said twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from carrier_core.embed import embed_pending
from carrier_core.events import run_ended
from carrier_core.memory import Memory, MemoryKind
from carrier_core.store.database import DatabaseUnavailable
from carrier_core.store.turns import StepRecord, StepUsage
from carrier_core.turn import approval
from carrier_core.turn.act import act
from carrier_core.turn.decide import decide
from carrier_core.turn.evaluate import evaluate
from carrier_core.turn.ingest import IncomingMessage, ingest
from carrier_core.turn.schedule import end_turn, hand_off, next_turn
from carrier_core.turn.steps import FlowError, check_move
from carrier_core.turn.steps import StepName as S

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime
    from carrier_core.store.runners import NextTurn, Runner


@dataclass(frozen=True)
class TurnResult:
    turn_id: uuid.UUID
    message_id: uuid.UUID
    status: str
    replies: list[Memory] = field(default_factory=list)
    error: str | None = None
    #: True when the message was a repeat delivery of one whose turn exists.
    duplicate: bool = False
    #: What the turn's actions sent to other rooms of the agent (SEND_MESSAGE).
    sent: list[Memory] = field(default_factory=list)

    @property
    def reply_texts(self) -> list[str]:
        return [m.content.text for m in self.replies]


def finish_turn(
    runtime: Runtime,
    turn_id: uuid.UUID,
    error: str | None = None,
    *,
    timed_out: bool = False,
    runner: Runner | None = None,
) -> NextTurn | None:
    """Mark a turn done, or failed with its reason (`timed_out`: it was given up), and fire
    its end's events (`run_ended`). With the room's `runner`, also take the room's next turn
    in the same statement, as `next_turn` does, and return it (None: the runner is done)."""
    end, after = end_turn(runtime, turn_id, error, runner)
    run_ended(runtime, turn_id, end, error, timed_out=timed_out)
    return after


def turn_result(runtime: Runtime, turn_id: uuid.UUID, *, duplicate: bool = False) -> TurnResult:
    """What became of a turn; a coalesced turn has the replies of the turn that answered it."""
    record = runtime.store.turn(turn_id)
    said = runtime.store.turn_memories(record.answered_by or turn_id, MemoryKind.MESSAGE)
    # Only a running turn can wait for an approval: no read for the others.
    waiting = runtime.store.pending_approval(record.id) if record.status == "running" else None
    return TurnResult(
        turn_id=turn_id,
        message_id=record.message_id,
        status=approval.turn_status(record, waiting),
        replies=[m for m in said if m.room_id == record.room_id],
        error=record.error,
        duplicate=duplicate,
        sent=[m for m in said if m.room_id != record.room_id],
    )


def run_steps(
    runtime: Runtime, turn_id: uuid.UUID, agent_id: uuid.UUID, runner: Runner
) -> NextTurn | None:
    """The steps after ingest, in this process, moving as the step table allows
    (`steps.py`, which the state machine follows too). The turn ends done or failed with
    its reason, and the finish step takes the room's next turn for `runner` and returns it;
    None when the runner is done, or when the turn waits for an approval (the runner stops
    and keeps the room; `approval.resume` runs it again)."""
    here, number, actions, index, more = S.DECIDE, 1, 0, 0, False
    try:
        while True:
            if here is S.DECIDE:
                decided = decide(runtime, turn_id, number)
                number, index, more = decided.step, 0, decided.again
                actions = len(decided.to_run)
                if actions:
                    there = S.ACT
                elif more and number < runtime.settings.max_steps:
                    number, there = number + 1, S.DECIDE  # dynamic providers were asked for
                else:
                    there = S.EVALUATE
            elif here is S.ACT:
                acted = act(runtime, turn_id, index)
                if acted.approval_id is not None:
                    check_move(here, S.APPROVAL)  # the room waits for a person's answer
                    _hold_for(runtime, turn_id)
                    return None
                more |= acted.continue_turn
                index += 1
                if index < actions:
                    there = S.ACT
                elif more and number < runtime.settings.max_steps:
                    number, there = number + 1, S.DECIDE
                else:
                    there = S.EVALUATE
            elif here is S.EVALUATE:
                evaluate(runtime, turn_id)
                there = S.EMBED
            else:
                raise FlowError(f"run_steps has no step {here!r}")
            here = check_move(here, there)
            if here is S.EMBED:
                break
    except DatabaseUnavailable:
        raise  # nothing can be recorded: the turn is taken up again once the database is back
    except Exception as exc:
        error = f"{here}: {type(exc).__name__}: {exc}"
        return finish_turn(runtime, turn_id, error=error, runner=runner)
    # The embed step runs after the turn is marked done: in one process there is no queue
    # to hand it to, and the reply's waiters should not wait for it.
    after = finish_turn(runtime, turn_id, runner=runner)
    _embed(runtime, turn_id, agent_id)
    return after


def _hold_for(runtime: Runtime, turn_id: uuid.UUID) -> None:
    """Keep the room for the paused turn until its approval expires: no other runner
    takes it up meanwhile, and once it expires any new message's runner does."""
    waiting = runtime.store.pending_approval(turn_id)
    if waiting is not None:
        runtime.store.hold_room(turn_id, waiting.expires_at)


def _embed(runtime: Runtime, turn_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    """Embed what the turn stored (its replies, facts), after the reply is given. A failure
    is recorded in the turn's history and the memories wait for the next embed run; a
    success only in the usage ledger (step `embed`), which costs the turn no statement."""
    started_at = datetime.now(UTC)
    try:
        embed_pending(runtime, agent_id)
    except Exception as exc:
        detail = {"error": f"{type(exc).__name__}: {exc}"}
        record = StepRecord("embed", "error", started_at, StepUsage(detail=detail))
        runtime.store.record_step(turn_id, record)


def run_room(runtime: Runtime, runner: Runner) -> None:
    """Answer the room's turns one after another until none is left (or the room is
    taken over, or a turn waits for an approval), as the state machine does in the cloud."""
    turn = next_turn(runtime, runner)
    while turn is not None:
        if turn.give_up is not None:
            turn = finish_turn(
                runtime, turn.turn_id, error=turn.give_up, timed_out=True, runner=runner
            )
        else:
            turn = run_steps(runtime, turn.turn_id, turn.agent_id, runner)


def run_turn(runtime: Runtime, message: IncomingMessage | dict[str, Any]) -> TurnResult:
    """Answer one message. Invalid input raises before anything is stored; a failure
    inside the turn is recorded on the turn and returned, not raised. The result is
    `queued` when another runner holds the room."""
    ingested = ingest(runtime, message, take_expired=True)
    if ingested.runner is not None:
        run_room(runtime, ingested.runner)
    return turn_result(runtime, ingested.turn_id, duplicate=not ingested.created)


def resume_turn(runtime: Runtime, turn_id: uuid.UUID) -> None:
    """Run again, in this process, the room of a turn that paused for an approval now
    answered. A new runner takes the room over from the one that paused (which stopped),
    so that a runner started meanwhile by a later message, if any, stops at its next turn
    instead of running the room beside this one; nothing happens if the room changed hands
    since the turn was last taken up (that runner answers it)."""
    runner = runtime.store.turn_runner(turn_id)
    if runner is None:
        return
    successor = hand_off(runtime, runner)
    if successor is not None:
        run_room(runtime, successor)
