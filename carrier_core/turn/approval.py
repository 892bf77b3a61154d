"""Approval: an action that needs a person's yes waits for it, holding no compute.

An action declares `needs_approval`. When the decide step picks it, the act step stores
a request (the action and its arguments) and stops without acting. The turn stays
unfinished, so its room's later messages wait behind it, in order. Then:

- in the cloud the state machine's `approval` step keeps the task token with the request
  and the execution waits on it (`.waitForTaskToken`); the emulator runs the same flow;
- in one process (`run_steps`) the runner stops and keeps the room; answering the
  request runs the room again (`resume`).

An answer (`answer`) or the sweep's expiry (`expire_due`) settles the request and hands
back the token to wake the execution; the act step runs again and acts, or records why
not. The token is handed to whichever of the answer and the `approval` step comes
second, under the row's lock, so an answer that beats the token to the database still
wakes the execution, and no execution is woken twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from carrier_core.store import Store, TurnRecord

PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"

_COLUMNS = (
    "id, turn_id, agent_id, step_key, action, arguments, status, requested_at, expires_at,"
    " answered_at, answered_by, reason"
)


@dataclass(frozen=True)
class Approval:
    id: uuid.UUID
    turn_id: uuid.UUID
    agent_id: uuid.UUID
    #: The act step it pauses (act:<decide step>:<index>).
    step_key: str
    action: str
    #: What the action would act on: the decided text and the message it answers.
    arguments: dict[str, Any]
    #: pending, approved, rejected or expired.
    status: str
    requested_at: datetime
    expires_at: datetime
    answered_at: datetime | None
    #: `key:<id>` (an API key) or `user:<subject>` (an end user); None when it expired.
    answered_by: str | None
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        """The request as clients see it (frames, webhooks, the turn's view)."""
        return {
            "id": str(self.id),
            "turn_id": str(self.turn_id),
            "action": self.action,
            "arguments": self.arguments,
            "status": self.status,
            "requested_at": self.requested_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "answered_at": self.answered_at.isoformat() if self.answered_at else None,
            "answered_by": self.answered_by,
            "reason": self.reason,
        }


class NotPending(ValueError):
    """The turn has no approval waiting for an answer (none asked, or answered already)."""


def _approval(row: DictRow) -> Approval:
    return Approval(**{k: row[k] for k in _COLUMNS.replace(" ", "").split(",")})


def request(
    store: Store,
    *,
    turn_id: uuid.UUID,
    agent_id: uuid.UUID,
    step_key: str,
    action: str,
    arguments: dict[str, Any],
    timeout_s: float,
) -> Approval:
    """The act step's request, made once: a retried step gets the first one back."""
    with store.connection() as conn:
        row = conn.execute(
            "WITH made AS (INSERT INTO approvals (id, turn_id, agent_id, step_key, action,"
            " arguments, expires_at) VALUES (%s, %s, %s, %s, %s, %s,"
            " now() + %s * interval '1 second')"
            f" ON CONFLICT (turn_id, step_key) DO NOTHING RETURNING {_COLUMNS})"
            f" SELECT {_COLUMNS} FROM made UNION ALL"
            f" SELECT {_COLUMNS} FROM approvals WHERE turn_id = %s AND step_key = %s",
            (
                uuid.uuid4(),
                turn_id,
                agent_id,
                step_key,
                action,
                Jsonb(arguments),
                timeout_s,
                turn_id,
                step_key,
            ),
        ).fetchone()
    assert row is not None
    return _approval(row)


def expire_if_due(store: Store, approval: Approval) -> Approval:
    """The request, expired now if its time ran out while nobody answered (the act step
    checks, so a turn taken up after its expiry does not wait for a sweep)."""
    if approval.status != PENDING:
        return approval
    with store.connection() as conn:
        row = conn.execute(
            f"UPDATE approvals SET status = 'expired', answered_at = now() WHERE id = %s"
            f" AND status = 'pending' AND expires_at <= now() RETURNING {_COLUMNS}",
            (approval.id,),
        ).fetchone()
    return approval if row is None else _approval(row)


def pending(store: Store, turn_id: uuid.UUID) -> Approval | None:
    """The turn's approval that waits for an answer, if any."""
    with store.connection() as conn:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM approvals WHERE turn_id = %s AND status = 'pending'",
            (turn_id,),
        ).fetchone()
    return None if row is None else _approval(row)


def turn_approvals(store: Store, turn_id: uuid.UUID) -> list[Approval]:
    with store.connection() as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM approvals WHERE turn_id = %s ORDER BY requested_at",
            (turn_id,),
        ).fetchall()
    return [_approval(r) for r in rows]


def keep_token(store: Store, approval_id: uuid.UUID, token: str) -> tuple[Approval, bool]:
    """Keep the waiting task's token with its request; True when it was answered already,
    so the caller wakes the execution itself."""
    with store.connection() as conn:
        row = conn.execute(
            f"UPDATE approvals SET task_token = %s WHERE id = %s RETURNING {_COLUMNS}",
            (token, approval_id),
        ).fetchone()
    if row is None:
        raise NotPending(f"no approval with id {approval_id}")
    approval = _approval(row)
    return approval, approval.status != PENDING


class Expired(NotPending):
    """The approval's time ran out before the answer came: it is expired now, and the turn
    goes on without the action (`approval` and `token` say what to wake)."""

    def __init__(self, approval: Approval, token: str | None):
        super().__init__(
            f"the approval of {approval.action} expired at {approval.expires_at.isoformat()};"
            " the turn goes on without it"
        )
        self.approval = approval
        self.token = token


def answer(
    store: Store, turn_id: uuid.UUID, *, approve: bool, by: str, reason: str | None = None
) -> tuple[Approval, str | None]:
    """Settle the turn's pending approval; with it, the token of the execution to wake
    (None when no execution waits yet, or the turn runs in one process). Raises `Expired`
    for one whose time ran out (expiring it), `NotPending` when none waits."""
    status = APPROVED if approve else REJECTED
    with store.connection() as conn:
        row = conn.execute(
            "UPDATE approvals SET status = CASE WHEN expires_at > now() THEN %s"
            " ELSE 'expired' END, answered_at = now(),"
            " answered_by = CASE WHEN expires_at > now() THEN %s END,"
            " reason = CASE WHEN expires_at > now() THEN %s END"
            " WHERE turn_id = %s AND status = 'pending'"
            f" RETURNING {_COLUMNS}, task_token",
            (status, by, reason, turn_id),
        ).fetchone()
    if row is None:
        raise NotPending(f"turn {turn_id} has no approval waiting for an answer")
    settled = _approval(row)
    if settled.status == EXPIRED:
        raise Expired(settled, row["task_token"])
    return settled, row["task_token"]


def expire_due(store: Store, limit: int = 100) -> list[tuple[Approval, str | None]]:
    """Expire the pending approvals whose time ran out; each with its token to wake."""
    with store.connection() as conn:
        rows = conn.execute(
            "UPDATE approvals SET status = 'expired', answered_at = now() WHERE id IN"
            " (SELECT id FROM approvals WHERE status = 'pending' AND expires_at <= now()"
            " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            f" RETURNING {_COLUMNS}, task_token",
            (limit,),
        ).fetchall()
    return [(_approval(r), r["task_token"]) for r in rows]


def turn_status(turn: TurnRecord, latest: Approval | None) -> str:
    """The turn's status as clients see it, given its latest approval request: a running
    turn whose action waits for an answer is `awaiting_approval`."""
    if turn.status == "running" and latest is not None and latest.status == PENDING:
        return "awaiting_approval"
    return turn.status
