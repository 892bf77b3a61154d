"""The schema is migrated once per deploy (the stack's DatabaseMigrations resource, or
`carrier migrate`); a function's cold start only checks it is not older than its code."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from carrier_aws.local.emulator import Emulator, ResponseReceiver
from carrier_aws.local.template import TemplateError, read_template
from carrier_core import Settings
from carrier_core.store.database import DatabaseError
from carrier_core.store.migrate import latest_version, migrate
from carrier_core.store.store import Store
from tests.conftest import ROOT
from tests.dev_server import CARRIER, free_port, offline_environment


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """An empty database of its own on the tests' server."""
    name = f"carrier_fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield make_conninfo(database_url, dbname=name)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def schema_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert row is not None
    return int(row[0])


def test_the_template_s_migrations_resource_names_the_newest_migration() -> None:
    """Its Version changes with every new migration, so a deploy that adds one runs it."""
    body = read_template(ROOT / "template.yaml").body
    resource = body["Resources"]["DatabaseMigrations"]
    assert resource["Properties"]["Version"] == str(latest_version())
    # And with the code: each deploy of new code runs it (moving webhook secrets from rows).
    assert resource["Properties"]["Code"] == {"Ref": "CarrierLayer"}
    assert body["Resources"]["CarrierLayer"]["Type"] == "AWS::Serverless::LayerVersion"
    functions = [
        name
        for name, r in body["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function" and name != "MigrateFunction"
    ]
    assert functions and all(
        body["Resources"][name].get("DependsOn") == "DatabaseMigrations" for name in functions
    ), "every function waits for the migrations"


def test_the_emulator_creates_the_migrations_resource_before_anything_runs(
    fresh_database: str,
) -> None:
    with Emulator(fresh_database, poll=False) as emulator:
        assert emulator.invocations["MigrateFunction"] == 1
        assert schema_version(fresh_database) == latest_version()
        # The handlers only check the schema: their runtime opens on the migrated database.
        assert emulator.environment["CARRIER_MIGRATE_ON_START"] == "false"
        api = emulator.functions["ApiFunction"].module
        assert api.runtime().store.embedding_dimensions == 384


def test_a_failed_migration_fails_the_start_with_its_reason() -> None:
    nowhere = f"postgresql://carrier@127.0.0.1:{free_port()}/carrier?connect_timeout=2"
    with pytest.raises(TemplateError, match=r"DatabaseMigrations failed: .*cannot connect"):
        Emulator(nowhere, poll=False).start()


def test_a_cold_start_on_an_older_schema_is_refused_with_both_versions(
    fresh_database: str,
) -> None:
    settings = Settings(database_url=fresh_database, migrate_on_start=False)
    newest = latest_version()
    with pytest.raises(DatabaseError, match=f"at migration 0 and this code needs {newest}"):
        Store.open(settings)  # never migrated
    migrate(fresh_database)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (newest,))
    with pytest.raises(DatabaseError, match=f"at migration {newest - 1} and this code needs"):
        Store.open(settings)
    migrate(fresh_database)
    Store.open(settings).close()  # up to date: it opens


def test_the_migrate_function_answers_cloudformation(fresh_database: str) -> None:
    event = json.loads((ROOT / "events" / "migrate_custom_resource.json").read_text())
    with Emulator(fresh_database, poll=False) as emulator:
        receiver = ResponseReceiver()
        try:
            update = {**event, "RequestType": "Update", "ResponseURL": receiver.url}
            emulator.call(emulator.functions["MigrateFunction"], update)
            delete = {**event, "RequestType": "Delete", "ResponseURL": receiver.url}
            emulator.call(emulator.functions["MigrateFunction"], delete)
        finally:
            receiver.close()
    updated, deleted = receiver.answers
    assert updated["Status"] == "SUCCESS"
    assert updated["Data"] == {"Version": str(latest_version())}
    assert updated["LogicalResourceId"] == "DatabaseMigrations"
    assert deleted["Status"] == "SUCCESS" and schema_version(fresh_database) == latest_version()


def test_carrier_migrate_brings_a_database_up_to_date(fresh_database: str, tmp_path: Path) -> None:
    env = offline_environment(DATABASE_URL=fresh_database, CARRIER_HOME=str(tmp_path))
    first = subprocess.run(
        [*CARRIER, "migrate"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert first.returncode == 0, first.stderr
    assert f"the schema is at {latest_version():04d}" in first.stderr
    again = subprocess.run(
        [*CARRIER, "migrate"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert "none (already up to date)" in again.stderr
