"""The webhooks of an agent: made, listed, found and deleted.

A webhook belongs to an agent, and to one of its rooms when a room key is given
(else to all of them). The secret that signs its requests is made here, returned
once in `NewWebhook`, and never read back out by this module: it is stored only
because every delivery must be signed with it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import DictRow

from carrier_core.runtime import Runtime
from carrier_core.store import NotFound, Store
from carrier_core.webhooks.signature import new_secret
from carrier_core.webhooks.targets import check_url
from carrier_core.world import room_id_for

#: Webhooks one agent may have: each reply is sent to every one of them.
MAX_WEBHOOKS_PER_AGENT = 20
#: The source of rooms named by clients' room keys (that of the client API).
ROOM_SOURCE = "api"


class TooManyWebhooks(ValueError):
    pass


@dataclass(frozen=True)
class Webhook:
    id: uuid.UUID
    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    #: The client's room key; None: every room of the agent.
    room: str | None
    url: str
    created_at: datetime


@dataclass(frozen=True)
class NewWebhook:
    """A webhook just made, with the secret that verifies its requests (shown this once)."""

    webhook: Webhook
    secret: str


_COLUMNS = "id, tenant_id, agent_id, room, url, created_at"


def _webhook(row: DictRow) -> Webhook:
    return Webhook(**row)


def create_webhook(
    runtime: Runtime, agent_id: uuid.UUID, url: str, room: str | None = None
) -> NewWebhook:
    """Register a URL for the agent's replies (in one room, or all). Raises
    `InvalidWebhookUrl`, `TooManyWebhooks`, or `NotFound` for an unknown agent."""
    url = check_url(url, allow_private=runtime.settings.webhook_allow_private_urls)
    room_id = None if room is None else room_id_for(agent_id, ROOM_SOURCE, room)
    secret = new_secret()
    with runtime.store.transaction() as conn:
        # Locks the agent's row, so two registrations at once cannot pass the limit together.
        agent = conn.execute(
            "SELECT tenant_id FROM agents WHERE id = %s FOR UPDATE", (agent_id,)
        ).fetchone()
        if agent is None:
            raise NotFound(f"no agent with id {agent_id}")
        existing = conn.execute(
            "SELECT count(*) AS n FROM webhooks WHERE agent_id = %s", (agent_id,)
        ).fetchone()
        if existing is not None and existing["n"] >= MAX_WEBHOOKS_PER_AGENT:
            raise TooManyWebhooks(
                f"an agent may have at most {MAX_WEBHOOKS_PER_AGENT} webhooks; delete one first"
            )
        row = conn.execute(
            "INSERT INTO webhooks (id, tenant_id, agent_id, room_id, room, url, secret)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (uuid.uuid4(), agent["tenant_id"], agent_id, room_id, room, url, secret),
        ).fetchone()
    assert row is not None
    return NewWebhook(_webhook(row), secret)


def agent_webhooks(store: Store, agent_id: uuid.UUID) -> list[Webhook]:
    with store.connection() as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM webhooks WHERE agent_id = %s ORDER BY created_at, id",
            (agent_id,),
        ).fetchall()
    return [_webhook(row) for row in rows]


def webhook(store: Store, agent_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook:
    """The agent's webhook of this id; `NotFound` if the agent has none such."""
    with store.connection() as conn:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM webhooks WHERE id = %s AND agent_id = %s",
            (webhook_id, agent_id),
        ).fetchone()
    if row is None:
        raise NotFound(f"no webhook with id {webhook_id}")
    return _webhook(row)


def delete_webhook(store: Store, agent_id: uuid.UUID, webhook_id: uuid.UUID) -> bool:
    """Delete a webhook with its deliveries; queued ones find it gone and are dropped."""
    with store.connection() as conn:
        return (
            conn.execute(
                "DELETE FROM webhooks WHERE id = %s AND agent_id = %s", (webhook_id, agent_id)
            ).rowcount
            > 0
        )
