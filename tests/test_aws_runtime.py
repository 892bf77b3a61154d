"""Where a Lambda finds its database: DATABASE_URL, or an RDS secret (moto Secrets Manager)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import boto3
import psycopg
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from carrier_aws.database import CA_FILES, ConfigurationError, database_url
from carrier_aws.runtime import close_runtime, runtime
from carrier_aws.secret_values import read_json_secret
from carrier_core import load_character, run_turn
from tests.certificates import throwaway_tls
from tests.conftest import CHARACTERS
from tests.postgres_process import PostgresProcess, postgres_with_tls, running_postgres


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "DATABASE_URL",
        "CARRIER_DB_SECRET_ARN",
        "CARRIER_DB_HOST",
        "CARRIER_DB_NAME",
        "CARRIER_DB_SSLMODE",
        "CARRIER_DB_SSLROOTCERT",
    ):
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
    assert "password='p@ss word'" in url and "sslmode=verify-full" in url
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


def test_a_secret_is_read_once_per_max_age_again_when_asked_and_must_be_json(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(Name="kept", SecretString='{"v": 1}')["ARN"]
    assert read_json_secret(arn) == {"v": 1}
    secrets.put_secret_value(SecretId=arn, SecretString='{"v": 2}')
    assert read_json_secret(arn) == {"v": 1}, "a warm container reuses the value it read"
    assert read_json_secret(arn, refresh=True) == {"v": 2}
    secrets.put_secret_value(SecretId=arn, SecretString='{"v": 3}')
    assert read_json_secret(arn, max_age_s=0) == {"v": 3}, "an old value is read anew"
    not_json = secrets.create_secret(Name="not-json", SecretString="user=u")["ARN"]
    monkeypatch.setenv("CARRIER_DB_SECRET_ARN", not_json)
    with pytest.raises(
        ConfigurationError, match=r"the database secret: the secret .*not-json.* is not JSON"
    ):
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


def test_the_url_from_the_secret_verifies_the_server_against_the_bundled_cas(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify-full against the RDS CAs and Amazon's roots (RDS Proxy) by default, in one file
    (libpq reads one); CARRIER_DB_SSLMODE and CARRIER_DB_SSLROOTCERT override them."""
    monkeypatch.setenv(
        "CARRIER_DB_SECRET_ARN", _secret({"username": "u", "password": "p", "host": "db"})
    )
    package = resources.files("carrier_aws")
    bundled = b"".join((package / name).read_bytes() for name in CA_FILES)
    params = conninfo_to_dict(database_url())
    assert params["sslmode"] == "verify-full"
    assert Path(str(params["sslrootcert"])).read_bytes() == bundled
    Path(str(params["sslrootcert"])).unlink()  # the temporary folder was cleaned up
    again = conninfo_to_dict(database_url())["sslrootcert"]
    assert Path(str(again)).read_bytes() == bundled

    monkeypatch.setenv("CARRIER_DB_SSLROOTCERT", "/etc/our-ca.pem")
    params = conninfo_to_dict(database_url())
    assert (params["sslmode"], params["sslrootcert"]) == ("verify-full", "/etc/our-ca.pem")
    monkeypatch.delenv("CARRIER_DB_SSLROOTCERT")
    # Under `require`, libpq would verify the chain all the same if given a CA file.
    monkeypatch.setenv("CARRIER_DB_SSLMODE", "require")
    params = conninfo_to_dict(database_url())
    assert params["sslmode"] == "require" and "sslrootcert" not in params


def _certificates(name: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((resources.files("carrier_aws") / name).read_bytes())


def test_the_bundled_cas_are_amazon_s() -> None:
    """What a refreshed bundle must still hold: AWS's RDS CAs (among them the G1 roots, valid
    for decades, of the Regions), and Amazon Trust Services' four roots (RDS Proxy)."""

    def common_name(certificate: x509.Certificate) -> str:
        return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    rds = _certificates("rds-ca-bundle.pem")
    assert len(rds) > 100
    for certificate in rds:
        assert common_name(certificate).startswith("Amazon RDS ")
        issuer = certificate.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert str(issuer).startswith("Amazon RDS ")
    roots = {
        common_name(c): c.not_valid_after_utc
        for c in rds
        if common_name(c).endswith(" Root CA RSA2048 G1") and c.subject == c.issuer
    }
    for region in ("us-east-1", "eu-west-1", "ap-southeast-2", "il-central-1"):
        assert roots[f"Amazon RDS {region} Root CA RSA2048 G1"].year > 2060
    amazon = _certificates("amazon-root-ca.pem")
    assert [common_name(c) for c in amazon] == [f"Amazon Root CA {n}" for n in range(1, 5)]
    assert all(c.subject == c.issuer for c in amazon)


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """One Postgres serving TLS for the module: its port, and the throwaway CA that signed
    its certificate (for `localhost` only)."""
    binaries = postgres_with_tls()
    if binaries is None:
        # CI installs one (.ci/run): there, a missing one fails rather than skips.
        if os.environ.get("CI") == "true":
            pytest.fail("no PostgreSQL built with OpenSSL (.ci/run installs Debian's postgresql)")
        pytest.skip("no PostgreSQL built with OpenSSL here (apt-get install postgresql)")
    root = tmp_path_factory.mktemp("tls-postgres")
    tls = throwaway_tls(root, "localhost")
    ca_file, certificate, key = tls.ca_file, tls.certificate, tls.key
    postgres = PostgresProcess(root, binaries)
    postgres.serve_tls(certificate, key)
    postgres.start()
    try:
        yield postgres.port, ca_file
    finally:
        postgres.stop()


def _connect_with_the_secret(host: str, port: int, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Connect with the URL made from an RDS-shaped secret; whether the session is TLS."""
    login = {"username": "postgres", "password": "unused", "host": host, "port": port}
    monkeypatch.setenv("CARRIER_DB_SECRET_ARN", _secret({**login, "dbname": "postgres"}))
    with psycopg.connect(database_url(), connect_timeout=5) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row is not None
    return bool(row[0])


def test_verify_full_connects_to_a_server_whose_certificate_names_the_host(
    aws: None, tls_postgres: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, ca_file = tls_postgres
    monkeypatch.setenv("CARRIER_DB_SSLROOTCERT", str(ca_file))
    assert _connect_with_the_secret("localhost", port, monkeypatch) is True


def test_verify_full_refuses_a_certificate_no_bundled_ca_signed(
    aws: None, tls_postgres: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default only Amazon's CAs are trusted: the throwaway CA's certificate is refused."""
    port, _ = tls_postgres
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect_with_the_secret("localhost", port, monkeypatch)


def test_verify_full_refuses_a_certificate_for_another_host(
    aws: None, tls_postgres: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trusted CA is not enough: the certificate must name the host connected to."""
    port, ca_file = tls_postgres
    monkeypatch.setenv("CARRIER_DB_SSLROOTCERT", str(ca_file))
    with pytest.raises(psycopg.OperationalError, match=r'does not match host name "127\.0\.0\.1"'):
        _connect_with_the_secret("127.0.0.1", port, monkeypatch)
