"""The store callers hold: every data area's named queries over one connection pool.

Each area is a class in a module of its own (`turns`, `runners`, `memories`, `agents`,
`knowledge`, `tasks`, `usage`, `tenants`, `connections`, `webhooks`, `approvals`), all
over `StoreBase`; `Store` combines them, so a caller holds one object and a step can run
calls of several areas in one `atomic` block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carrier_core.store.agents import AgentStore
from carrier_core.store.approvals import ApprovalStore
from carrier_core.store.base import StoreBase
from carrier_core.store.connections import ConnectionStore
from carrier_core.store.database import Login, PoolHealth, RoundTrips, database_url, open_pool
from carrier_core.store.knowledge import KnowledgeStore
from carrier_core.store.memories import MemoryStore
from carrier_core.store.migrate import check_schema, migrate
from carrier_core.store.runners import RunnerStore
from carrier_core.store.tasks import TaskStore
from carrier_core.store.tenants import TenantStore
from carrier_core.store.turns import TurnStore
from carrier_core.store.usage import UsageLedger
from carrier_core.store.webhooks import WebhookStore

if TYPE_CHECKING:
    from carrier_core.config import Settings


class Store(
    TurnStore,
    RunnerStore,
    MemoryStore,
    AgentStore,
    KnowledgeStore,
    TaskStore,
    UsageLedger,
    TenantStore,
    ConnectionStore,
    WebhookStore,
    ApprovalStore,
    StoreBase,
):
    """Postgres-backed state of all agents. Safe to share between threads."""

    @classmethod
    def open(cls, settings: Settings, login: Login | None = None) -> Store:
        """Connect (starting the embedded Postgres if no URL is set) and migrate, or only
        check the schema when `settings.migrate_on_start` is off. A `login` is asked where
        to connect for every new connection, instead of the settings."""
        url: str | Login = login if login is not None else database_url(settings)
        first = url(False) if callable(url) else url
        if settings.migrate_on_start:
            migrate(first)
        else:
            check_schema(first)
        round_trips = RoundTrips()
        health = PoolHealth()
        pool = open_pool(
            url,
            size=settings.pool_size,
            round_trips=round_trips,
            prepared_statements=settings.prepared_statements,
            health=health,
            timeout_s=settings.pool_timeout_s,
        )
        return cls(pool, round_trips, health)
