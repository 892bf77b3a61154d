"""The webhooks of an agent: made (listed, found and deleted by the store's `webhooks`
area).

A webhook belongs to an agent, and to one of its rooms when a room key is given
(else to all of them). The secret that signs its requests is made here, returned
once in `NewWebhook`, and never read back out by the API: it is stored only
because every delivery must be signed with it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from carrier_core.store.webhooks import TooManyWebhooks, Webhook
from carrier_core.webhooks.signature import new_secret
from carrier_core.webhooks.targets import check_url
from carrier_core.world import room_id_for

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime

#: Webhooks one agent may have: each reply is sent to every one of them.
MAX_WEBHOOKS_PER_AGENT = 20
#: The source of rooms named by clients' room keys (that of the client API).
ROOM_SOURCE = "api"

__all__ = [
    "MAX_WEBHOOKS_PER_AGENT",
    "NewWebhook",
    "TooManyWebhooks",
    "Webhook",
    "create_webhook",
]


@dataclass(frozen=True)
class NewWebhook:
    """A webhook just made, with the secret that verifies its requests (shown this once)."""

    webhook: Webhook
    secret: str


def create_webhook(
    runtime: Runtime, agent_id: uuid.UUID, url: str, room: str | None = None
) -> NewWebhook:
    """Register a URL for the agent's replies (in one room, or all). Raises
    `InvalidWebhookUrl`, `TooManyWebhooks`, or `NotFound` for an unknown agent."""
    url = check_url(url, allow_private=runtime.settings.webhook_allow_private_urls)
    room_id = None if room is None else room_id_for(agent_id, ROOM_SOURCE, room)
    secret = new_secret()
    hook = runtime.store.add_webhook(
        agent_id, url=url, secret=secret, room=room, room_id=room_id, limit=MAX_WEBHOOKS_PER_AGENT
    )
    return NewWebhook(hook, secret)
