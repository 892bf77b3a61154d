"""Where a Lambda finds its database: DATABASE_URL, or an RDS secret (moto Secrets Manager)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg.conninfo import make_conninfo

from carrier_aws.runtime import ConfigurationError, close_runtime, database_url, runtime
from carrier_core import load_character, run_turn
from tests.conftest import CHARACTERS
from tests.postgres_process import running_postgres


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("DATABASE_URL", "CARRIER_DB_SECRET_ARN", "CARRIER_DB_HOST", "CARRIER_DB_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


def _secret(value: dict[str, object]) -> str:
    arn = boto3.client("secretsmanager").create_secret(
        Name=f"db-{len(json.dumps(value))}", SecretString=json.dumps(value)
    )["ARN"]
    return str(arn)


def test_database_url_wins(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@h/db")
    assert database_url() == "postgresql://x@h/db"


def test_the_rds_secret_gives_the_url_and_the_proxy_endpoint_overrides_its_host(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = _secret(
        {"username": "carrier", "password": "p@ss word", "host": "db.internal", "port": 5432}
    )
    monkeypatch.setenv("CARRIER_DB_SECRET_ARN", arn)
    url = database_url()
    assert "host=db.internal" in url and "user=carrier" in url and "dbname=carrier" in url
    assert "password='p@ss word'" in url and "sslmode=require" in url
    monkeypatch.setenv("CARRIER_DB_HOST", "proxy.example")
    monkeypatch.setenv("CARRIER_DB_NAME", "agents")
    url = database_url()
    assert "host=proxy.example" in url and "dbname=agents" in url


def test_missing_settings_and_bad_secrets_are_named(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="set DATABASE_URL or CARRIER_DB_SECRET_ARN"):
        database_url()
    monkeypatch.setenv("CARRIER_DB_SECRET_ARN", _secret({"user": "x"}))
    with pytest.raises(ConfigurationError, match="JSON with at least username and password"):
        database_url()
    monkeypatch.setenv("CARRIER_DB_SECRET_ARN", _secret({"username": "u", "password": "p"}))
    with pytest.raises(ConfigurationError, match="no database host"):
        database_url()


def test_a_warm_runtime_follows_a_rotated_database_password(
    aws: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """RDS rotates a managed master password while containers are warm: the pool's next
    connection is refused with the cached password, so the secret is read anew and the
    next turn goes through."""
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "CARRIER_MODEL_PROVIDER",
    ):
        monkeypatch.delenv(name, raising=False)
    with running_postgres(tmp_path) as postgres:
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute("CREATE ROLE carrier_app LOGIN PASSWORD 'the-first-password'")
            admin.execute("CREATE DATABASE carrier OWNER carrier_app")
        carrier_db = make_conninfo(postgres.url, dbname="carrier")
        with psycopg.connect(carrier_db, autocommit=True) as admin:
            admin.execute("CREATE EXTENSION vector")
        postgres.require_password("carrier_app")
        login = {
            "username": "carrier_app",
            "password": "the-first-password",
            "host": "127.0.0.1",
            "port": postgres.port,
            "dbname": "carrier",
        }
        arn = _secret(login)
        monkeypatch.setenv("CARRIER_DB_SECRET_ARN", arn)
        monkeypatch.setenv("CARRIER_DB_SSLMODE", "disable")
        close_runtime()
        try:
            warm = runtime()
            agent = warm.register_agent(load_character(CHARACTERS / "ada.json"))
            message = {"agent_id": agent, "room": "r1", "sender": "grace"}
            assert run_turn(warm, {**message, "text": "My name is Grace"}).status == "done"

            with psycopg.connect(postgres.url, autocommit=True) as admin:
                admin.execute("ALTER ROLE carrier_app PASSWORD 'the-second-password'")
            boto3.client("secretsmanager").put_secret_value(
                SecretId=arn, SecretString=json.dumps({**login, "password": "the-second-password"})
            )
            # The pool's connections age out (max_lifetime) and new ones are made.
            warm.store._pool.drain()
            again = run_turn(warm, {**message, "text": "I like sailing"})
            assert again.status == "done", again.error
            assert runtime() is warm
        finally:
            close_runtime()
