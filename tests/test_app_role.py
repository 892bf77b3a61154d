"""Least privilege in the database: the functions connect as a login of `carrier_app`.

A server of the tests' own that requires passwords stands for RDS: its database belongs to
`carrier_owner`, which may create roles but is no superuser (as an RDS master user), and its
secrets are in moto's Secrets Manager, the app's made as the template makes it (only a
username and a generated password). The migrate function's handler answers the custom resource
as on a deploy; then a runtime opens on the app's secret, as every other function does.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg.conninfo import make_conninfo

from carrier_aws.database import database_url
from carrier_aws.local.emulator import LambdaContext, ResponseReceiver
from carrier_aws.local.template import read_template
from carrier_aws.runtime import close_runtime, runtime
from carrier_aws.secret_values import forget_secret_values
from carrier_core import load_character, run_turn
from carrier_core.store.database import DatabaseError
from carrier_core.store.migrate import latest_version, migrate
from carrier_core.store.roles import APP_ROLE, ensure_app_login
from tests.conftest import CHARACTERS, ROOT
from tests.postgres_process import PostgresProcess, running_postgres

OWNER = "carrier_owner"
OWNER_PASSWORD = "the-owners-password"
#: Migration 0005's session setting, NULL where nothing sets it.
SETTING = "SELECT current_setting('hnsw.iterative_scan', true)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresProcess]:
    """One server for the module; each test has a database of its own on it."""
    with running_postgres(tmp_path_factory.mktemp("app-role")) as postgres:
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {OWNER} LOGIN CREATEROLE PASSWORD '{OWNER_PASSWORD}'")
            # Every statement in the log: the password must never be in one.
            admin.execute("ALTER SYSTEM SET log_statement = 'all'")
        postgres.require_password(OWNER)
        postgres.require_password(f"+{APP_ROLE}")  # every login of the app's role
        yield postgres


def _handler_module() -> ModuleType:
    path = ROOT / "functions" / "migrate" / "app.py"
    spec = importlib.util.spec_from_file_location("_carrier_test_migrate_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Stack:
    """A database, its owner's and its app's secrets, and the migrate function."""

    server: PostgresProcess
    dbname: str
    owner_arn: str
    app_arn: str
    migrate_app: ModuleType

    @property
    def admin_url(self) -> str:
        """The server's superuser (trusted), for the test's own checks."""
        return make_conninfo(self.server.url, dbname=self.dbname)

    @property
    def owner_url(self) -> str:
        return make_conninfo(self.admin_url, user=OWNER, password=OWNER_PASSWORD)

    def secret(self, arn: str) -> dict[str, Any]:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        return dict(json.loads(value))

    def deploy(self, request_type: str = "Create") -> dict[str, Any]:
        """The custom resource's request, as CloudFormation sends it; its answer."""
        event = json.loads((ROOT / "events" / "migrate_custom_resource.json").read_text())
        receiver = ResponseReceiver()
        try:
            event = {**event, "RequestType": request_type, "ResponseURL": receiver.url}
            if request_type != "Create":
                event["PhysicalResourceId"] = "carrier-schema"
            context = LambdaContext("MigrateFunction", "arn:aws:lambda:::MigrateFunction", 256, 300)
            self.migrate_app.handler(event, context)
        finally:
            receiver.close()
        [answer] = receiver.answers
        return dict(answer)

    def app_connect(self) -> psycopg.Connection[Any]:
        """A connection as the app's login, from the app's secret (as a function makes it)."""
        return psycopg.connect(database_url(refresh=True), autocommit=True)


@pytest.fixture
def stack(server: PostgresProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    dbname = f"carrier_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {dbname} OWNER {OWNER}")
    with psycopg.connect(make_conninfo(server.url, dbname=dbname), autocommit=True) as admin:
        # On RDS the master user may create it; here the owner is no superuser.
        admin.execute("CREATE EXTENSION vector")
    for name in (
        "DATABASE_URL",
        "CARRIER_DB_HOST",
        "CARRIER_DB_NAME",
        "CARRIER_DB_SSLROOTCERT",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "CARRIER_MODEL_PROVIDER",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CARRIER_DB_SSLMODE": "disable",  # the test's server has no TLS
        "CARRIER_MIGRATE_ON_START": "false",  # as the template sets it
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        forget_secret_values()
        secrets = boto3.client("secretsmanager")
        owner = {
            "username": OWNER,
            "password": OWNER_PASSWORD,
            "host": "127.0.0.1",
            "port": server.port,
            "dbname": dbname,
            "engine": "postgres",
        }
        owner_arn = secrets.create_secret(Name=f"{dbname}-owner", SecretString=json.dumps(owner))
        # As the template's GenerateSecretString makes it: a username, a generated password.
        password = secrets.get_random_password(PasswordLength=32, ExcludePunctuation=True)
        app = {
            "username": f"carrier_app_{uuid.uuid4().hex[:8]}",
            "password": password["RandomPassword"],
        }
        app_arn = secrets.create_secret(Name=f"{dbname}-app", SecretString=json.dumps(app))
        monkeypatch.setenv("CARRIER_DB_OWNER_SECRET_ARN", owner_arn["ARN"])
        monkeypatch.setenv("CARRIER_DB_SECRET_ARN", app_arn["ARN"])
        close_runtime()
        try:
            yield Stack(server, dbname, owner_arn["ARN"], app_arn["ARN"], _handler_module())
        finally:
            close_runtime()
            forget_secret_values()


def test_the_functions_run_a_turn_as_the_app_login_which_may_do_nothing_else(
    stack: Stack,
) -> None:
    created = stack.deploy("Create")
    assert created["Status"] == "SUCCESS", created.get("Reason")
    assert created["Data"] == {"Version": str(latest_version())}
    app = stack.secret(stack.app_arn)
    # Where the database is, borrowed from the owner's secret: the app's secret alone will do.
    assert (app["host"], app["port"], app["dbname"]) == (
        "127.0.0.1",
        stack.server.port,
        stack.dbname,
    )

    warm = runtime()  # as a function's cold start: the app's secret, the schema only checked
    agent = warm.register_agent(load_character(CHARACTERS / "ada.json"))
    message = {"agent_id": agent, "room": "r1", "sender": "grace"}
    turn = run_turn(warm, {**message, "text": "My name is Grace"})
    assert turn.status == "done", turn.error

    with stack.app_connect() as conn:
        assert conn.execute("SELECT current_user").fetchone() == (app["username"],)
        # Migration 0005's session setting reaches the app's sessions too.
        assert conn.execute(SETTING).fetchone() == ("relaxed_order",)
        count = conn.execute("SELECT count(*) FROM memories").fetchone()
        assert count is not None and count[0] > 0
    with psycopg.connect(stack.owner_url, autocommit=True) as owner:
        owner.execute("CREATE SCHEMA owner_only")
        owner.execute("CREATE TABLE owner_only.notes (note text)")
    forbidden = [
        "CREATE TABLE intruder (id int)",
        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "DROP TABLE turn_steps",
        "ALTER TABLE memories ADD COLUMN intruder int",
        "CREATE INDEX ON memories (created_at)",
        "TRUNCATE memories",
        "CREATE ROLE intruder",
        f"ALTER ROLE {app['username']} CREATEROLE",
        f"SET ROLE {OWNER}",
        "SELECT * FROM owner_only.notes",
        "INSERT INTO schema_migrations (version, name) VALUES (999, 'intruder')",
        "SELECT setval('runner_generations', 1)",
        "CREATE SCHEMA intruder",
    ]
    with stack.app_connect() as conn:
        for statement in forbidden:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())
    with psycopg.connect(stack.admin_url, autocommit=True) as admin:
        count = admin.execute("SELECT count(*) FROM memories").fetchone()
        assert count is not None and count[0] > 0
    # The password was never sent: only its verifier, in CREATE ROLE.
    log = stack.server.log.read_text(errors="replace")
    assert "SCRAM-SHA-256$4096:" in log
    assert app["password"] not in log


def test_every_carrier_table_is_granted_rows_only(stack: Stack) -> None:
    assert stack.deploy("Create")["Status"] == "SUCCESS"
    login = stack.secret(stack.app_arn)["username"]
    with psycopg.connect(stack.admin_url, autocommit=True) as admin:
        tables = [
            name
            for (name,) in admin.execute(
                "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r'"
                " AND c.relnamespace = 'public'::regnamespace"
                " AND pg_get_userbyid(c.relowner) = %s ORDER BY 1",
                (OWNER,),
            )
        ]
        assert {"memories", "turns", "schema_migrations"} <= set(tables)
        for table in tables:
            rows = "SELECT" if table == "schema_migrations" else "SELECT,INSERT,UPDATE,DELETE"
            check = "SELECT has_table_privilege(%s, %s, %s), has_table_privilege(%s, %s, %s)"
            granted, truncate = admin.execute(
                check, (login, table, rows, login, table, "TRUNCATE")
            ).fetchone() or (None, None)
            assert granted and not truncate, table
        sequences = admin.execute(
            "SELECT c.relname, has_sequence_privilege(%s, c.oid, 'USAGE'),"
            " has_sequence_privilege(%s, c.oid, 'UPDATE') FROM pg_class c"
            " WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace"
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'i')",
            (login, login),
        ).fetchall()
        assert {name for name, _, _ in sequences} >= {"runner_generations"}
        assert all(usage and not update for _, usage, update in sequences), sequences


def test_a_deploy_again_keeps_the_login_and_its_password(stack: Stack) -> None:
    assert stack.deploy("Create")["Status"] == "SUCCESS"
    secrets = boto3.client("secretsmanager")
    versions = len(secrets.list_secret_version_ids(SecretId=stack.app_arn)["Versions"])
    with stack.app_connect() as conn:
        conn.execute("SELECT 1")
    for _ in range(2):
        updated = stack.deploy("Update")
        assert updated["Status"] == "SUCCESS", updated.get("Reason")
    # The secret is written once (its host, port and dbname), not on every deploy.
    assert len(secrets.list_secret_version_ids(SecretId=stack.app_arn)["Versions"]) == versions
    with stack.app_connect() as conn:
        assert conn.execute("SELECT count(*) FROM agents").fetchone() == (0,)
    with psycopg.connect(stack.admin_url, autocommit=True) as admin:
        login = stack.secret(stack.app_arn)["username"]
        roles = admin.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname IN (%s, %s)", (login, APP_ROLE)
        ).fetchone()
        assert roles == (2,)
    # A wrong password is refused: the server really checks it.
    url = make_conninfo(database_url(), password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url).close()


def test_what_a_later_migration_adds_is_granted_by_default(stack: Stack) -> None:
    assert stack.deploy("Create")["Status"] == "SUCCESS"
    with psycopg.connect(stack.owner_url, autocommit=True) as owner:  # as a migration would
        owner.execute("CREATE TABLE later_things (id bigserial PRIMARY KEY, note text)")
        owner.execute(
            "CREATE FUNCTION later_count() RETURNS bigint LANGUAGE sql"
            " AS 'SELECT count(*) FROM later_things'"
        )
    with stack.app_connect() as conn:
        conn.execute("INSERT INTO later_things (note) VALUES ('hello')")
        assert conn.execute("SELECT later_count()").fetchone() == (1,)
        conn.execute("DELETE FROM later_things")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE later_things")


def test_an_owner_that_is_no_superuser_applies_the_session_settings_in_a_new_session(
    stack: Stack,
) -> None:
    """A deploy whose first migration is 0005 meets it in a fresh session, where pgvector's
    library is not loaded yet: its parameters are then a superuser's to set, unless the
    migration loads the library first."""
    assert stack.deploy("Create")["Status"] == "SUCCESS"
    with psycopg.connect(stack.admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {stack.dbname} RESET hnsw.iterative_scan")
        admin.execute("DELETE FROM schema_migrations WHERE version = 5")
    assert migrate(stack.owner_url) == [5]  # a new connection, as a deploy's
    with stack.app_connect() as conn:
        setting = conn.execute("SHOW hnsw.iterative_scan").fetchone()
    assert setting == ("relaxed_order",)


def test_the_owner_s_role_settings_reach_the_login_where_the_database_has_none(
    stack: Stack,
) -> None:
    """Migration 0005 sets its session settings on the owner's role when the owner may not
    alter the database: the app's login gets them too."""
    assert stack.deploy("Create")["Status"] == "SUCCESS"
    with psycopg.connect(stack.admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {stack.dbname} RESET hnsw.iterative_scan")
        admin.execute(
            f"ALTER ROLE {OWNER} IN DATABASE {stack.dbname}"
            " SET hnsw.iterative_scan = 'relaxed_order'"
        )
    with stack.app_connect() as conn:
        assert conn.execute(SETTING).fetchone() == (None,)
    assert stack.deploy("Update")["Status"] == "SUCCESS"
    with stack.app_connect() as conn:
        assert conn.execute(SETTING).fetchone() == ("relaxed_order",)
        assert conn.execute("SHOW search_path").fetchone() == ("public",)


def test_a_secret_naming_a_powerful_role_fails_the_deploy_without_its_password(
    stack: Stack,
) -> None:
    for username in (OWNER, "postgres", APP_ROLE):
        boto3.client("secretsmanager").put_secret_value(
            SecretId=stack.app_arn,
            SecretString=json.dumps({"username": username, "password": "a-password-kept-secret"}),
        )
        answer = stack.deploy("Create")
        assert answer["Status"] == "FAILED"
        assert username in answer["Reason"] and "a-password-kept-secret" not in answer["Reason"]
    with psycopg.connect(stack.owner_url, autocommit=True) as owner:
        owner.execute("SELECT 1")  # the owner's password was not touched


def test_a_login_that_may_not_create_roles_is_told_what_to_ask_for(tmp_path: Path) -> None:
    with running_postgres(tmp_path) as postgres:
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute("CREATE ROLE plain LOGIN")
            admin.execute("CREATE DATABASE carrier OWNER plain")
        with psycopg.connect(make_conninfo(postgres.url, dbname="carrier"), autocommit=True) as c:
            c.execute("CREATE EXTENSION vector")
        plain = make_conninfo(postgres.url, dbname="carrier", user="plain")
        with pytest.raises(DatabaseError, match="run CREATE ROLE carrier_app NOLOGIN"):
            migrate(plain)
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute("CREATE ROLE carrier_app NOLOGIN")
        assert migrate(plain)[0] == 6  # 0001 to 0005 stayed applied
        with pytest.raises(DatabaseError, match="CREATEROLE"):
            ensure_app_login(plain, "carrier_app_x", "a-password")


def test_only_the_migrate_function_may_read_the_owner_s_secret() -> None:
    body = read_template(ROOT / "template.yaml").body
    owner = {
        "Fn::If": [
            "CreateDb",
            {"Fn::GetAtt": ["Database", "MasterUserSecret.SecretArn"]},
            {"Ref": "DbSecretArn"},
        ]
    }
    app = {"Ref": "AppDatabaseSecret"}
    env = body["Globals"]["Function"]["Environment"]["Variables"]
    assert env["CARRIER_DB_SECRET_ARN"] == app
    functions = {
        name: resource["Properties"]
        for name, resource in body["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    for name, props in functions.items():
        text = json.dumps(props)
        policies = json.dumps(props.get("Policies"))
        if name == "MigrateFunction":
            assert props["Environment"]["Variables"]["CARRIER_DB_OWNER_SECRET_ARN"] == owner
            assert json.dumps(owner) in policies and json.dumps(app) in policies
            writes = [
                s
                for p in props["Policies"]
                for s in (p.get("Statement") or [])
                if "secretsmanager:PutSecretValue" in json.dumps(s)
            ]
            # It writes the app's secret, and webhooks' signing secrets (moved out of their
            # rows); no other.
            webhooks = {
                "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}"
                ":${AWS::AccountId}:secret:carrier/${AWS::StackName}/webhooks/*"
            }
            assert [s["Resource"] for s in writes] == [app, webhooks]
        else:
            assert "DbSecretArn" not in text and "MasterUserSecret" not in text, name
            assert json.dumps(app) in policies, name
    assert body["Outputs"]["AppDatabaseSecretArn"]["Value"] == app
