"""Fixtures: one embedded Postgres for the whole session, a clean database per test.

Set CARRIER_TEST_DATABASE_URL to run against another Postgres with pgvector
(its tables are truncated between tests: never point it at data you keep).
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from carrier_aws import observability
from carrier_core import Character, Runtime, Settings, load_character
from carrier_core.models import HashEmbedding, ModelSet, ScriptedModel, offline_models
from carrier_core.store.store import Store
from carrier_core.turn.ingest import Ingested
from carrier_core.turn.run import run_room
from carrier_core.world import LOCAL_TENANT_ID
from tests.jwks import Issuer, serve_jwks

ROOT = Path(__file__).resolve().parent.parent
CHARACTERS = ROOT / "characters"
ELIZA_CHARACTERS = ROOT.parent / "shared" / "elizaos-characters"

TABLES = (
    "tenants, api_keys, connections, webhooks, webhook_deliveries, agents, entities, worlds,"
    " rooms, participants, memories, relationships, turns, turn_steps, model_calls"
)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tests' database; with CARRIER_TEST_PGBOUNCER=1, reached through PgBouncer in
    transaction pooling mode, as RDS Proxy pools (set CARRIER_PREPARED_STATEMENTS=false)."""
    explicit = os.environ.get("CARRIER_TEST_DATABASE_URL")
    if explicit:
        url = explicit
    else:
        from carrier_core.store.database import embedded_database_url

        url = embedded_database_url(tmp_path_factory.mktemp("carrier-home"))
    if os.environ.get("CARRIER_TEST_PGBOUNCER") == "1":
        from tests.pgbouncer import running_pgbouncer

        with running_pgbouncer(url) as pooled:
            yield pooled
        return
    yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url)


@pytest.fixture(scope="session")
def session_store(settings: Settings) -> Iterator[Store]:
    store = Store.open(settings)
    yield store
    store.close()


@pytest.fixture
def store(session_store: Store) -> Store:
    with session_store._pool.connection() as conn:
        conn.execute(f"TRUNCATE {TABLES} CASCADE")
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'local')", (LOCAL_TENANT_ID,))
    return session_store


def make_runtime(store: Store, models: ModelSet | None = None, **overrides: object) -> Runtime:
    settings = Settings(database_url="postgresql://unused", **overrides)  # type: ignore[arg-type]
    return Runtime(store, settings, models)


@pytest.fixture
def runtime(store: Store) -> Runtime:
    return make_runtime(store, offline_models())


@pytest.fixture
def scripted() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def scripted_runtime(store: Store, scripted: ScriptedModel) -> Runtime:
    return make_runtime(store, ModelSet(small=scripted, large=scripted, embedding=HashEmbedding()))


@pytest.fixture
def ada() -> Character:
    return load_character(CHARACTERS / "ada.json")


def eliza_character_files() -> list[Path]:
    return sorted(ELIZA_CHARACTERS.glob("*.json")) + sorted(ELIZA_CHARACTERS.glob("*/*.json"))


@dataclass(frozen=True)
class TenantKey:
    """A tenant made for a test, with an unlimited API key and its auth header."""

    tenant_id: uuid.UUID
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def make_tenant(store: Store) -> Callable[[str], TenantKey]:
    from carrier_core.tenants import create_key

    def make(name: str) -> TenantKey:
        tenant = store.ensure_tenant(name)
        return TenantKey(tenant.id, create_key(store, tenant.id, name="test").secret)

    return make


def run_inline(runtime: Runtime) -> Callable[[Ingested], None]:
    """A `submit` that runs the room's runner at once, in this thread."""

    def submit(ingested: Ingested) -> None:
        if ingested.runner is not None:
            run_room(runtime, ingested.runner)

    return submit


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    """The v1 API over the offline runtime, turns run inline (no queue)."""
    from carrier_core.api.app import create_app

    with TestClient(create_app(lambda: runtime, run_inline(runtime))) as client:
        yield client


@pytest.fixture(autouse=True, scope="session")
def carrier_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Carrier's data folder (`CARRIER_HOME`) for the tests' runtimes, whose secret files go
    there: never the folder of whoever runs the tests."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARRIER_HOME", str(home))
        yield home


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    """An OIDC issuer whose JWKS is served over HTTP; `issuer.token(claims)` signs a JWT."""
    with serve_jwks() as served:
        yield served


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the functions' logger writes, formatted as in Lambda (the keys are added by
    the formatter, in the thread that logs)."""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(observability.logger.registered_formatter)
    target = logging.getLogger(observability.logger.name)
    target.addHandler(handler)
    try:
        yield written
    finally:
        target.removeHandler(handler)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]
