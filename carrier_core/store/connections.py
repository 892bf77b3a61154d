"""Live WebSocket connections, each listening to one room of one agent, kept in Postgres.

A connection outlives the process that accepted it: in the cloud, API Gateway holds
the socket and every step of a turn runs in a Lambda of its own, so whoever has
something to say about a turn finds the room's connections here, and pushes to each
through the endpoint it was accepted on.

The token is checked once, at connect; what it allowed is kept on the row (tenant,
agent, and for an end user their subject as `sender`; an API key's connection has an
empty `sender` and names the sender in each message), so later frames need no token.
A connection opened with an API key is dropped from every lookup once the key is
revoked, and one opened with an end user's token once the token expires: it can
neither send nor hear anything more.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from psycopg.rows import DictRow

from carrier_core.store.base import StoreBase


class Connection(NamedTuple):
    """A WebSocket connection as stored; `carrier_core.auth.Principal.of_connection` says
    who sends on it."""

    id: str
    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    room_id: uuid.UUID
    #: The client's room key.
    room: str
    #: An end user's subject, who speaks as themselves; "" for an API key's connection.
    sender: str
    #: Where to push frames: the API Gateway Management API endpoint of its stage.
    endpoint: str
    #: The API key that opened it; None for an end user's token.
    key_id: uuid.UUID | None = None
    #: When the end user's token that opened it expires; None for an API key.
    expires_at: datetime | None = None
    connected_at: datetime | None = None


_COLUMNS = (
    "id, tenant_id, agent_id, room_id, room, sender, endpoint, key_id, expires_at, connected_at"
)
#: Leaves out connections whose API key has been revoked or whose end-user token has
#: expired (`c` is the connections table).
_LIVE = (
    "(c.key_id IS NULL OR EXISTS (SELECT 1 FROM api_keys k"
    " WHERE k.id = c.key_id AND k.revoked_at IS NULL))"
    " AND (c.expires_at IS NULL OR c.expires_at > now())"
)
_C_COLUMNS = ", ".join(f"c.{name.strip()}" for name in _COLUMNS.split(","))


def _connection(row: DictRow) -> Connection:
    return Connection(**row)


class ConnectionStore(StoreBase):
    """Live WebSocket connections, found by id, by turn and by room."""

    def add_connection(self, connection: Connection) -> Connection:
        """Store a connection; the same id again (a retried connect) replaces the row."""
        with self.connection() as conn:
            row = conn.execute(
                "INSERT INTO connections"
                " (id, tenant_id, agent_id, room_id, room, sender, endpoint, key_id, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
                " tenant_id = excluded.tenant_id, agent_id = excluded.agent_id,"
                " room_id = excluded.room_id, room = excluded.room, sender = excluded.sender,"
                " endpoint = excluded.endpoint, key_id = excluded.key_id,"
                f" expires_at = excluded.expires_at RETURNING {_COLUMNS}",
                (
                    connection.id,
                    connection.tenant_id,
                    connection.agent_id,
                    connection.room_id,
                    connection.room,
                    connection.sender,
                    connection.endpoint,
                    connection.key_id,
                    connection.expires_at,
                ),
            ).fetchone()
        assert row is not None
        return _connection(row)

    def live_connection(self, connection_id: str) -> Connection | None:
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_C_COLUMNS} FROM connections c WHERE c.id = %s AND {_LIVE}",
                (connection_id,),
            ).fetchone()
        return None if row is None else _connection(row)

    def remove_connection(self, connection_id: str) -> bool:
        """Forget a connection (closed, or gone when pushed to); False if it was not stored."""
        with self.connection() as conn:
            return (
                conn.execute("DELETE FROM connections WHERE id = %s", (connection_id,)).rowcount > 0
            )

    def turn_connections(self, turn_id: uuid.UUID) -> list[Connection]:
        """The connections listening to a turn's room, in one query (each step asks)."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_C_COLUMNS} FROM connections c JOIN turns t ON t.room_id = c.room_id"
                f" AND t.agent_id = c.agent_id WHERE t.id = %s AND {_LIVE}"
                " ORDER BY c.connected_at, c.id",
                (turn_id,),
            ).fetchall()
        return [_connection(row) for row in rows]

    def room_connections(self, agent_id: uuid.UUID, room_id: uuid.UUID) -> list[Connection]:
        """The connections listening to one room of an agent (where SEND_MESSAGE's messages
        are heard, beside the turn's own room)."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_C_COLUMNS} FROM connections c WHERE c.room_id = %s AND c.agent_id = %s"
                f" AND {_LIVE} ORDER BY c.connected_at, c.id",
                (room_id, agent_id),
            ).fetchall()
        return [_connection(row) for row in rows]
