"""Approval requests, as rows: asked once per act step, answered, expired, and the task
token of the execution waiting on each (`carrier_core.turn.approval` says what they mean)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from carrier_core.store.base import StoreBase

_COLUMNS = (
    "id, turn_id, agent_id, step_key, action, arguments, status, requested_at, expires_at,"
    " answered_at, answered_by, reason"
)


class Approval(NamedTuple):
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


def _approval(row: DictRow) -> Approval:
    return Approval(**{k: row[k] for k in _COLUMNS.replace(" ", "").split(",")})


class ApprovalStore(StoreBase):
    """Requests for a person's yes, each with the token of the execution it pauses."""

    def request_approval(
        self,
        *,
        turn_id: uuid.UUID,
        agent_id: uuid.UUID,
        step_key: str,
        action: str,
        arguments: dict[str, Any],
        timeout_s: float,
    ) -> Approval:
        """The act step's request, made once: a retried step gets the first one back."""
        with self.connection() as conn:
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
            if row is None:  # a run of the same step made it just now, after our snapshot
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM approvals WHERE turn_id = %s AND step_key = %s",
                    (turn_id, step_key),
                ).fetchone()
        assert row is not None
        return _approval(row)

    def use_approval(self, approval_id: uuid.UUID) -> bool:
        """Take an approved request's yes for one run of its action; False if a run took it
        before (and may have acted: its record never came)."""
        with self.connection() as conn:
            used = conn.execute(
                "UPDATE approvals SET used_at = now() WHERE id = %s AND status = 'approved'"
                " AND used_at IS NULL RETURNING id",
                (approval_id,),
            ).fetchone()
        return used is not None

    def mark_woken(self, approval_id: uuid.UUID) -> None:
        with self.connection() as conn:
            conn.execute("UPDATE approvals SET woken_at = now() WHERE id = %s", (approval_id,))

    def approvals_to_wake(
        self, *, older_than_s: float = 30.0, limit: int = 100
    ) -> list[tuple[Approval, str]]:
        """Settled requests whose waiting execution was never woken (the wake failed, or the
        process answering died before it), while their turn still runs; with their token."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {', '.join('a.' + c.strip() for c in _COLUMNS.split(','))},"
                " a.task_token FROM approvals a JOIN turns t ON t.id = a.turn_id"
                " WHERE a.status <> 'pending' AND a.task_token IS NOT NULL"
                " AND a.woken_at IS NULL AND a.answered_at < now() - %s * interval '1 second'"
                " AND t.status IN ('running', 'retrying') ORDER BY a.answered_at LIMIT %s",
                (older_than_s, limit),
            ).fetchall()
        return [(_approval(r), r["task_token"]) for r in rows]

    def expire_approval_if_due(self, approval_id: uuid.UUID) -> Approval | None:
        """The pending request, expired now if its time ran out; None if it was not."""
        with self.connection() as conn:
            row = conn.execute(
                f"UPDATE approvals SET status = 'expired', answered_at = now() WHERE id = %s"
                f" AND status = 'pending' AND expires_at <= now() RETURNING {_COLUMNS}",
                (approval_id,),
            ).fetchone()
        return None if row is None else _approval(row)

    def pending_approval(self, turn_id: uuid.UUID) -> Approval | None:
        """The turn's approval that waits for an answer, if any."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE turn_id = %s AND status = 'pending'",
                (turn_id,),
            ).fetchone()
        return None if row is None else _approval(row)

    def turn_approvals(self, turn_id: uuid.UUID) -> list[Approval]:
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE turn_id = %s ORDER BY requested_at",
                (turn_id,),
            ).fetchall()
        return [_approval(r) for r in rows]

    def keep_approval_token(self, approval_id: uuid.UUID, token: str) -> Approval | None:
        """Keep the waiting task's token with its request; None if there is no such request."""
        with self.connection() as conn:
            row = conn.execute(
                f"UPDATE approvals SET task_token = %s WHERE id = %s RETURNING {_COLUMNS}",
                (token, approval_id),
            ).fetchone()
        return None if row is None else _approval(row)

    def settle_approval(
        self, turn_id: uuid.UUID, *, status: str, by: str, reason: str | None
    ) -> tuple[Approval, str | None] | None:
        """Settle the turn's pending approval as `status` (expired instead if its time ran
        out), with the token of the execution to wake; None when none waits."""
        with self.connection() as conn:
            row = conn.execute(
                "UPDATE approvals SET status = CASE WHEN expires_at > now() THEN %s"
                " ELSE 'expired' END, answered_at = now(),"
                " answered_by = CASE WHEN expires_at > now() THEN %s END,"
                " reason = CASE WHEN expires_at > now() THEN %s END"
                " WHERE turn_id = %s AND status = 'pending'"
                f" RETURNING {_COLUMNS}, task_token",
                (status, by, reason, turn_id),
            ).fetchone()
        return None if row is None else (_approval(row), row["task_token"])

    def expire_due_approvals(self, limit: int = 100) -> list[tuple[Approval, str | None]]:
        """Expire the pending approvals whose time ran out; each with its token to wake."""
        with self.connection() as conn:
            rows = conn.execute(
                "UPDATE approvals SET status = 'expired', answered_at = now() WHERE id IN"
                " (SELECT id FROM approvals WHERE status = 'pending' AND expires_at <= now()"
                " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                f" RETURNING {_COLUMNS}, task_token",
                (limit,),
            ).fetchall()
        return [(_approval(r), r["task_token"]) for r in rows]
