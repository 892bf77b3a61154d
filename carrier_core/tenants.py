"""Tenants and their API keys.

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
from datetime import datetime
from pathlib import Path

from psycopg.rows import DictRow

from carrier_core.store import Store
from carrier_core.world import LOCAL_TENANT_ID

#: Every key starts with this, so a leaked key is easy to recognise (and to scan for).
KEY_PREFIX = "carrier_"


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    name: str


@dataclass(frozen=True)
class ApiKey:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    #: The key's first characters, enough to tell keys apart and never to use one.
    prefix: str
    #: None: every agent of the tenant.
    agent_ids: frozenset[uuid.UUID] | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewKey:
    """A key just made: `secret` is the whole key, which is not stored and not shown again."""

    key: ApiKey
    secret: str


def ensure_tenant(store: Store, name: str) -> Tenant:
    """The tenant of this name, made if it does not exist yet. A new tenant's id is random:
    knowing a tenant's name must not be enough to name it in a token's claim."""
    if not name.strip():
        raise ValueError("a tenant name must not be empty")
    with store.connection() as conn:
        row = conn.execute(
            "WITH made AS (INSERT INTO tenants (id, name) VALUES (%s, %s)"
            " ON CONFLICT (name) DO NOTHING RETURNING id)"
            " SELECT id FROM made UNION ALL SELECT id FROM tenants WHERE name = %s",
            (uuid.uuid4(), name, name),
        ).fetchone()
    assert row is not None
    return Tenant(row["id"], name)


def tenant_named(store: Store, name: str) -> Tenant | None:
    with store.connection() as conn:
        row = conn.execute("SELECT id FROM tenants WHERE name = %s", (name,)).fetchone()
    return None if row is None else Tenant(row["id"], name)


def tenant_names(store: Store) -> dict[uuid.UUID, str]:
    with store.connection() as conn:
        return {row["id"]: row["name"] for row in conn.execute("SELECT id, name FROM tenants")}


def tenant_exists(store: Store, tenant_id: uuid.UUID) -> bool:
    with store.connection() as conn:
        return (
            conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant_id,)).fetchone() is not None
        )


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


_KEY_COLUMNS = "id, tenant_id, name, prefix, agent_ids, created_at, last_used_at, revoked_at"


def _key(row: DictRow) -> ApiKey:
    agent_ids = row["agent_ids"]
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        prefix=row["prefix"],
        agent_ids=None if agent_ids is None else frozenset(agent_ids),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def create_key(
    store: Store,
    tenant_id: uuid.UUID,
    *,
    name: str = "",
    agent_ids: frozenset[uuid.UUID] | None = None,
) -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.connection() as conn:
        row = conn.execute(
            "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, agent_ids)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_KEY_COLUMNS}",
            (
                uuid.uuid4(),
                tenant_id,
                name,
                secret[: len(KEY_PREFIX) + 6],
                _hash(secret),
                None if agent_ids is None else sorted(agent_ids),
            ),
        ).fetchone()
    assert row is not None
    return NewKey(_key(row), secret)


def key_for_secret(store: Store, secret: str) -> ApiKey | None:
    """The live key whose secret this is, or None. Notes its use at most once a minute, so
    a busy key costs one read per request and not a write."""
    with store.connection() as conn:
        row = conn.execute(
            f"SELECT {_KEY_COLUMNS}, last_used_at IS NULL"
            " OR last_used_at < now() - interval '1 minute' AS stale"
            " FROM api_keys WHERE hash = %s AND revoked_at IS NULL",
            (_hash(secret),),
        ).fetchone()
        if row is not None and row["stale"]:
            conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (row["id"],))
    return None if row is None else _key(row)


def tenant_keys(store: Store, tenant_id: uuid.UUID) -> list[ApiKey]:
    with store.connection() as conn:
        rows = conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = %s ORDER BY created_at, id",
            (tenant_id,),
        ).fetchall()
    return [_key(row) for row in rows]


def revoke_key(store: Store, tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    """Revoke a key of this tenant; False if the tenant has no such live key."""
    with store.connection() as conn:
        return (
            conn.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND tenant_id = %s"
                " AND revoked_at IS NULL",
                (key_id, tenant_id),
            ).rowcount
            > 0
        )


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
