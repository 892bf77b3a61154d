"""Versioned SQL migrations, safe to run again or at once.

Each file `NNNN_name.sql` runs in its own transaction; a transaction-scoped
advisory lock keeps two processes that start together from racing. Local runs
(`carrier chat`, `carrier dev`) migrate as they start; a deployed stack migrates once
per deploy (its `DatabaseMigrations` resource), and its functions only check, at cold
start, that the schema is not older than their code (`check_schema`).
"""

from __future__ import annotations

from importlib import resources

import psycopg

from carrier_core.store.database import DatabaseError, DatabaseUnavailable, unpooled_connection

_LOCK_KEY = 0x6361727269  # "carri"


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every bundled migration, in order."""
    found = []
    for item in resources.files("carrier_core.store").joinpath("migrations").iterdir():
        if item.name.endswith(".sql"):
            version, _, name = item.name.removesuffix(".sql").partition("_")
            found.append((int(version), name, item.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(url: str) -> list[int]:
    """Apply what is missing; returns the versions applied by this call."""
    conn = unpooled_connection(url, autocommit=False)
    applied: list[int] = []
    with conn:
        for version, name, sql in migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = %s", (version,)
                ).fetchone()
                if done:
                    continue
                try:
                    conn.execute(sql.encode())
                except psycopg.Error as exc:
                    raise DatabaseError(f"migration {version:04d}_{name} failed: {exc}") from exc
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
                )
                applied.append(version)
    return applied


def latest_version() -> int:
    """The newest bundled migration: the schema this code needs."""
    return migrations()[-1][0]


def check_schema(url: str) -> int:
    """The database's schema version, after checking it is not older than this code's;
    one cheap query, for a function's cold start. Raises `DatabaseError` naming both."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    except psycopg.errors.UndefinedTable:
        row = None
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from None
    found = int(row[0]) if row is not None and row[0] is not None else 0
    needed = latest_version()
    if found < needed:
        raise DatabaseError(
            f"the database's schema is at migration {found} and this code needs {needed}:"
            " run the migrations first (`carrier migrate`; a deployed stack runs them with"
            " its DatabaseMigrations resource on every deploy)"
        )
    return found
