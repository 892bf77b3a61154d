"""Fixtures: one embedded Postgres for the whole session, a clean database per test.

Set CARRIER_TEST_DATABASE_URL to run against another Postgres with pgvector
(its tables are truncated between tests: never point it at data you keep).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from carrier_core import Character, Runtime, Settings, load_character
from carrier_core.models import HashEmbedding, ModelSet, ScriptedModel, offline_models
from carrier_core.store import Store

ROOT = Path(__file__).resolve().parent.parent
CHARACTERS = ROOT / "characters"
ELIZA_CHARACTERS = ROOT.parent / "shared" / "elizaos-characters"

TABLES = "agents, entities, worlds, rooms, participants, memories, relationships, turns, turn_steps"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    explicit = os.environ.get("CARRIER_TEST_DATABASE_URL")
    if explicit:
        yield explicit
        return
    from carrier_core.store.database import embedded_database_url

    home = tmp_path_factory.mktemp("carrier-home")
    yield embedded_database_url(home)


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
