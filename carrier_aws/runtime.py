"""One runtime per Lambda container, its database found from the environment.

`DATABASE_URL` wins when set. Otherwise the credentials come from the Secrets
Manager secret named by `CARRIER_DB_SECRET_ARN` (an RDS secret: username,
password, host, port, dbname), read through Powertools Parameters so warm
invocations reuse it; `CARRIER_DB_HOST` (an RDS Proxy endpoint) and
`CARRIER_DB_NAME` override the secret's host and database. The URL is never logged.

RDS rotates a managed master password (every 7 days by default): the pool asks for the
URL again for every new connection, and after a failed attempt the secret is read anew,
so a warm container follows the rotation instead of failing once its connections age out.
"""

from __future__ import annotations

import os
import threading

from psycopg.conninfo import make_conninfo

from carrier_core.config import Settings
from carrier_core.runtime import Runtime


class ConfigurationError(RuntimeError):
    """The function's environment does not say where the database is."""


def database_url(refresh: bool = False) -> str:
    """The database's URL; `refresh` reads the secret anew rather than from the cache."""
    explicit = os.environ.get("DATABASE_URL")
    if explicit:
        return explicit
    secret_arn = os.environ.get("CARRIER_DB_SECRET_ARN")
    if not secret_arn:
        raise ConfigurationError("set DATABASE_URL or CARRIER_DB_SECRET_ARN for the database")
    from aws_lambda_powertools.utilities import parameters

    secret = parameters.get_secret(secret_arn, transform="json", max_age=300, force_fetch=refresh)
    if not isinstance(secret, dict) or not {"username", "password"} <= secret.keys():
        raise ConfigurationError(
            "the database secret must be JSON with at least username and password"
        )
    host = os.environ.get("CARRIER_DB_HOST") or secret.get("host")
    if not host:
        raise ConfigurationError("no database host: set CARRIER_DB_HOST or put host in the secret")
    return make_conninfo(
        host=host,
        port=str(secret.get("port") or 5432),
        dbname=os.environ.get("CARRIER_DB_NAME") or secret.get("dbname") or "carrier",
        user=secret["username"],
        password=secret["password"],
        sslmode=os.environ.get("CARRIER_DB_SSLMODE", "require"),
    )


_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The container's runtime, opened on first use and kept while the container lives.

    One database connection, as a Lambda container runs one invocation at a time; the
    emulator, which runs many at once in one process, sets `CARRIER_POOL_SIZE`.
    """
    global _runtime
    with _lock:
        if _runtime is None:
            from carrier_aws.keys import load_model_keys

            load_model_keys()  # model provider keys from Secrets Manager, if configured
            pool_size = int(os.environ.get("CARRIER_POOL_SIZE") or 1)
            settings = Settings(database_url=database_url(), pool_size=pool_size)
            _runtime = Runtime.open(settings, login=database_url)
        return _runtime


def close_runtime() -> None:
    """Close the container's runtime, if open (the emulator does, when it starts and stops)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            try:
                _runtime.close()
            finally:
                _runtime = None
