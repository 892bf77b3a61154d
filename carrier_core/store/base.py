"""What every area of the store shares: the pool, transactions, and the SQL helpers.

Each data area (`turns`, `memories`, `agents`, `usage`, ...) is a class of named
queries over this base; `carrier_core.store.store.Store` combines them into the one
object callers hold. SQL is written one way in all of them: text with `%s` (or
`%(name)s`) parameters, column lists from module constants, rows turned into
dataclasses by the module that owns the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import psycopg
from pgvector import Vector
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool, PoolTimeout

from carrier_core.store.database import DatabaseUnavailable, PoolHealth, RoundTrips

EMBEDDING_DIMENSIONS = 384


class NotFound(LookupError):
    """A row the caller named by id does not exist."""


class EmbeddingSizeError(ValueError):
    """An embedding whose length does not fit the stored vector column."""


def entity_name(alias: str) -> str:
    """SQL for what the entity row `alias` is called: the name it asked for in conversation
    (stored by reflection in its metadata), else its newest display name (`Entity.name`)."""
    return f"coalesce({alias}.metadata->>'name', {alias}.names[1])"


def where(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """The AND of the conditions whose value is given (not None), with those values: for
    the optional filters of a page query. Each condition holds one `%s`."""
    chosen = [(sql, value) for sql, value in conditions if value is not None]
    return " AND ".join(sql for sql, _ in chosen), [value for _, value in chosen]


class StoreBase:
    """A connection pool, the transaction a block of calls shares, and the size of the
    stored vectors (which writes of several areas check). Safe to share between threads."""

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[DictRow]],
        round_trips: RoundTrips,
        health: PoolHealth,
    ):
        self._pool = pool
        self.round_trips = round_trips
        self._health = health
        self._dimensions: int | None = None
        self._atomic: ContextVar[psycopg.Connection[DictRow] | None] = ContextVar(
            f"carrier-store-{id(self)}", default=None
        )

    def close(self) -> None:
        self._pool.close()

    def ping(self) -> None:
        """One trivial statement: raises if the database cannot be reached (health checks)."""
        with self.connection() as conn:
            conn.execute("SELECT 1")

    @property
    def embedding_dimensions(self) -> int:
        """The size of the stored vector column (384 unless `carrier reembed` changed it)."""
        if self._dimensions is None:
            with self.connection() as conn:
                row = conn.execute(
                    "SELECT atttypmod FROM pg_attribute"
                    " WHERE attrelid = 'memories'::regclass AND attname = 'embedding'"
                ).fetchone()
            self._dimensions = int(row["atttypmod"]) if row else EMBEDDING_DIMENSIONS
        return self._dimensions

    def _vector(self, embedding: Sequence[float]) -> Vector:
        if len(embedding) != self.embedding_dimensions:
            raise EmbeddingSizeError(
                f"embedding has {len(embedding)} dimensions; the memories table stores "
                f"{self.embedding_dimensions}. Run `carrier reembed` after changing the"
                " embedding model"
            )
        return Vector([float(x) for x in embedding])

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Run the store calls inside this block in one transaction, on one connection.

        A step writes its result and its history row together: one commit instead of
        several, and never the one without the other. Other threads are unaffected.
        """
        if self._atomic.get() is not None:
            yield
            return
        with self._pooled() as conn, conn.transaction():
            self.round_trips.add(2)
            token = self._atomic.set(conn)
            try:
                yield
            finally:
                self._atomic.reset(token)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[DictRow]]:
        """The connection of the surrounding `atomic` block, else a pooled one in
        autocommit mode, where each statement commits on its own."""
        current = self._atomic.get()
        if current is not None:
            yield current
            return
        with self._pooled() as conn:
            yield conn

    @contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A pooled connection; a lost server, or none to be had in time, is
        `DatabaseUnavailable` (the pool drops the broken connection itself)."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self._health.failed()
            raise DatabaseUnavailable(f"the database is unavailable: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A transaction, for statements that must commit together."""
        with self.atomic(), self.connection() as conn:
            yield conn
