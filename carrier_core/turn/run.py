"""A whole turn in one process: ingest → decide → act → evaluate → embed.

The same step functions run one per Lambda in the cloud; here they are
chained in a loop. A turn may take several decide steps when an action asks
to continue, never more than `max_steps`.

A message delivered again finds its turn. A finished turn is not run again;
a failed one, or one left unfinished long enough that its process must have
died, is resumed: the steps remember what they did, so nothing is said twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from carrier_core.memory import Memory, MemoryKind
from carrier_core.runtime import Runtime
from carrier_core.store import StepRecord, StepUsage, TurnRecord
from carrier_core.turn.act import act
from carrier_core.turn.decide import decide
from carrier_core.turn.embed import embed_pending
from carrier_core.turn.evaluate import evaluate
from carrier_core.turn.ingest import IncomingMessage, ingest


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


def finish_turn(runtime: Runtime, turn_id: uuid.UUID, error: str | None = None) -> None:
    """Mark a turn done, or failed with its reason."""
    runtime.store.update_turn(turn_id, status="failed" if error else "done", error=error)


def turn_result(runtime: Runtime, turn_id: uuid.UUID, *, duplicate: bool = False) -> TurnResult:
    record = runtime.store.turn(turn_id)
    return TurnResult(
        turn_id=turn_id,
        message_id=record.message_id,
        status=record.status,
        replies=runtime.store.turn_memories(turn_id, MemoryKind.MESSAGE),
        error=record.error,
        duplicate=duplicate,
    )


def _should_resume(runtime: Runtime, turn: TurnRecord) -> bool:
    if turn.status == "failed":
        return True
    if turn.status == "done":
        return False
    idle = datetime.now(UTC) - turn.updated_at
    return idle > timedelta(seconds=runtime.settings.turn_resume_after_s)


def run_steps(runtime: Runtime, turn_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    """The steps after ingest, in this process; the turn ends done or failed with its reason."""
    step = "decide"
    try:
        number = 1
        while True:
            step = "decide"
            decided = decide(runtime, turn_id, number)
            more = False
            if decided.respond:
                for index, name in enumerate(decided.decision.actions):
                    step = f"act:{name}"
                    more |= act(runtime, turn_id, index).continue_turn
            if not more or decided.step >= runtime.settings.max_steps:
                break
            number = decided.step + 1
        step = "evaluate"
        evaluate(runtime, turn_id)
    except Exception as exc:
        finish_turn(runtime, turn_id, error=f"{step}: {type(exc).__name__}: {exc}")
        return
    finish_turn(runtime, turn_id)
    _embed(runtime, turn_id, agent_id)


def _embed(runtime: Runtime, turn_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    """Embed what the turn left unembedded. The reply is already given: a failure here
    is recorded in the turn's history and the memories wait for the next embed run."""
    started_at = datetime.now(UTC)
    detail: dict[str, Any]
    try:
        embedded = embed_pending(runtime, agent_id)
    except Exception as exc:
        status, detail = "error", {"error": f"{type(exc).__name__}: {exc}"}
    else:
        if not embedded:
            return  # the usual case: the turn embedded what it stored
        status, detail = "ok", {"embedded": embedded}
    record = StepRecord("embed", status, started_at, StepUsage(detail=detail))
    runtime.store.record_step(turn_id, record)


def run_turn(runtime: Runtime, message: IncomingMessage | dict[str, Any]) -> TurnResult:
    """Answer one message. Invalid input raises before anything is stored; a failure
    inside the turn is recorded on the turn and returned, not raised."""
    ingested = ingest(runtime, message)
    turn_id = ingested.turn_id
    if not ingested.created and not _should_resume(runtime, runtime.store.turn(turn_id)):
        return turn_result(runtime, turn_id, duplicate=True)
    run_steps(runtime, turn_id, ingested.agent_id)
    return turn_result(runtime, turn_id, duplicate=not ingested.created)
