"""A whole turn in one process: ingest → decide → act → evaluate → embed.

The same step functions run one per Lambda in the cloud; here they are
chained in a loop. A turn may take several decide steps when an action asks
to continue, or the model asks for dynamic providers, never more than `max_steps`.

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
from typing import Any

from carrier_core.memory import Memory, MemoryKind
from carrier_core.runtime import Runtime
from carrier_core.store import DatabaseUnavailable, StepRecord, StepUsage, TurnEnd
from carrier_core.turn.act import act
from carrier_core.turn.decide import decide
from carrier_core.turn.embed import embed_pending
from carrier_core.turn.evaluate import evaluate
from carrier_core.turn.ingest import IncomingMessage, ingest
from carrier_core.turn.schedule import Runner, next_turn


@dataclass(frozen=True)
class TurnResult:
    turn_id: uuid.UUID
    message_id: uuid.UUID
    status: str
    replies: list[Memory] = field(default_factory=list)
    error: str | None = None
    #: True when the message was a repeat delivery of one whose turn exists.
    duplicate: bool = False

    @property
    def reply_texts(self) -> list[str]:
        return [m.content.text for m in self.replies]


def finish_turn(runtime: Runtime, turn_id: uuid.UUID, error: str | None = None) -> TurnEnd | None:
    """Mark a turn done, or failed with its reason; None if it had ended already."""
    return runtime.store.end_turn(turn_id, error=error)


def turn_result(runtime: Runtime, turn_id: uuid.UUID, *, duplicate: bool = False) -> TurnResult:
    """What became of a turn; a coalesced turn has the replies of the turn that answered it."""
    record = runtime.store.turn(turn_id)
    answering = record.answered_by or turn_id
    return TurnResult(
        turn_id=turn_id,
        message_id=record.message_id,
        status=record.status,
        replies=runtime.store.turn_memories(answering, MemoryKind.MESSAGE),
        error=record.error,
        duplicate=duplicate,
    )


def run_steps(runtime: Runtime, turn_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    """The steps after ingest, in this process; the turn ends done or failed with its reason."""
    step = "decide"
    try:
        number = 1
        while True:
            step = "decide"
            decided = decide(runtime, turn_id, number)
            more = decided.again  # the model asked for dynamic providers: decide with them
            for index, name in enumerate(decided.to_run):
                step = f"act:{name}"
                more |= act(runtime, turn_id, index).continue_turn
            if not more or decided.step >= runtime.settings.max_steps:
                break
            number = decided.step + 1
        step = "evaluate"
        evaluate(runtime, turn_id)
    except DatabaseUnavailable:
        raise  # nothing can be recorded: the turn is taken up again once the database is back
    except Exception as exc:
        finish_turn(runtime, turn_id, error=f"{step}: {type(exc).__name__}: {exc}")
        return
    finish_turn(runtime, turn_id)
    _embed(runtime, turn_id, agent_id)


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
    taken over), as the state machine does in the cloud."""
    while (turn := next_turn(runtime, runner)) is not None:
        if turn.give_up is not None:
            finish_turn(runtime, turn.turn_id, error=turn.give_up)
        else:
            run_steps(runtime, turn.turn_id, turn.agent_id)


def run_turn(runtime: Runtime, message: IncomingMessage | dict[str, Any]) -> TurnResult:
    """Answer one message. Invalid input raises before anything is stored; a failure
    inside the turn is recorded on the turn and returned, not raised. The result is
    `queued` when another runner holds the room."""
    ingested = ingest(runtime, message, take_expired=True)
    if ingested.runner is not None:
        run_room(runtime, ingested.runner)
    return turn_result(runtime, ingested.turn_id, duplicate=not ingested.created)
