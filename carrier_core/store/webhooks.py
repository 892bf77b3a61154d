"""Webhooks and their deliveries, as rows: registered, planned, claimed for an attempt,
recorded, swept and listed. What a delivery sends, and when it is tried again, is
`carrier_core.webhooks`' to say."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, NamedTuple

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from carrier_core.store.base import NotFound, StoreBase, where
from carrier_core.store.database import unpooled_connection

DeliveryStatus = Literal["pending", "delivered", "failed"]


class TooManyWebhooks(ValueError):
    pass


class Webhook(NamedTuple):
    id: uuid.UUID
    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    #: The client's room key; None: every room of the agent.
    room: str | None
    url: str
    created_at: datetime


class Delivery(NamedTuple):
    id: uuid.UUID
    webhook_id: uuid.UUID
    #: The reply delivered; None for an approval request (`approval_id`).
    memory_id: uuid.UUID | None
    turn_id: uuid.UUID
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    #: The HTTP status of the last attempt; None if it got no answer.
    last_status: int | None
    last_error: str | None
    #: When a pending delivery is tried next (None before its first attempt).
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    seq: int


_COLUMNS = "id, tenant_id, agent_id, room, url, created_at"
_DELIVERY_COLUMNS = (
    "id, webhook_id, memory_id, turn_id, payload, status, attempts, last_status, last_error,"
    " next_attempt_at, created_at, updated_at, seq"
)


def _webhook(row: DictRow) -> Webhook:
    return Webhook(**row)


def move_row_secrets(url: str, keep: Callable[[uuid.UUID, str], None]) -> int:
    """Hand each signing secret still kept in its webhook's row (a webhook made before
    migration 0016) to `keep`, then empty the row; the number moved. Run with the
    migrations (on their URL, not a pool). Each row is locked while its secret is kept, so
    a webhook deleted meanwhile is deleted after it, secret and all; a secret is emptied
    only once `keep` returned, so a run stopped halfway is finished by the next."""
    conn = unpooled_connection(url, autocommit=True)
    moved = 0
    with conn:
        ids = conn.execute("SELECT id FROM webhooks WHERE secret IS NOT NULL").fetchall()
        for (webhook_id,) in ids:
            with conn.transaction():
                row = conn.execute(
                    "SELECT secret FROM webhooks WHERE id = %s AND secret IS NOT NULL FOR UPDATE",
                    (webhook_id,),
                ).fetchone()
                if row is None:
                    continue  # deleted, or moved by another run, since the list was read
                keep(webhook_id, row[0])
                conn.execute("UPDATE webhooks SET secret = NULL WHERE id = %s", (webhook_id,))
                moved += 1
    return moved


class WebhookStore(StoreBase):
    """An agent's webhooks, and one delivery per reply (or approval request) and webhook."""

    def add_webhook(
        self,
        agent_id: uuid.UUID,
        *,
        webhook_id: uuid.UUID,
        url: str,
        room: str | None,
        room_id: uuid.UUID | None,
        limit: int,
    ) -> Webhook:
        """Store a webhook of the agent. Raises `NotFound` for an unknown agent, and
        `TooManyWebhooks` when the agent has `limit` already."""
        with self.transaction() as conn:
            # Locks the agent's row, so two registrations at once cannot pass the limit together.
            agent = conn.execute(
                "SELECT tenant_id FROM agents WHERE id = %s FOR UPDATE", (agent_id,)
            ).fetchone()
            if agent is None:
                raise NotFound(f"no agent with id {agent_id}")
            existing = conn.execute(
                "SELECT count(*) AS n FROM webhooks WHERE agent_id = %s", (agent_id,)
            ).fetchone()
            if existing is not None and existing["n"] >= limit:
                raise TooManyWebhooks(
                    f"an agent may have at most {limit} webhooks; delete one first"
                )
            row = conn.execute(
                "INSERT INTO webhooks (id, tenant_id, agent_id, room_id, room, url)"
                f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (webhook_id, agent["tenant_id"], agent_id, room_id, room, url),
            ).fetchone()
        assert row is not None
        return _webhook(row)

    def lock_agent_webhooks(self, agent_id: uuid.UUID) -> list[uuid.UUID]:
        """The ids of the agent's webhooks, with the agent's row locked until the surrounding
        transaction ends, so that no webhook is added meanwhile (`add_webhook` takes the same
        lock): for deleting the agent with its webhooks' secrets."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT w.id FROM agents a LEFT JOIN webhooks w ON w.agent_id = a.id"
                " WHERE a.id = %s FOR UPDATE OF a",
                (agent_id,),
            ).fetchall()
        return [row["id"] for row in rows if row["id"] is not None]

    def agent_webhooks(self, agent_id: uuid.UUID) -> list[Webhook]:
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM webhooks WHERE agent_id = %s ORDER BY created_at, id",
                (agent_id,),
            ).fetchall()
        return [_webhook(row) for row in rows]

    def webhook(self, agent_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook:
        """The agent's webhook of this id; `NotFound` if the agent has none such."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM webhooks WHERE id = %s AND agent_id = %s",
                (webhook_id, agent_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"no webhook with id {webhook_id}")
        return _webhook(row)

    def delete_webhook(self, agent_id: uuid.UUID, webhook_id: uuid.UUID) -> bool:
        """Delete a webhook with its deliveries; queued ones find it gone and are dropped."""
        with self.connection() as conn:
            return (
                conn.execute(
                    "DELETE FROM webhooks WHERE id = %s AND agent_id = %s", (webhook_id, agent_id)
                ).rowcount
                > 0
            )

    def plan_reply_deliveries(
        self, turn_id: uuid.UUID, payload: Callable[[DictRow], dict[str, Any]]
    ) -> list[uuid.UUID]:
        """A delivery of each message the turn's agent said in it to each of the agent's
        webhooks that covers the message's room, its body `payload(row)`; the ids of the
        turn's deliveries not yet attempted (see `carrier_core.webhooks.plan_deliveries`)."""
        with self.transaction() as conn:
            planned = conn.execute(
                "SELECT w.id AS webhook_id, m.id, m.content, m.created_at, t.id AS turn_id,"
                " t.agent_id, t.message_id, r.name AS room FROM turns t"
                " JOIN memories m ON m.turn_id = t.id AND m.kind = 'message'"
                " AND m.entity_id = t.agent_id"
                " JOIN rooms r ON r.id = m.room_id"
                " JOIN webhooks w ON w.agent_id = t.agent_id"
                " AND (w.room_id IS NULL OR w.room_id = m.room_id)"
                " WHERE t.id = %s ORDER BY w.created_at, w.id, m.seq",
                (turn_id,),
            ).fetchall()
            if planned:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO webhook_deliveries"
                        " (id, webhook_id, memory_id, turn_id, payload) VALUES (%s, %s, %s, %s, %s)"
                        " ON CONFLICT (webhook_id, memory_id) DO NOTHING",
                        [
                            (
                                uuid.uuid4(),
                                row["webhook_id"],
                                row["id"],
                                turn_id,
                                Jsonb(payload(row)),
                            )
                            for row in planned
                        ],
                    )
            pending = conn.execute(
                "SELECT id FROM webhook_deliveries WHERE turn_id = %s AND status = 'pending'"
                " AND attempts = 0 ORDER BY seq",
                (turn_id,),
            ).fetchall()
        return [row["id"] for row in pending]

    def plan_approval_deliveries(
        self, approval_id: uuid.UUID, turn_id: uuid.UUID, payload: dict[str, Any]
    ) -> list[uuid.UUID]:
        """A delivery of an approval request to each webhook of its agent that covers the
        turn's room; the ids of those not yet attempted."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO webhook_deliveries (id, webhook_id, approval_id, turn_id, payload)"
                " SELECT gen_random_uuid(), w.id, %s, t.id, %s FROM webhooks w"
                " JOIN turns t ON t.agent_id = w.agent_id"
                " WHERE t.id = %s AND (w.room_id IS NULL OR w.room_id = t.room_id)"
                " ON CONFLICT (webhook_id, approval_id) WHERE approval_id IS NOT NULL DO NOTHING",
                (approval_id, Jsonb(payload), turn_id),
            )
            pending = conn.execute(
                "SELECT id FROM webhook_deliveries WHERE approval_id = %s AND status = 'pending'"
                " AND attempts = 0 ORDER BY seq",
                (approval_id,),
            ).fetchall()
        return [row["id"] for row in pending]

    def sweep_deliveries(
        self, *, unqueued_after_s: float, overdue_after_s: float, limit: int
    ) -> list[uuid.UUID]:
        """Mark swept, and return oldest first, the pending deliveries never attempted
        `unqueued_after_s` after they were planned or due `overdue_after_s` ago, and not
        swept in the last `overdue_after_s` (see `carrier_core.webhooks.stale_deliveries`)."""
        with self.connection() as conn:
            rows = conn.execute(
                "UPDATE webhook_deliveries SET swept_at = now() WHERE id IN ("
                " SELECT id FROM webhook_deliveries WHERE status = 'pending'"
                " AND (swept_at IS NULL OR swept_at < now() - make_interval(secs => %(overdue)s))"
                " AND ((attempts = 0 AND created_at < now() - make_interval(secs => %(unqueued)s))"
                " OR next_attempt_at < now() - make_interval(secs => %(overdue)s))"
                " ORDER BY created_at, seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, created_at, seq",
                {"overdue": overdue_after_s, "unqueued": unqueued_after_s, "limit": limit},
            ).fetchall()
        return [row["id"] for row in sorted(rows, key=lambda row: (row["created_at"], row["seq"]))]

    def claim_delivery(
        self, delivery_id: uuid.UUID, *, lease_s: float, slack_s: float
    ) -> DictRow | None:
        """Claim an attempt at a pending delivery due within `slack_s`, moving its due time
        `lease_s` ahead: its attempts, payload, webhook id, URL and secret (None but for
        webhooks made when secrets were kept in their row); None if it is not pending, not
        due, or gone."""
        with self.connection() as conn:
            return conn.execute(
                "UPDATE webhook_deliveries d SET attempts = d.attempts + 1, updated_at = now(),"
                " next_attempt_at = now() + make_interval(secs => %s)"
                " FROM webhooks w WHERE d.id = %s AND w.id = d.webhook_id"
                " AND d.status = 'pending' AND (d.next_attempt_at IS NULL"
                " OR d.next_attempt_at <= now() + make_interval(secs => %s))"
                " RETURNING d.attempts, d.payload, d.webhook_id, w.url, w.secret",
                (lease_s, delivery_id, slack_s),
            ).fetchone()

    def record_attempt(
        self,
        delivery_id: uuid.UUID,
        status: DeliveryStatus,
        last_status: int | None,
        error: str | None,
        retry_in: float | None,
    ) -> None:
        """What an attempt came to; a pending delivery is due again `retry_in` from now."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE webhook_deliveries SET status = %s, last_status = %s, last_error = %s,"
                " next_attempt_at = CASE WHEN %s::float8 IS NULL THEN NULL"
                " ELSE now() + make_interval(secs => %s::float8) END, updated_at = now()"
                " WHERE id = %s",
                (status, last_status, error, retry_in, retry_in, delivery_id),
            )

    def webhook_deliveries(
        self,
        webhook_id: uuid.UUID,
        *,
        limit: int,
        status: DeliveryStatus | None = None,
        before_seq: int | None = None,
    ) -> list[Delivery]:
        """A page of a webhook's deliveries, newest first (keyset: `before_seq` the last seq)."""
        filters, params = where(
            ("webhook_id = %s", webhook_id), ("status = %s", status), ("seq < %s", before_seq)
        )
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries"
                f" WHERE {filters} ORDER BY seq DESC LIMIT %s".encode(),
                [*params, limit],
            ).fetchall()
        return [Delivery(**row) for row in rows]

    def delivery(self, delivery_id: uuid.UUID) -> Delivery | None:
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = %s",
                (delivery_id,),
            ).fetchone()
        return None if row is None else Delivery(**row)
