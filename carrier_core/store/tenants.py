"""Tenants and their API keys, as rows: a key is stored as its digest only (making and
hashing the secret is `carrier_core.tenants`' job)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from psycopg.rows import DictRow

from carrier_core.store.base import StoreBase


class Tenant(NamedTuple):
    id: uuid.UUID
    name: str


class ApiKey(NamedTuple):
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


class TenantStore(StoreBase):
    """Tenants by name, and the keys that act for them."""

    def ensure_tenant(self, name: str) -> Tenant:
        """The tenant of this name, made if it does not exist yet. A new tenant's id is
        random: knowing a tenant's name must not be enough to name it in a token's claim."""
        if not name.strip():
            raise ValueError("a tenant name must not be empty")
        with self.connection() as conn:
            row = conn.execute(
                "WITH made AS (INSERT INTO tenants (id, name) VALUES (%s, %s)"
                " ON CONFLICT (name) DO NOTHING RETURNING id)"
                " SELECT id FROM made UNION ALL SELECT id FROM tenants WHERE name = %s",
                (uuid.uuid4(), name, name),
            ).fetchone()
        assert row is not None
        return Tenant(row["id"], name)

    def tenant_named(self, name: str) -> Tenant | None:
        with self.connection() as conn:
            row = conn.execute("SELECT id FROM tenants WHERE name = %s", (name,)).fetchone()
        return None if row is None else Tenant(row["id"], name)

    def tenant_names(self) -> dict[uuid.UUID, str]:
        with self.connection() as conn:
            return {row["id"]: row["name"] for row in conn.execute("SELECT id, name FROM tenants")}

    def tenant_exists(self, tenant_id: uuid.UUID) -> bool:
        with self.connection() as conn:
            found = conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
        return found is not None

    def add_key(
        self,
        tenant_id: uuid.UUID,
        *,
        name: str,
        prefix: str,
        digest: bytes,
        agent_ids: frozenset[uuid.UUID] | None,
    ) -> ApiKey:
        """Store a new key of the tenant by the digest of its secret."""
        with self.connection() as conn:
            row = conn.execute(
                "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, agent_ids)"
                f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_KEY_COLUMNS}",
                (
                    uuid.uuid4(),
                    tenant_id,
                    name,
                    prefix,
                    digest,
                    None if agent_ids is None else sorted(agent_ids),
                ),
            ).fetchone()
        assert row is not None
        return _key(row)

    def live_key(self, digest: bytes) -> ApiKey | None:
        """The live key whose secret has this digest, or None. Notes its use at most once a
        minute, so a busy key costs one read per request and not a write."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS}, last_used_at IS NULL"
                " OR last_used_at < now() - interval '1 minute' AS stale"
                " FROM api_keys WHERE hash = %s AND revoked_at IS NULL",
                (digest,),
            ).fetchone()
            if row is not None and row["stale"]:
                conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (row["id"],))
        return None if row is None else _key(row)

    def tenant_keys(self, tenant_id: uuid.UUID) -> list[ApiKey]:
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = %s ORDER BY created_at, id",
                (tenant_id,),
            ).fetchall()
        return [_key(row) for row in rows]

    def revoke_key(self, tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        """Revoke a key of this tenant; False if the tenant has no such live key."""
        with self.connection() as conn:
            return (
                conn.execute(
                    "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND tenant_id = %s"
                    " AND revoked_at IS NULL",
                    (key_id, tenant_id),
                ).rowcount
                > 0
            )
