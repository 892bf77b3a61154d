"""Where a Lambda finds its database: DATABASE_URL, or an RDS secret (moto Secrets Manager)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from carrier_aws.runtime import ConfigurationError, database_url


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
