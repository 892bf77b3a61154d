"""Approval: an action that needs a person's yes waits for it, holding no compute.

An action declares `needs_approval`. When the decide step picks it, the act step stores
a request (the action and its arguments) and stops without acting. The turn stays
unfinished, so its room's later messages wait behind it, in order. Then:

- in the cloud the state machine's `approval` step keeps the task token with the request
  and the execution waits on it (`.waitForTaskToken`); the emulator runs the same flow;
- in one process (`run_steps`) the runner stops and keeps the room; answering the
  request runs the room again (`resume`).

An answer (`answer`) or the sweep's expiry (`Store.expire_due_approvals`) settles the
request and hands back the token to wake the execution; the act step runs again and acts
(once: an approval is used once, `Store.use_approval`), or records why not. A wake that
fails is tried again by the sweep (`Store.approvals_to_wake`). The token is handed to
whichever of the answer and the `approval` step comes second, under the row's lock, so an
answer that beats the token to the database still wakes the execution, and no execution
is woken twice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from carrier_core.store.approvals import Approval

if TYPE_CHECKING:
    from carrier_core.store.store import Store
    from carrier_core.store.turns import TurnRecord

PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"

__all__ = [
    "APPROVED",
    "EXPIRED",
    "PENDING",
    "REJECTED",
    "Approval",
    "Expired",
    "NotPending",
    "answer",
    "expire_if_due",
    "keep_token",
    "turn_status",
]


class NotPending(ValueError):
    """The turn has no approval waiting for an answer (none asked, or answered already)."""


def expire_if_due(store: Store, approval: Approval) -> Approval:
    """The request, expired now if its time ran out while nobody answered (the act step
    checks, so a turn taken up after its expiry does not wait for a sweep)."""
    if approval.status != PENDING:
        return approval
    return store.expire_approval_if_due(approval.id) or approval


def keep_token(store: Store, approval_id: uuid.UUID, token: str) -> tuple[Approval, bool]:
    """Keep the waiting task's token with its request; True when it was answered already,
    so the caller wakes the execution itself."""
    approval = store.keep_approval_token(approval_id, token)
    if approval is None:
        raise NotPending(f"no approval with id {approval_id}")
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
    settled = store.settle_approval(
        turn_id, status=APPROVED if approve else REJECTED, by=by, reason=reason
    )
    if settled is None:
        raise NotPending(f"turn {turn_id} has no approval waiting for an answer")
    approval, token = settled
    if approval.status == EXPIRED:
        raise Expired(approval, token)
    return approval, token


def turn_status(turn: TurnRecord, latest: Approval | None) -> str:
    """The turn's status as clients see it, given its latest approval request: a running
    turn whose action waits for an answer is `awaiting_approval`, until the request
    expires (the sweep records the expiry a little later; an answer is refused already)."""
    if (
        turn.status == "running"
        and latest is not None
        and latest.status == PENDING
        and latest.expires_at > datetime.now(UTC)
    ):
        return "awaiting_approval"
    return turn.status
