"""A whole turn in one process: ingest → decide → act → evaluate → embed.

The same step functions run one per Lambda in the cloud; here they are
chained in a loop. A turn may take several decide steps when an action asks
to continue, never more than `max_steps`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from carrier_core.memory import Memory, MemoryKind
from carrier_core.runtime import Runtime
from carrier_core.turn.act import act
from carrier_core.turn.decide import decide
from carrier_core.turn.embed import embed_pending
from carrier_core.turn.evaluate import evaluate
from carrier_core.turn.ingest import IncomingMessage, ingest

FINISHED = ("done", "failed")


@dataclass(frozen=True)
class TurnResult:
    turn_id: uuid.UUID
    message_id: uuid.UUID
    status: str
    replies: list[Memory] = field(default_factory=list)
    error: str | None = None
    #: True when the message was a repeat delivery and this call ran nothing.
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


def run_turn(runtime: Runtime, message: IncomingMessage | dict[str, Any]) -> TurnResult:
    """Answer one message. Invalid input raises before anything is stored; a failure
    inside the turn is recorded on the turn and returned, not raised."""
    ingested = ingest(runtime, message)
    turn_id = ingested.turn_id
    if not ingested.created:
        return turn_result(runtime, turn_id, duplicate=True)
    step = "decide"
    try:
        while True:
            step = "decide"
            decided = decide(runtime, turn_id)
            more = False
            if decided.respond:
                for index in range(len(decided.decision.actions)):
                    step = f"act:{decided.decision.actions[index]}"
                    more |= act(runtime, turn_id, index).continue_turn
            if not more or decided.steps_taken >= runtime.settings.max_steps:
                break
        step = "evaluate"
        evaluate(runtime, turn_id)
        step = "embed"
        embed_pending(runtime, ingested.agent_id)
    except Exception as exc:
        finish_turn(runtime, turn_id, error=f"{step}: {type(exc).__name__}: {exc}")
    else:
        finish_turn(runtime, turn_id)
    return turn_result(runtime, turn_id)
