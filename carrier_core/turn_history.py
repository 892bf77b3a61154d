"""What a turn's inspector reads beyond the store's own views: when each step ran, and
which turn each message belongs to (the turn it started, or the turn that said it).

Read-only queries over `turn_steps`, `turns` and `memories`, through the store's
connections, for the client API's turn and message views.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from carrier_core.store import Store


@dataclass(frozen=True)
class TimedStep:
    """One row of a turn's history, with when the step started and ended."""

    step: str
    key: str | None
    status: str
    detail: dict[str, Any]
    model_calls: int
    input_tokens: int
    output_tokens: int
    started_at: datetime
    finished_at: datetime

    @property
    def duration_ms(self) -> int:
        return max(0, round((self.finished_at - self.started_at).total_seconds() * 1000))


def timed_steps(store: Store, turn_id: uuid.UUID) -> list[TimedStep]:
    """The turn's steps in the order they were recorded."""
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT step, key, status, detail, model_calls, input_tokens, output_tokens,"
            " started_at, finished_at FROM turn_steps WHERE turn_id = %s ORDER BY id",
            (turn_id,),
        ).fetchall()
    return [TimedStep(**row) for row in rows]


def message_turns(store: Store, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The turn of each message that has one: the turn an incoming message started, or the
    turn in which the agent said a reply. Messages without a turn are left out."""
    if not message_ids:
        return {}
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT m.id, coalesce(m.turn_id, t.id) AS turn_id FROM memories m"
            " LEFT JOIN turns t ON t.message_id = m.id"
            " WHERE m.id = ANY(%s) AND coalesce(m.turn_id, t.id) IS NOT NULL",
            (list(message_ids),),
        ).fetchall()
    return {row["id"]: row["turn_id"] for row in rows}
