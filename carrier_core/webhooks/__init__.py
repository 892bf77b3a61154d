"""Webhooks: an agent's replies POSTed to URLs its tenant registers, signed, retried, kept.

- `registry`: webhooks of an agent (all its rooms, or one), each with its own secret, kept
  in the secret store (their rows, and their deliveries', are the store's:
  `carrier_core.store.webhooks`);
- `targets`: which URLs are allowed (http(s), public addresses), and the addresses an
  attempt connects to (those checked);
- `signature`: Standard Webhooks signing (`webhook-id`, `webhook-timestamp`,
  `webhook-signature`);
- `delivery`: one delivery per reply and webhook, attempts with backoff, the record of each.

Where the waiting between attempts happens is the caller's business: in the cloud a
queue (`carrier_aws.webhooks`), with a periodic sweep (`stale_deliveries`) for messages
lost on the way; in a test a loop.
"""

from carrier_core.store.webhooks import Delivery, DeliveryStatus
from carrier_core.webhooks.delivery import (
    Outcome,
    backoff_delay,
    deliver,
    plan_approval_deliveries,
    plan_deliveries,
    stale_deliveries,
)
from carrier_core.webhooks.registry import (
    MAX_WEBHOOKS_PER_AGENT,
    NewWebhook,
    TooManyWebhooks,
    Webhook,
    create_webhook,
    delete_webhook,
)
from carrier_core.webhooks.signature import new_secret, signature, signed_headers
from carrier_core.webhooks.targets import InvalidWebhookUrl, check_url

__all__ = [
    "MAX_WEBHOOKS_PER_AGENT",
    "Delivery",
    "DeliveryStatus",
    "InvalidWebhookUrl",
    "NewWebhook",
    "Outcome",
    "TooManyWebhooks",
    "Webhook",
    "backoff_delay",
    "check_url",
    "create_webhook",
    "delete_webhook",
    "deliver",
    "new_secret",
    "plan_approval_deliveries",
    "plan_deliveries",
    "signature",
    "signed_headers",
    "stale_deliveries",
]
