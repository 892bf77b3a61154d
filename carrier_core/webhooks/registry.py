"""The webhooks of an agent: made and deleted with their signing secret (listed and found
by the store's `webhooks` area).

A webhook belongs to an agent, and to one of its rooms when a room key is given
(else to all of them). The secret that signs its requests is made here, returned
once in `NewWebhook`, and never read back out by the API. Every delivery must be signed
with it, so it cannot be hashed: it is kept in the secret store (`carrier_core.secrets`),
never in the database. Webhooks made before that kept theirs in their row
(`webhooks.secret`); `move_row_secrets` moves those to the secret store, run by the migrate
function (on deploy, and as `carrier dev` starts: where the functions that deliver read
their secrets), and until then their deliveries read it there.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from carrier_core.secrets import SecretStoreError
from carrier_core.store import webhooks as rows
from carrier_core.store.webhooks import TooManyWebhooks, Webhook
from carrier_core.webhooks.signature import new_secret
from carrier_core.webhooks.targets import check_url
from carrier_core.world import room_id_for

if TYPE_CHECKING:
    from carrier_core.character import SecretPath
    from carrier_core.runtime import Runtime
    from carrier_core.secrets import SecretStore

log = logging.getLogger(__name__)

#: Webhooks one agent may have: each reply is sent to every one of them.
MAX_WEBHOOKS_PER_AGENT = 20
#: The source of rooms named by clients' room keys (that of the client API).
ROOM_SOURCE = "api"
#: Where a webhook's entry in the secret store keeps its signing secret.
SIGNING_SECRET: SecretPath = ("signing_secret",)

__all__ = [
    "MAX_WEBHOOKS_PER_AGENT",
    "NewWebhook",
    "TooManyWebhooks",
    "Webhook",
    "create_webhook",
    "delete_webhook",
    "forget_webhook_secrets",
    "move_row_secrets",
    "signing_secret",
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
    webhook_id, secret = uuid.uuid4(), new_secret()
    # The secret is kept first, so no stored webhook is ever without it.
    runtime.secrets.put(webhook_id, {SIGNING_SECRET: secret}, owner="webhook")
    try:
        hook = runtime.store.add_webhook(
            agent_id,
            webhook_id=webhook_id,
            url=url,
            room=room,
            room_id=room_id,
            limit=MAX_WEBHOOKS_PER_AGENT,
        )
    except BaseException:
        forget_webhook_secrets(runtime.secrets, [webhook_id])
        raise
    return NewWebhook(hook, secret)


def delete_webhook(runtime: Runtime, agent_id: uuid.UUID, webhook_id: uuid.UUID) -> bool:
    """Delete the agent's webhook with its deliveries, then its secret
    (`forget_webhook_secrets`). False if the agent has no such webhook."""
    deleted = runtime.store.delete_webhook(agent_id, webhook_id)
    if deleted:
        forget_webhook_secrets(runtime.secrets, [webhook_id])
    return deleted


def forget_webhook_secrets(secrets: SecretStore, webhook_ids: Iterable[uuid.UUID]) -> None:
    """Delete the signing secrets of webhooks that are gone (or were never stored). One that
    cannot be deleted is logged and left: it signs nothing any more, whereas deleting it
    before its webhook, and then failing to delete the webhook, would leave a webhook no
    delivery can be signed for."""
    for webhook_id in webhook_ids:
        try:
            secrets.delete(webhook_id, owner="webhook")
        except SecretStoreError as exc:
            log.warning("the signing secret of gone webhook %s is left: %s", webhook_id, exc)


def signing_secret(runtime: Runtime, webhook_id: uuid.UUID) -> str | None:
    """The webhook's signing secret from the secret store; None if it is not there. Raises
    `SecretStoreError` when the store cannot be read."""
    secret = runtime.secrets.get(webhook_id, owner="webhook").get(SIGNING_SECRET)
    return secret if isinstance(secret, str) else None


def move_row_secrets(url: str, secrets: SecretStore) -> int:
    """Move the signing secrets of webhooks made when they were kept in their row into the
    secret store (`url`: the database's, as the migrations take it); the number moved."""

    def keep(webhook_id: uuid.UUID, secret: str) -> None:
        secrets.put(webhook_id, {SIGNING_SECRET: secret}, owner="webhook")

    return rows.move_row_secrets(url, keep)
