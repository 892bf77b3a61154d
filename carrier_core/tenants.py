"""API keys: made, and found by their secret (the rows are kept by
`carrier_core.store.tenants`).

Every agent belongs to one tenant, and everything else (rooms, memories, turns,
webhooks, connections) belongs to an agent, so checking an agent's tenant is
enough to keep tenants apart.

An API key is shown once, when it is made, and stored only as its sha256: a key
is 256 random bits, so a fast hash cannot be brute-forced and a lookup by hash
needs no per-key salt. A key may be limited to some of its tenant's agents.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from carrier_core.store.tenants import ApiKey, Tenant
from carrier_core.world import LOCAL_TENANT_ID

if TYPE_CHECKING:
    from carrier_core.store.store import Store

#: Every key starts with this, so a leaked key is easy to recognise (and to scan for).
KEY_PREFIX = "carrier_"

__all__ = [
    "KEY_PREFIX",
    "ApiKey",
    "NewKey",
    "Tenant",
    "create_key",
    "dev_key_file",
    "key_for_secret",
    "local_dev_key",
]


@dataclass(frozen=True)
class NewKey:
    """A key just made: `secret` is the whole key, which is not stored and not shown again."""

    key: ApiKey
    secret: str


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_key(
    store: Store,
    tenant_id: uuid.UUID,
    *,
    name: str = "",
    agent_ids: frozenset[uuid.UUID] | None = None,
) -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = store.add_key(
        tenant_id,
        name=name,
        prefix=secret[: len(KEY_PREFIX) + 6],
        digest=_hash(secret),
        agent_ids=agent_ids,
    )
    return NewKey(key, secret)


def key_for_secret(store: Store, secret: str) -> ApiKey | None:
    """The live key whose secret this is, or None."""
    return store.live_key(_hash(secret))


def dev_key_file(data_dir: Path) -> Path:
    """Where `carrier dev` keeps its local key, so `carrier chat --api` can find it."""
    return data_dir / "dev-api-key"


def local_dev_key(store: Store, data_dir: Path) -> tuple[str, bool]:
    """The local tenant's key for `carrier dev`: the saved one if it still works, else a new
    one, saved (mode 0600) beside the embedded database. Returns (key, made now)."""
    path = dev_key_file(data_dir)
    if path.is_file():
        saved = path.read_text().strip()
        key = key_for_secret(store, saved)
        if key is not None and key.tenant_id == LOCAL_TENANT_ID:
            return saved, False
    made = create_key(store, LOCAL_TENANT_ID, name="carrier dev")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(made.secret + "\n")
    return made.secret, True
