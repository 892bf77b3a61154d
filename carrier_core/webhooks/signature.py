"""Signing webhook requests the Standard Webhooks way (https://www.standardwebhooks.com).

A receiver checks a request with any Standard Webhooks library, or by hand: the
`webhook-signature` header holds `v1,` and the base64 HMAC-SHA256 of
`{webhook-id}.{webhook-timestamp}.{body}`, keyed with the base64-decoded part of
the secret after `whsec_`. The id is the delivery's, the same on every retry, so a
receiver can drop repeats; the timestamp lets it refuse old (replayed) requests.

Only the standard library is used, so the signer cannot drift with a dependency.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

#: What every secret starts with, as Standard Webhooks names them.
SECRET_PREFIX = "whsec_"
#: Random bytes in a new secret (the standard asks for 24 to 64).
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ and base64") from None


def signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value for this request."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one request."""
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, delivery_id, timestamp, body),
    }
