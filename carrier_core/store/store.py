"""Every read and write a turn makes, as named queries over one connection pool.

The steps hold no state between calls: what one step learns, it writes here,
and the next step (perhaps in another Lambda) reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
from pgvector import Vector
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from carrier_core.attachments import DESCRIBED
from carrier_core.character import Character, parse_character
from carrier_core.config import Settings
from carrier_core.memory import Content, Memory, MemoryKind, ScoredMemory
from carrier_core.store.database import (
    DatabaseUnavailable,
    Login,
    PoolHealth,
    RoundTrips,
    database_url,
    open_pool,
)
from carrier_core.store.migrate import check_schema, migrate
from carrier_core.world import LOCAL_TENANT_ID, Entity, Relationship, Room, RoomKind, World

EMBEDDING_DIMENSIONS = 384

#: Turn statuses of a turn its room still owes an answer (see `carrier_core.turn.schedule`).
UNFINISHED = ("queued", "running", "retrying")
#: The same as SQL, written out so the planner can use the index on unfinished turns.
UNFINISHED_SQL = "('queued', 'running', 'retrying')"


class NotFound(LookupError):
    """A row the caller named by id does not exist."""


class AgentConflict(ValueError):
    """An agent id that another tenant already uses, or a handle the tenant gave to an
    agent of another id."""


class EmbeddingSizeError(ValueError):
    """An embedding whose length does not fit the stored vector column."""


@dataclass(frozen=True)
class TurnRecord:
    id: uuid.UUID
    agent_id: uuid.UUID
    room_id: uuid.UUID
    message_id: uuid.UUID
    status: str
    steps_taken: int
    decision: dict[str, Any] | None
    state: dict[str, Any]
    error: str | None
    updated_at: datetime
    #: How many runners took the turn up (see `carrier_core.turn.schedule`).
    attempts: int = 0
    #: For a coalesced turn: the turn whose reply answered its message too.
    answered_by: uuid.UUID | None = None


@dataclass(frozen=True)
class AgentRecord:
    id: uuid.UUID
    tenant_id: uuid.UUID
    handle: str
    name: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RoomRecord:
    id: uuid.UUID
    agent_id: uuid.UUID
    name: str
    kind: str
    source: str
    created_at: datetime
    messages: int


@dataclass(frozen=True)
class TurnStep:
    """One row of a turn's history, with when the step started and ended."""

    step: str
    key: str | None
    status: str
    detail: dict[str, Any]
    model_calls: int
    input_tokens: int
    output_tokens: int
    started_at: datetime
    finished_at: datetime

    @property
    def duration_ms(self) -> int:
        return max(0, round((self.finished_at - self.started_at).total_seconds() * 1000))


@dataclass
class NamedMessage:
    """A message with the name of who said it, as prompts show it."""

    memory: Memory
    speaker: str


@dataclass
class StepUsage:
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepRecord:
    """One row of a turn's history, as a step writes it."""

    step: str
    status: str
    started_at: datetime
    usage: StepUsage
    #: Identifies a run of the step within its turn, so a retry finds it (e.g. act:1:0).
    key: str | None = None
    #: The step's model calls, written to the usage ledger with the step.
    calls: tuple[ModelCall, ...] = ()


# Ledger rows from a JSON array of `ModelCall`s: any number of calls in one statement.
_INSERT_CALLS = (
    "INSERT INTO model_calls (agent_id, turn_id, step, provider, model, role, task,"
    " status, error, input_tokens, output_tokens, latency_ms, cost_usd)"
    " SELECT agent_id, turn_id, step, provider, model, role, task, status, error,"
    " input_tokens, output_tokens, latency_ms, cost_usd FROM jsonb_to_recordset(%s) AS x("
    "agent_id uuid, turn_id uuid, step text, provider text, model text, role text, task text,"
    " status text, error text, input_tokens int, output_tokens int, latency_ms int,"
    " cost_usd float8)"
)
# A step's history row and its ledger rows, in one statement: one commit, never one alone.
_INSERT_STEP = (
    f"c AS ({_INSERT_CALLS})"
    " INSERT INTO turn_steps (turn_id, step, key, status, detail, model_calls, input_tokens,"
    " output_tokens, started_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (turn_id, key) WHERE key IS NOT NULL DO NOTHING"
)


def _calls(calls: Sequence[ModelCall]) -> Jsonb:
    rows = [dataclasses.asdict(call) for call in calls]
    return Jsonb(rows, dumps=lambda obj: json.dumps(obj, default=str))


def _step_params(turn_id: uuid.UUID, record: StepRecord) -> tuple[Any, ...]:
    usage = record.usage
    return (
        _calls(record.calls),
        turn_id,
        record.step,
        record.key,
        record.status,
        Jsonb(usage.detail),
        usage.model_calls,
        usage.input_tokens,
        usage.output_tokens,
        record.started_at,
    )


@dataclass(frozen=True)
class ModelCall:
    """One row of the usage ledger."""

    agent_id: uuid.UUID
    provider: str
    model: str
    role: str
    status: str = "ok"
    turn_id: uuid.UUID | None = None
    step: str | None = None
    task: str | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class TurnEnd:
    """A turn that has just ended, as its metrics report it."""

    message_id: uuid.UUID
    status: str
    #: From the message's arrival (the turn was stored with it) to the turn's end.
    seconds: float
    model_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    #: The plugins its agent's character names (for the events of its end: read with it).
    plugins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Conversation:
    """What a decide step's providers show of the conversation, read with its scene."""

    #: The recent messages as they stood for the turn's message, oldest first.
    recent: list[NamedMessage]
    #: The room's members, in the order they joined.
    people: list[Entity]
    #: The sender's known relationships, newest first: (source, target, tags).
    relationships: list[tuple[str, str, list[str]]]


@dataclass(frozen=True)
class Scene:
    """What a step starts from (`Store.turn_scene`)."""

    turn: TurnRecord
    message: Memory
    character: Character
    room: Room
    #: The sender's name, as the agent knows them.
    sender: str
    #: The act step's record when the action asked for ran already; None otherwise.
    done: TurnStep | None = None
    #: Messages from others since the room's reflection bookmark, when asked for.
    unreflected: int | None = None
    #: What a decide step shows of the conversation, when asked for.
    conversation: Conversation | None = None


@dataclass(frozen=True)
class Accepted:
    """What taking a message in did (`Store.accept_message`)."""

    #: The sender joined the room now (its first message there).
    joined: bool
    #: The new turn; None when the message's dedupe key was seen before.
    turn_id: uuid.UUID | None
    #: The room's runner this claimed (its generation); None: another holds the room.
    runner_generation: int | None
    #: The plugins its agent's character names (for the events of ingest).
    plugins: tuple[str, ...]


@dataclass(frozen=True)
class StartedTurn:
    """A message's turn as ingest finds it."""

    id: uuid.UUID
    #: Made now (not found: the message came before).
    created: bool
    status: str
    #: The plugins its agent's character names (for the events of ingest: read with it).
    plugins: tuple[str, ...]


#: The plugin names of a turn's agent, for a RETURNING or SELECT over `turns`.
_AGENT_PLUGINS = (
    "(SELECT coalesce(array(SELECT jsonb_array_elements_text(CASE WHEN"
    " jsonb_typeof(a.character -> 'plugins') = 'array' THEN a.character -> 'plugins'"
    " ELSE '[]' END)), '{}') FROM agents a WHERE a.id = turns.agent_id) AS plugins"
)


@dataclass(frozen=True)
class UsageRow:
    """Totals of one agent on one day (UTC)."""

    agent: str
    day: date
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


def entity_name(alias: str) -> str:
    """SQL for what the entity row `alias` is called: the name it asked for in conversation
    (stored by reflection in its metadata), else its newest display name (`Entity.name`)."""
    return f"coalesce({alias}.metadata->>'name', {alias}.names[1])"


def _recent_rows(room: str, cutoff: str) -> str:
    """SQL of a room's last messages, newest first, each with its speaker (`LIMIT %s` is
    the one parameter): read alone (`Store.recent_messages`) or with a decide step's scene.
    `room` is the room's id as SQL, `cutoff` more conditions on `rm`."""
    columns = ", ".join(f"rm.{c.strip()}" for c in _MEMORY_COLUMNS.split(","))
    return (
        f"SELECT {columns}, coalesce({entity_name('re')}, ra.name, 'someone') AS speaker"
        " FROM memories rm LEFT JOIN entities re ON re.id = rm.entity_id"
        " LEFT JOIN agents ra ON ra.id = rm.entity_id"
        f" WHERE rm.room_id = {room} AND rm.kind = 'message'{cutoff}"
        " ORDER BY rm.seq DESC LIMIT %s"
    )


def _people_rows(room: str) -> str:
    """SQL of a room's members, in the order they joined (`joined_at`)."""
    return (
        "SELECT pe.id, pe.agent_id, pe.names, pe.metadata, pp.joined_at FROM participants pp"
        f" JOIN entities pe ON pe.id = pp.entity_id WHERE pp.room_id = {room}"
        " ORDER BY pp.joined_at"
    )


def _relationship_rows(agent: str, entity: str) -> str:
    """SQL of an agent's known relationships of one person, newest first (`LIMIT %s`)."""
    return (
        f"SELECT {entity_name('rs')} AS source,"
        f" coalesce({entity_name('rt')}, rta.name) AS target, rr.tags, rr.updated_at"
        " FROM relationships rr JOIN entities rs ON rs.id = rr.source_entity_id"
        " LEFT JOIN entities rt ON rt.id = rr.target_entity_id"
        " LEFT JOIN agents rta ON rta.id = rr.target_entity_id"
        f" WHERE rr.agent_id = {agent} AND {entity} IN (rr.source_entity_id, rr.target_entity_id)"
        " ORDER BY rr.updated_at DESC LIMIT %s"
    )


#: How many relationships of the sender a prompt shows.
RELATIONSHIPS_SHOWN = 10


def _named(rows: Sequence[Any]) -> list[NamedMessage]:
    return [NamedMessage(_memory(row), row["speaker"]) for row in rows]


def _relationship(row: Any) -> tuple[str, str, list[str]]:
    return (row["source"], row["target"] or "someone", list(row["tags"]))


def where(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """The AND of the conditions whose value is given (not None), with those values: for
    the optional filters of a page query. Each condition holds one `%s`."""
    chosen = [(sql, value) for sql, value in conditions if value is not None]
    return " AND ".join(sql for sql, _ in chosen), [value for _, value in chosen]


def _memory(row: DictRow) -> Memory:
    embedding = row.get("embedding")
    return Memory(
        id=row["id"],
        agent_id=row["agent_id"],
        entity_id=row["entity_id"],
        room_id=row["room_id"],
        world_id=row["world_id"],
        kind=MemoryKind(row["kind"]),
        content=Content.model_validate(row["content"]),
        embedding=None if embedding is None else [float(x) for x in embedding.to_list()],
        created_at=row["created_at"],
        seq=row["seq"],
        dedupe_key=row["dedupe_key"],
        metadata=row["metadata"],
    )


#: Knowledge bases up to this many fragments are searched exactly (read whole and sorted);
#: larger ones walk the fragments' HNSW index. At 1M memories on 2 cores, an exact search of
#: 2,000 fragments takes a few milliseconds, and above it the walk's recall stays >= 0.95
#: (bench/recall_scale.py).
EXACT_KNOWLEDGE_UP_TO = 2000

#: Recall other than knowledge (facts about a person, a room's earlier messages, the API's
#: search) compares the query with the newest this many memories its filter matches: exact
#: within them, and a bounded cost however long a room's history grows.
SEARCH_WINDOW = 5000


def agent_id_in(ref: str | uuid.UUID) -> uuid.UUID | None:
    """The id `ref` spells, or None if it is a handle (a handle is not a UUID)."""
    if isinstance(ref, uuid.UUID):
        return ref
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


def no_agent(ref: str | uuid.UUID) -> NotFound:
    """The error for an agent that is not there (or not the caller's), named as asked."""
    agent_id = agent_id_in(ref)
    return NotFound(f"no agent with id {agent_id}" if agent_id else f"no agent with handle {ref!r}")


_AGENT_COLUMNS = "id, tenant_id, handle, name, created_at, updated_at"
_STEP_COLUMNS = (
    "step, key, status, detail, model_calls, input_tokens, output_tokens, started_at, finished_at"
)

_MEMORY_COLUMNS = (
    "id, seq, agent_id, entity_id, room_id, world_id, kind, content, dedupe_key, metadata,"
    " created_at"
)

#: The same, of `memories m` in a join.
_M_MEMORY_COLUMNS = ", ".join(f"m.{c.strip()}" for c in _MEMORY_COLUMNS.split(","))


@dataclass(frozen=True)
class Search:
    """One semantic search of an agent's memories (`Store.search_together`)."""

    kinds: tuple[MemoryKind, ...]
    count: int
    threshold: float
    room_id: uuid.UUID | None = None
    entity_id: uuid.UUID | None = None
    #: (message, N): only what was stored before the N messages of the message's room
    #: that end with it (the prompt shows those already).
    before_recent: tuple[Memory, int] | None = None


def _search_sql(vector: Any, agent_id: uuid.UUID, search: Search) -> tuple[str, list[Any]]:
    """The SQL of one search and its parameters (see `Store.search_memories` for how)."""
    if (
        list(search.kinds) == [MemoryKind.FRAGMENT]
        and search.room_id is None
        and search.entity_id is None
        and search.before_recent is None
    ):
        return _knowledge_sql(vector, agent_id, search.count)
    filters = ["agent_id = %s", "embedding IS NOT NULL"]
    params: list[Any] = [agent_id]
    if len(search.kinds) == 1:  # `kind = %s` lets the room index give rows in seq order
        filters.append("kind = %s")
        params.append(search.kinds[0].value)
    else:
        filters.append("kind = ANY(%s)")
        params.append([k.value for k in search.kinds])
    if search.room_id is not None:
        filters.append("room_id = %s")
        params.append(search.room_id)
    if search.entity_id is not None:
        filters.append("entity_id = %s")
        params.append(search.entity_id)
    if search.before_recent is not None:
        message, recent = search.before_recent
        filters.append(
            "seq < coalesce((SELECT seq FROM memories WHERE room_id = %s AND kind = 'message'"
            " AND seq <= %s ORDER BY seq DESC OFFSET %s LIMIT 1), 0)"
        )
        params.extend([message.room_id, message.seq, max(recent - 1, 0)])
    query = (
        f"WITH candidates AS MATERIALIZED (SELECT {_MEMORY_COLUMNS}, embedding FROM memories"
        f" WHERE {' AND '.join(filters)} ORDER BY seq DESC LIMIT %s)"
        f" SELECT {_MEMORY_COLUMNS}, 1 - (embedding <=> %s) AS similarity FROM candidates"
        " ORDER BY embedding <=> %s LIMIT %s"
    )
    return query, [*params, SEARCH_WINDOW, vector, vector, search.count]


def _knowledge_sql(vector: Any, agent_id: uuid.UUID, count: int) -> tuple[str, list[Any]]:
    """An agent's nearest fragments, in one statement that picks its way by the size of
    the knowledge base, not by the planner's estimate: up to `EXACT_KNOWLEDGE_UP_TO`
    fragments are read whole and sorted (exact; MATERIALIZED keeps any HNSW index out),
    a larger base walks the fragments' own index (migration 0009). Left to the planner,
    a walk of the global index, filtered afterwards, can miss most of a small base
    (bench/recall_scale.py). The branch not taken costs nothing: its condition has no
    column, so Postgres checks it once before scanning."""
    fragment = "agent_id = %s AND kind = 'fragment' AND embedding IS NOT NULL"
    scored = f"{_MEMORY_COLUMNS}, 1 - (embedding <=> %s) AS similarity"
    exact = EXACT_KNOWLEDGE_UP_TO
    query = (
        "WITH size AS MATERIALIZED (SELECT count(*) AS n FROM (SELECT 1 FROM memories"
        " WHERE agent_id = %s AND kind = 'fragment' LIMIT %s + 1) f),"
        f" whole AS MATERIALIZED (SELECT {_MEMORY_COLUMNS}, embedding FROM memories"
        f" WHERE {fragment} AND (SELECT n FROM size) <= %s)"
        f" SELECT * FROM ((SELECT {scored} FROM whole"
        " ORDER BY embedding <=> %s LIMIT %s)"
        f" UNION ALL (SELECT {scored} FROM memories"
        f" WHERE {fragment} AND (SELECT n FROM size) > %s"
        " ORDER BY embedding <=> %s LIMIT %s)) found"
        # The index walk may return near-ties out of order (iterative_scan relaxed_order).
        " ORDER BY similarity DESC"
    )
    params = [
        agent_id,
        exact,  # size
        agent_id,
        exact,  # whole
        vector,
        vector,
        count,  # exact branch
        vector,
        agent_id,
        exact,
        vector,
        count,  # index branch
    ]
    return query, params


class Store:
    """Postgres-backed state of all agents. Safe to share between threads."""

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

    @classmethod
    def open(cls, settings: Settings, login: Login | None = None) -> Store:
        """Connect (starting the embedded Postgres if no URL is set) and migrate, or only
        check the schema when `settings.migrate_on_start` is off. A `login` is asked where
        to connect for every new connection, instead of the settings."""
        url: str | Login = login if login is not None else database_url(settings)
        first = url(False) if callable(url) else url
        if settings.migrate_on_start:
            migrate(first)
        else:
            check_schema(first)
        round_trips = RoundTrips()
        health = PoolHealth()
        pool = open_pool(
            url,
            size=settings.pool_size,
            round_trips=round_trips,
            prepared_statements=settings.prepared_statements,
            health=health,
            timeout_s=settings.pool_timeout_s,
        )
        return cls(pool, round_trips, health)

    def close(self) -> None:
        self._pool.close()

    # -- embeddings -----------------------------------------------------------

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

    def resize_embeddings(self, dimensions: int) -> None:
        """Change the vector column's size. Every stored embedding is dropped (they belong
        to the old model) and the fragments' HNSW index is rebuilt on the empty column."""
        with self.transaction() as conn:
            conn.execute("DROP INDEX IF EXISTS memories_fragment_embedding")
            conn.execute(
                f"ALTER TABLE memories ALTER COLUMN embedding TYPE vector({int(dimensions)})"
                " USING NULL".encode()
            )
            conn.execute(
                "CREATE INDEX memories_fragment_embedding ON memories"
                " USING hnsw (embedding vector_cosine_ops) WHERE kind = 'fragment'"
            )
        self._dimensions = int(dimensions)

    def memories_after(
        self, agent_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[tuple[uuid.UUID, int, str]]:
        """(id, seq, text) of an agent's memories after `after_seq`, in store order."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT id, seq, content->>'text' AS text FROM memories"
                " WHERE agent_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (agent_id, after_seq, limit),
            ).fetchall()
        return [(row["id"], row["seq"], row["text"] or "") for row in rows]

    def count_memories(self, agent_id: uuid.UUID) -> dict[MemoryKind, int]:
        """The agent's memories of each kind (kinds it has none of are left out)."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT kind, count(*) AS n FROM memories WHERE agent_id = %s GROUP BY kind",
                (agent_id,),
            ).fetchall()
        return {MemoryKind(row["kind"]): int(row["n"]) for row in rows}

    def agents(self) -> list[AgentRecord]:
        """Every tenant's agents (the command line's view of a database), by handle."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY handle, created_at".encode()
            ).fetchall()
        return [AgentRecord(**row) for row in rows]

    def reset_memory(self, agent_id: uuid.UUID) -> int:
        """Forget what the agent learned by talking: its rooms with their messages and turns,
        its facts, relationships, the people and worlds it met. Its character, knowledge
        documents, webhooks and keys stay. Returns the number of memories deleted."""
        with self.transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM memories WHERE agent_id = %s AND kind NOT IN ('document', 'fragment')",
                (agent_id,),
            ).rowcount
            for table in ("rooms", "relationships", "worlds"):
                conn.execute(f"DELETE FROM {table} WHERE agent_id = %s".encode(), (agent_id,))
            conn.execute(
                "DELETE FROM entities WHERE agent_id = %s AND id <> %s", (agent_id, agent_id)
            )
        return deleted

    # -- the usage ledger -----------------------------------------------------

    def record_model_calls(self, calls: Sequence[ModelCall]) -> None:
        """Ledger rows for calls made outside a step's record (failures, embedding runs)."""
        if calls:
            with self.connection() as conn:
                conn.execute(_INSERT_CALLS, (_calls(calls),))

    def spent_today(self, agent_id: uuid.UUID) -> float:
        """The agent's estimated model spend since midnight UTC, in dollars."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(cost_usd), 0) AS spent FROM model_calls"
                " WHERE agent_id = %s AND created_at >= date_trunc('day', now() AT TIME ZONE"
                " 'UTC') AT TIME ZONE 'UTC'",
                (agent_id,),
            ).fetchone()
        return float(row["spent"]) if row else 0.0

    def model_calls(self, turn_id: uuid.UUID) -> list[ModelCall]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT agent_id, provider, model, role, status, turn_id, step, task, error,"
                " input_tokens, output_tokens, latency_ms, cost_usd FROM model_calls"
                " WHERE turn_id = %s ORDER BY id",
                (turn_id,),
            ).fetchall()
        return [ModelCall(**row) for row in rows]

    def usage(self, *, agent: str | None = None, days: int = 7) -> list[UsageRow]:
        """Totals per agent and day (UTC) over the last `days` days, newest first.
        `agent` is an agent's handle, name or id."""
        filters = ["c.created_at >= now() - make_interval(days => %s)"]
        params: list[Any] = [days]
        if agent:
            filters.append("(a.handle = %s OR a.name = %s OR a.id::text = %s)")
            params.extend([agent, agent, agent])
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT a.name AS agent, (c.created_at AT TIME ZONE 'UTC')::date AS day,"
                " count(*) AS calls, count(*) FILTER (WHERE c.status = 'error') AS errors,"
                " sum(c.input_tokens) AS input_tokens, sum(c.output_tokens) AS output_tokens,"
                " sum(c.cost_usd) AS cost_usd"
                " FROM model_calls c JOIN agents a ON a.id = c.agent_id"
                f" WHERE {' AND '.join(filters)}"
                " GROUP BY a.name, day ORDER BY day DESC, a.name".encode(),
                params,
            ).fetchall()
        return [
            UsageRow(
                agent=row["agent"],
                day=row["day"],
                calls=int(row["calls"]),
                errors=int(row["errors"]),
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                cost_usd=float(row["cost_usd"]),
            )
            for row in rows
        ]

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

    # -- agents ---------------------------------------------------------------

    def save_agent(
        self,
        character: Character,
        tenant_id: uuid.UUID = LOCAL_TENANT_ID,
        *,
        handle: str | None = None,
    ) -> uuid.UUID:
        """Store or update an agent of `tenant_id`, found by its handle (the character's
        unless given), else by the character's id; a stored agent keeps its handle.

        Raises `AgentConflict` if the id is another tenant's (a character file's `id` must
        not reach across tenants), or if the handle is the tenant's agent of another id."""
        handle = handle or character.handle
        with self.connection() as conn:
            row = conn.execute(
                "SELECT id FROM agents WHERE tenant_id = %s AND handle = %s", (tenant_id, handle)
            ).fetchone()
            agent_id = character.agent_id if row is None else row["id"]
            if character.id is not None and character.id != agent_id:
                raise AgentConflict(
                    f"handle {handle!r} is agent {agent_id}, not the character's id {character.id}"
                )
            try:
                changed = conn.execute(
                    "INSERT INTO agents (id, tenant_id, handle, name, character)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                    " character = excluded.character, updated_at = now()"
                    " WHERE agents.tenant_id = excluded.tenant_id"
                    " AND agents.character IS DISTINCT FROM excluded.character",
                    (agent_id, tenant_id, handle, character.name, Jsonb(character.to_document())),
                ).rowcount
            except psycopg.errors.UniqueViolation:
                # Another writer gave the handle to a new agent since it was looked up.
                raise AgentConflict(f"handle {handle!r} was just taken by another agent") from None
            if not changed:
                row = conn.execute(
                    "SELECT tenant_id FROM agents WHERE id = %s", (agent_id,)
                ).fetchone()
                if row is not None and row["tenant_id"] != tenant_id:
                    raise AgentConflict(f"agent id {agent_id} belongs to another tenant")
        return agent_id

    def agent_record(self, agent_id: uuid.UUID) -> AgentRecord:
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents WHERE id = %s".encode(), (agent_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no agent with id {agent_id}")
        return AgentRecord(**row)

    def tenant_agent(self, tenant_id: uuid.UUID, ref: str | uuid.UUID) -> AgentRecord:
        """The tenant's agent with this id or handle; `NotFound` if none (another tenant's
        agent is not found either, so ids cannot be probed across tenants)."""
        agent_id = agent_id_in(ref)
        missing = no_agent(ref)
        try:
            if agent_id is None:
                return self.agent_by_handle(tenant_id, str(ref))
            agent = self.agent_record(agent_id)
        except NotFound:
            raise missing from None
        if agent.tenant_id != tenant_id:
            raise missing
        return agent

    def agent_by_handle(self, tenant_id: uuid.UUID, handle: str) -> AgentRecord:
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents"
                " WHERE tenant_id = %s AND handle = %s".encode(),
                (tenant_id, handle),
            ).fetchone()
        if row is None:
            raise NotFound(f"no agent with handle {handle!r}")
        return AgentRecord(**row)

    def tenant_agents(
        self,
        tenant_id: uuid.UUID,
        *,
        limit: int,
        after: uuid.UUID | None = None,
        only: frozenset[uuid.UUID] | None = None,
    ) -> list[AgentRecord]:
        """A page of a tenant's agents in id order (keyset pagination: `after` the last id)."""
        filters, params = where(
            ("tenant_id = %s", tenant_id),
            ("id > %s", after),
            ("id = ANY(%s)", None if only is None else list(only)),
        )
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents"
                f" WHERE {filters} ORDER BY id LIMIT %s".encode(),
                [*params, limit],
            ).fetchall()
        return [AgentRecord(**row) for row in rows]

    def delete_agent(self, agent_id: uuid.UUID) -> bool:
        """Delete an agent and, by cascade, its rooms, memories, turns and hooks."""
        with self.connection() as conn:
            return conn.execute("DELETE FROM agents WHERE id = %s", (agent_id,)).rowcount > 0

    def character(self, agent_id: uuid.UUID) -> Character:
        with self.connection() as conn:
            row = conn.execute("SELECT character FROM agents WHERE id = %s", (agent_id,)).fetchone()
        if row is None:
            raise NotFound(f"no agent with id {agent_id}")
        return parse_character(row["character"], source=f"agent {agent_id}")

    # -- who and where --------------------------------------------------------

    def set_room_metadata(self, room_id: uuid.UUID, key: str, value: Any) -> None:
        """Set one key of a room's metadata (None removes it), leaving the others as they are."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE rooms SET metadata = CASE WHEN %(value)s::jsonb IS NULL"
                " THEN metadata - %(key)s ELSE jsonb_set(metadata, ARRAY[%(key)s], %(value)s)"
                " END WHERE id = %(id)s",
                {"id": room_id, "key": key, "value": None if value is None else Jsonb(value)},
            )

    def room(self, room_id: uuid.UUID) -> Room:
        with self.connection() as conn:
            row = conn.execute(
                "SELECT id, agent_id, world_id, name, kind, source, metadata FROM rooms"
                " WHERE id = %s",
                (room_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no room with id {room_id}")
        return Room(**{**row, "kind": RoomKind(row["kind"])})

    def agent_rooms(
        self,
        agent_id: uuid.UUID,
        *,
        limit: int,
        after: uuid.UUID | None = None,
        room_id: uuid.UUID | None = None,
    ) -> list[RoomRecord]:
        """A page of an agent's rooms in id order (or the one room), with message counts."""
        filters, params = where(
            ("r.agent_id = %s", agent_id), ("r.id > %s", after), ("r.id = %s", room_id)
        )
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT r.id, r.agent_id, r.name, r.kind, r.source, r.created_at,"
                " (SELECT count(*) FROM memories m WHERE m.room_id = r.id"
                " AND m.kind = 'message') AS messages FROM rooms r"
                f" WHERE {filters} ORDER BY r.id LIMIT %s".encode(),
                [*params, limit],
            ).fetchall()
        return [RoomRecord(**row) for row in rows]

    def delete_room(self, room_id: uuid.UUID) -> bool:
        """Forget a room: its messages and turns go with it (facts about people stay)."""
        with self.connection() as conn:
            return conn.execute("DELETE FROM rooms WHERE id = %s", (room_id,)).rowcount > 0

    def participants(self, room_id: uuid.UUID) -> list[Entity]:
        with self.connection() as conn:
            rows = conn.execute(_people_rows("%s"), (room_id,)).fetchall()
        return [Entity(**row) for row in rows]

    def save_relationship(self, relationship: Relationship) -> None:
        with self.connection() as conn:
            conn.execute(
                "INSERT INTO relationships (agent_id, source_entity_id, target_entity_id, tags,"
                " metadata) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (agent_id, source_entity_id, target_entity_id) DO UPDATE SET"
                " tags = ARRAY(SELECT DISTINCT unnest(relationships.tags || excluded.tags)),"
                " metadata = relationships.metadata || excluded.metadata, updated_at = now()",
                (
                    relationship.agent_id,
                    relationship.source_entity_id,
                    relationship.target_entity_id,
                    relationship.tags,
                    Jsonb(relationship.metadata),
                ),
            )

    def world(self, world_id: uuid.UUID) -> World:
        with self.connection() as conn:
            row = conn.execute(
                "SELECT id, agent_id, name, metadata FROM worlds WHERE id = %s", (world_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no world with id {world_id}")
        return World(**row)

    def set_world_role(self, world_id: uuid.UUID, entity_id: uuid.UUID, role: str) -> None:
        with self.connection() as conn:
            conn.execute(
                "UPDATE worlds SET metadata = jsonb_set(metadata, '{roles}',"
                " coalesce(metadata->'roles', '{}') || jsonb_build_object(%s::text, %s::text))"
                " WHERE id = %s",
                (str(entity_id), role, world_id),
            )

    def set_world_settings(self, world_id: uuid.UUID, values: dict[str, Any]) -> None:
        """Set some of a world's settings (its metadata's `settings`), keeping the others."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE worlds SET metadata = jsonb_set(metadata, '{settings}',"
                " coalesce(metadata->'settings', '{}') || %s) WHERE id = %s",
                (Jsonb(values), world_id),
            )

    def update_entity_metadata(self, entity_id: uuid.UUID, fields: dict[str, Any]) -> None:
        """Merge fields into what the agent knows of someone (ElizaOS's UPDATE_ENTITY)."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE entities SET metadata = metadata || %s WHERE id = %s",
                (Jsonb(fields), entity_id),
            )

    def name_entity(self, entity_id: uuid.UUID, name: str) -> None:
        """Call someone by the name they gave in conversation ("my name is Grace"), whatever
        display name their messages come with."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE entities SET metadata = metadata || jsonb_build_object('name', %s::text)"
                " WHERE id = %s",
                (name, entity_id),
            )

    def relationships_of(
        self, agent_id: uuid.UUID, entity_id: uuid.UUID, limit: int = RELATIONSHIPS_SHOWN
    ) -> list[tuple[str, str, list[str]]]:
        """The agent's known relationships of one person, newest first: (source's name,
        target's name, tags)."""
        with self.connection() as conn:
            rows = conn.execute(
                _relationship_rows("%s", "%s"), (agent_id, entity_id, limit)
            ).fetchall()
        return [_relationship(row) for row in rows]

    def relationships(self, agent_id: uuid.UUID) -> list[Relationship]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT agent_id, source_entity_id, target_entity_id, tags, metadata"
                " FROM relationships WHERE agent_id = %s",
                (agent_id,),
            ).fetchall()
        return [Relationship(**row) for row in rows]

    # -- memories -------------------------------------------------------------

    def add_memory(
        self, memory: Memory, *, turn_id: uuid.UUID | None = None
    ) -> tuple[Memory, bool]:
        """Store a memory; with a dedupe key, a second store returns the first one.

        Returns the stored memory and whether this call created it.
        """
        embedding = None if memory.embedding is None else self._vector(memory.embedding)
        with self.connection() as conn:
            row = conn.execute(
                "INSERT INTO memories (id, agent_id, entity_id, room_id, world_id, kind, content,"
                " embedding, dedupe_key, turn_id, metadata)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (agent_id, kind, room_id, dedupe_key) WHERE dedupe_key IS NOT NULL"
                f" DO NOTHING RETURNING {_MEMORY_COLUMNS}",
                (
                    memory.id,
                    memory.agent_id,
                    memory.entity_id,
                    memory.room_id,
                    memory.world_id,
                    memory.kind.value,
                    Jsonb(memory.content.model_dump(mode="json", exclude_none=True)),
                    embedding,
                    memory.dedupe_key,
                    turn_id,
                    Jsonb(memory.metadata),
                ),
            ).fetchone()
            if row is not None:
                return _memory(row), True
            existing = conn.execute(
                f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE agent_id = %s AND kind = %s"
                " AND room_id IS NOT DISTINCT FROM %s AND dedupe_key = %s",
                (memory.agent_id, memory.kind.value, memory.room_id, memory.dedupe_key),
            ).fetchone()
        assert existing is not None, "a conflicting memory cannot vanish: memories are not deleted"
        return _memory(existing), False

    def add_fact(
        self, fact: Memory, *, duplicate_similarity: float, turn_id: uuid.UUID | None = None
    ) -> bool:
        """Store a fact unless a near-duplicate about the same entity is already known.

        The check and the insert share a transaction under a lock on the entity's
        facts, so two reflections running at once cannot both store the same fact.
        """
        if fact.embedding is None:
            raise ValueError("a fact needs its embedding to be checked for duplicates")
        vector = self._vector(fact.embedding)
        with self.transaction() as conn:
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"facts:{fact.agent_id}:{fact.entity_id}",),
            )
            duplicate = conn.execute(
                "SELECT 1 FROM memories WHERE agent_id = %s AND entity_id = %s AND kind = 'fact'"
                " AND (lower(content->>'text') = lower(%s) OR 1 - (embedding <=> %s) >= %s)"
                " LIMIT 1",
                (fact.agent_id, fact.entity_id, fact.content.text, vector, duplicate_similarity),
            ).fetchone()
            if duplicate:
                return False
            conn.execute(
                "INSERT INTO memories (id, agent_id, entity_id, room_id, world_id, kind, content,"
                " embedding, turn_id, metadata)"
                " VALUES (%s, %s, %s, %s, %s, 'fact', %s, %s, %s, %s)",
                (
                    fact.id,
                    fact.agent_id,
                    fact.entity_id,
                    fact.room_id,
                    fact.world_id,
                    Jsonb(fact.content.model_dump(mode="json", exclude_none=True)),
                    vector,
                    turn_id,
                    Jsonb(fact.metadata),
                ),
            )
        return True

    def memory(self, memory_id: uuid.UUID) -> Memory:
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_MEMORY_COLUMNS}, embedding FROM memories WHERE id = %s", (memory_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no memory with id {memory_id}")
        return _memory(row)

    def memories_page(
        self,
        agent_id: uuid.UUID,
        *,
        kinds: Sequence[MemoryKind],
        limit: int,
        room_id: uuid.UUID | None = None,
        before_seq: int | None = None,
    ) -> list[Memory]:
        """A page of an agent's memories, newest first (keyset: `before_seq` the last seq)."""
        filters, params = where(
            ("agent_id = %s", agent_id),
            ("kind = ANY(%s)", [k.value for k in kinds]),
            ("room_id = %s", room_id),
            ("seq < %s", before_seq),
        )
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE {filters}"
                " ORDER BY seq DESC LIMIT %s".encode(),
                [*params, limit],
            ).fetchall()
        return [_memory(row) for row in rows]

    def delete_memory(self, agent_id: uuid.UUID, memory_id: uuid.UUID) -> bool:
        with self.connection() as conn:
            return (
                conn.execute(
                    "DELETE FROM memories WHERE id = %s AND agent_id = %s", (memory_id, agent_id)
                ).rowcount
                > 0
            )

    def recent_messages(
        self,
        room_id: uuid.UUID,
        count: int,
        *,
        through: Memory | None = None,
    ) -> list[NamedMessage]:
        """The room's last `count` messages, oldest first, with speaker names.

        With `through`, the conversation as it stood for that message: nothing that
        arrived after it, except the replies of the turn answering it.
        """
        cutoff = ""
        params: list[Any] = [room_id]
        if through is not None:
            cutoff = (
                " AND (rm.seq <= %s OR rm.turn_id = (SELECT id FROM turns WHERE message_id = %s))"
            )
            params += [through.seq, through.id]
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT * FROM ({_recent_rows('%s', cutoff)}) recent ORDER BY seq",
                [*params, count],
            ).fetchall()
        return _named(rows)

    def describe_attachment(
        self, memory_id: uuid.UUID, index: int, description: str, *, made_by: str
    ) -> bool:
        """Store a description Carrier made for attachment `index` of a message, and name
        it in the message's metadata (`carrier_core.attachments.DESCRIBED`). Only an
        attachment still without a description gets one: False when it had one already."""
        with self.connection() as conn:
            return (
                conn.execute(
                    "UPDATE memories SET content = jsonb_set(content, ARRAY['attachments',"
                    " %(index)s::text, 'description'], to_jsonb(%(text)s::text)),"
                    " metadata = jsonb_set(metadata, ARRAY[%(key)s],"
                    " coalesce(metadata->%(key)s, '{}'::jsonb)"
                    " || jsonb_build_object(%(index)s::text, %(by)s::text))"
                    " WHERE id = %(id)s"
                    " AND jsonb_typeof(content->'attachments'->%(index)s::int) = 'object'"
                    " AND coalesce(content->'attachments'->%(index)s::int->>'description',"
                    " '') = ''",
                    {
                        "id": memory_id,
                        "index": index,
                        "text": description,
                        "key": DESCRIBED,
                        "by": made_by,
                    },
                ).rowcount
                > 0
            )

    def search_memories(
        self,
        embedding: Sequence[float],
        *,
        agent_id: uuid.UUID,
        room_id: uuid.UUID | None,
        kinds: Sequence[MemoryKind],
        count: int,
        threshold: float,
        entity_id: uuid.UUID | None = None,
        before_recent: tuple[Memory, int] | None = None,
    ) -> list[ScoredMemory]:
        """Nearest memories by cosine similarity, filtered by agent (and room, and entity).

        `before_recent=(message, N)` keeps only what was stored before the N messages
        of the message's room that end with it: the prompt shows those already, so
        recall looks further back (and never forward).

        Exact, and bounded: knowledge has a way of its own (`_knowledge_sql`); anything
        else is sought among the newest `SEARCH_WINDOW` memories the filter matches, read
        through a b-tree index and sorted by distance. No index over every memory's
        embedding is kept (migration 0011): its upkeep was most of a write's cost at 1M
        memories, and walking it, filtered afterwards, missed a small filter's rows.
        """
        search = Search(
            kinds=tuple(kinds),
            count=count,
            threshold=threshold,
            room_id=room_id,
            entity_id=entity_id,
            before_recent=before_recent,
        )
        return self.search_together(embedding, agent_id, [search])[0]

    def search_together(
        self, embedding: Sequence[float], agent_id: uuid.UUID, searches: Sequence[Search]
    ) -> list[list[ScoredMemory]]:
        """Several searches of one agent's memories with one query embedding, in one
        statement (a decide step's facts, knowledge and recall): each one's results, in
        order, as `search_memories` gives them."""
        vector = self._vector(embedding)
        parts: list[str] = []
        params: list[Any] = []
        for search in searches:
            if search.count <= 0:
                parts.append("'[]'::jsonb")
                continue
            query, found = _search_sql(vector, agent_id, search)
            parts.append(
                "(SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.similarity DESC), '[]')"
                f" FROM ({query}) x)"
            )
            params += found
        columns = ", ".join(f"{part} AS s{n}" for n, part in enumerate(parts))
        with self.connection() as conn:
            row = conn.execute(f"SELECT {columns}", params).fetchone()
        assert row is not None
        return [
            [
                ScoredMemory(memory=_memory(found), similarity=float(found["similarity"]))
                for found in row[f"s{n}"]
                if found["similarity"] >= search.threshold
            ]
            for n, search in enumerate(searches)
        ]

    def set_embeddings(
        self,
        embeddings: Sequence[tuple[uuid.UUID, Sequence[float]]],
        calls: Sequence[ModelCall] = (),
    ) -> None:
        """Store memories' embeddings, with the ledger rows of the call that made them, in
        one statement."""
        if not embeddings:
            return
        with self.connection() as conn:
            conn.execute(
                f"WITH c AS ({_INSERT_CALLS}) UPDATE memories m SET embedding = v.embedding"
                " FROM unnest(%s::uuid[], %s::vector[]) AS v(id, embedding) WHERE m.id = v.id",
                (
                    _calls(calls),
                    [memory_id for memory_id, _ in embeddings],
                    [self._vector(vec) for _, vec in embeddings],
                ),
            )

    def unembedded(self, agent_id: uuid.UUID, limit: int) -> list[Memory]:
        return self.embedding_work(agent_id, limit)[0]

    def embedding_work(
        self, agent_id: uuid.UUID, limit: int, *, with_character: bool = False
    ) -> tuple[list[Memory], Character | None]:
        """The agent's oldest memories without an embedding; `with_character`: its character
        too, read in the same statement (the embedding model is the character's to choose),
        None when nothing waits."""
        character = "a.character" if with_character else "NULL::jsonb AS character"
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_M_MEMORY_COLUMNS}, {character}"
                " FROM memories m JOIN agents a ON a.id = m.agent_id WHERE m.agent_id = %s"
                " AND m.embedding IS NULL ORDER BY m.seq LIMIT %s",
                (agent_id, limit),
            ).fetchall()
        found = None
        if rows and rows[0]["character"] is not None:
            found = parse_character(rows[0]["character"], source=f"agent {agent_id}")
        return [_memory(row) for row in rows], found

    def count_unembedded(self, agent_id: uuid.UUID) -> int:
        """How many of the agent's memories wait for an embedding (a progress bar's total)."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM memories WHERE agent_id = %s AND embedding IS NULL",
                (agent_id,),
            ).fetchone()
        return int(row["n"]) if row else 0

    def turn_memories(self, turn_id: uuid.UUID, kind: MemoryKind) -> list[Memory]:
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE turn_id = %s AND kind = %s"
                " ORDER BY seq",
                (turn_id, kind.value),
            ).fetchall()
        return [_memory(row) for row in rows]

    def facts_about(
        self, agent_id: uuid.UUID, entity_id: uuid.UUID, limit: int = 50
    ) -> list[Memory]:
        """The newest `limit` facts about an entity, oldest first."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT * FROM (SELECT {_MEMORY_COLUMNS} FROM memories WHERE agent_id = %s"
                " AND entity_id = %s AND kind = 'fact' ORDER BY seq DESC LIMIT %s) f ORDER BY seq",
                (agent_id, entity_id, limit),
            ).fetchall()
        return [_memory(row) for row in rows]

    def messages_since_reflection(
        self, room_id: uuid.UUID, *, through_seq: int | None = None
    ) -> tuple[int, int]:
        """Messages from others (not the agent) after the room's reflection bookmark,
        and the newest message's seq (the bookmark to set once they are reflected on).
        With `through_seq`, only messages up to it: what a turn's decide step saw."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT count(m.id) FILTER (WHERE m.entity_id <> r.agent_id) AS n,"
                " coalesce(max(m.seq), r.reflected_seq) AS newest FROM rooms r"
                " LEFT JOIN memories m ON m.room_id = r.id AND m.kind = 'message'"
                " AND m.seq > r.reflected_seq AND (%s::bigint IS NULL OR m.seq <= %s::bigint)"
                " WHERE r.id = %s GROUP BY r.reflected_seq",
                (through_seq, through_seq, room_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"no room with id {room_id}")
        return int(row["n"]), int(row["newest"])

    def mark_reflected(self, room_id: uuid.UUID, through_seq: int) -> None:
        with self.connection() as conn:
            conn.execute(
                "UPDATE rooms SET reflected_seq = greatest(reflected_seq, %s) WHERE id = %s",
                (through_seq, room_id),
            )

    # -- turns ----------------------------------------------------------------

    def accept_message(
        self,
        entity: Entity,
        room: Room,
        world_name: str | None,
        message: Memory,
        *,
        turn_id: uuid.UUID,
        started_at: datetime,
        lease_s: float,
        take_expired: bool,
    ) -> Accepted:
        """Take a message in, in one statement (`carrier_accept`, migration 0014): the
        sender, the world, the room and membership, the message, its turn and `ingest`
        step, and the room's runner if free. A message whose dedupe key was seen before
        stops after the room (`turn_id` None): the caller finds the stored one."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT joined, message_id, turn_id, runner_generation, plugins FROM"
                " carrier_accept(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    entity.id,
                    entity.agent_id,
                    entity.names[0],
                    room.world_id,
                    world_name,
                    room.id,
                    room.name,
                    room.kind.value,
                    room.source,
                    message.id,
                    Jsonb(message.content.model_dump(mode="json", exclude_none=True)),
                    message.dedupe_key,
                    turn_id,
                    started_at,
                    lease_s,
                    take_expired,
                ),
            ).fetchone()
        assert row is not None
        return Accepted(
            joined=bool(row["joined"]),
            turn_id=row["turn_id"],
            runner_generation=row["runner_generation"],
            plugins=tuple(row["plugins"] or ()),
        )

    def start_turn(self, turn_id: uuid.UUID, message: Memory) -> StartedTurn:
        """Create the turn for a message, queued; or find the one it already has, queued
        again if it had failed (the message came again: a new attempt)."""
        assert message.room_id is not None, "a turn answers a message in a room"
        with self.connection() as conn:
            row = conn.execute(
                "INSERT INTO turns (id, agent_id, room_id, message_id, status)"
                " VALUES (%s, %s, %s, %s, 'queued') ON CONFLICT (message_id) DO UPDATE"
                " SET status = 'queued', error = NULL, attempts = 0, updated_at = now()"
                f" WHERE turns.status = 'failed' RETURNING id, status, {_AGENT_PLUGINS}",
                (turn_id, message.agent_id, message.room_id, message.id),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    f"SELECT id, status, {_AGENT_PLUGINS} FROM turns WHERE message_id = %s",
                    (message.id,),
                ).fetchone()
        assert row is not None
        return StartedTurn(row["id"], row["id"] == turn_id, row["status"], tuple(row["plugins"]))

    def turn(self, turn_id: uuid.UUID) -> TurnRecord:
        with self.connection() as conn:
            row = conn.execute(
                "SELECT id, agent_id, room_id, message_id, status, steps_taken, decision, state,"
                " error, updated_at, attempts, answered_by FROM turns WHERE id = %s",
                (turn_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no turn with id {turn_id}")
        return TurnRecord(**row)

    def answering(self, turn: TurnRecord) -> TurnRecord:
        """The turn whose replies answer `turn`'s message: itself, or for a coalesced turn
        the later one that answered it together with others."""
        return turn if turn.answered_by is None else self.turn(turn.answered_by)

    def coalesced_into(self, turn_id: uuid.UUID) -> list[uuid.UUID]:
        """The turns this one answered together with its own (coalesced double texts)."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT id FROM turns WHERE answered_by = %s ORDER BY created_at", (turn_id,)
            ).fetchall()
        return [row["id"] for row in rows]

    def mark_retrying(self, turn_id: uuid.UUID, error: str) -> None:
        """Say that a turn's step failed and is tried again, and why (`error`).

        An ended turn (done, failed, coalesced) is not moved: a late write from a step
        that outlived its execution must not reopen it (`end_turn` ends turns).
        """
        with self.connection() as conn:
            conn.execute(
                "UPDATE turns SET status = 'retrying', error = %s, updated_at = now()"
                f" WHERE id = %s AND status IN {UNFINISHED_SQL}",
                (error, turn_id),
            )

    def end_turn(self, turn_id: uuid.UUID, *, error: str | None = None) -> TurnEnd | None:
        """End a turn, done or failed with its reason, and sum up its model calls in the
        same statement; None if it had ended already: a failure reported after the turn
        ended (its runner failing to move on to the next turn) is not the turn's."""
        with self.connection() as conn:
            row = conn.execute(
                "UPDATE turns t SET status = %s, error = %s, updated_at = now()"
                " FROM (SELECT count(*) AS calls, coalesce(sum(input_tokens), 0) AS input_tokens,"
                " coalesce(sum(output_tokens), 0) AS output_tokens,"
                " coalesce(sum(cost_usd), 0) AS cost_usd FROM model_calls WHERE turn_id = %s) c"
                f" WHERE t.id = %s AND t.status IN {UNFINISHED_SQL}"
                " RETURNING t.message_id, t.status,"
                " extract(epoch FROM now() - t.created_at)::float8 AS seconds, c.calls,"
                " c.input_tokens, c.output_tokens, c.cost_usd,"
                f" {_AGENT_PLUGINS.replace('turns.agent_id', 't.agent_id')}",
                ("failed" if error else "done", error, turn_id, turn_id),
            ).fetchone()
        if row is None:
            return None
        return TurnEnd(
            message_id=row["message_id"],
            status=row["status"],
            seconds=float(row["seconds"]),
            model_calls=int(row["calls"]),
            input_tokens=int(row["input_tokens"]),
            output_tokens=int(row["output_tokens"]),
            cost_usd=float(row["cost_usd"]),
            plugins=tuple(row["plugins"]),
        )

    def record_step(
        self, turn_id: uuid.UUID, record: StepRecord, *, said: Sequence[Memory] = ()
    ) -> None:
        """Add a step to the turn's history; a keyed step is recorded once, the first time.
        `said`: the messages the step stores (an action's replies), written in the same
        statement, so a step and what it said are never stored the one without the other
        (a retried step finds its record and says nothing again)."""
        if not said:
            with self.connection() as conn:
                conn.execute("WITH " + _INSERT_STEP, _step_params(turn_id, record))
            return
        with self.connection() as conn:
            conn.execute(
                "WITH said AS (INSERT INTO memories (id, agent_id, entity_id, room_id, world_id,"
                " kind, content, dedupe_key, turn_id)"
                " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::uuid[],"
                " %s::uuid[], %s::text[], %s::jsonb[], %s::text[], %s::uuid[])"
                " ON CONFLICT (agent_id, kind, room_id, dedupe_key) WHERE dedupe_key IS NOT NULL"
                " DO NOTHING), " + _INSERT_STEP,
                (
                    [m.id for m in said],
                    [m.agent_id for m in said],
                    [m.entity_id for m in said],
                    [m.room_id for m in said],
                    [m.world_id for m in said],
                    [m.kind.value for m in said],
                    [Jsonb(m.content.model_dump(mode="json", exclude_none=True)) for m in said],
                    [m.dedupe_key for m in said],
                    [turn_id for _ in said],
                    *_step_params(turn_id, record),
                ),
            )

    def save_decision(
        self,
        turn_id: uuid.UUID,
        *,
        message: Memory,
        status: str,
        decision: dict[str, Any],
        state: dict[str, Any],
        steps_taken: int,
        record: StepRecord,
    ) -> None:
        """Persist a decide step in one statement: the message's embedding (made for
        recall), the decision and state on the turn, and the step's history row."""
        embedding = None if message.embedding is None else self._vector(message.embedding)
        with self.connection() as conn:
            conn.execute(
                "WITH m AS (UPDATE memories SET embedding = %s WHERE id = %s"
                " AND embedding IS NULL AND %s::vector IS NOT NULL),"
                " t AS (UPDATE turns SET status = %s, decision = %s, state = %s,"
                " steps_taken = %s, error = NULL, updated_at = now() WHERE id = %s"
                f" AND status IN {UNFINISHED_SQL}), " + _INSERT_STEP,
                (
                    embedding,
                    message.id,
                    embedding,
                    status,
                    Jsonb(decision),
                    Jsonb(state),
                    steps_taken,
                    turn_id,
                    *_step_params(turn_id, record),
                ),
            )

    def turn_steps(self, turn_id: uuid.UUID) -> list[TurnStep]:
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM turn_steps WHERE turn_id = %s ORDER BY id".encode(),
                (turn_id,),
            ).fetchall()
        return [TurnStep(**row) for row in rows]

    def message_turns(self, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """The turn of each message that has one: the turn an incoming message started, or
        the turn in which the agent said a reply. Messages without a turn are left out."""
        if not message_ids:
            return {}
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT m.id, coalesce(m.turn_id, t.id) AS turn_id FROM memories m"
                " LEFT JOIN turns t ON t.message_id = m.id"
                " WHERE m.id = ANY(%s) AND coalesce(m.turn_id, t.id) IS NOT NULL",
                (list(message_ids),),
            ).fetchall()
        return {row["id"]: row["turn_id"] for row in rows}

    def turn_step(self, turn_id: uuid.UUID, key: str) -> TurnStep | None:
        """A keyed step already run for this turn, if any."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM turn_steps WHERE turn_id = %s AND key = %s".encode(),
                (turn_id, key),
            ).fetchone()
        return None if row is None else TurnStep(**row)

    def turn_scene(
        self,
        turn_id: uuid.UUID,
        *,
        act_index: int | None = None,
        unreflected: bool = False,
        conversation: int | None = None,
    ) -> Scene:
        """Everything a step needs to start, in one round trip: the turn, its message
        (without its embedding, which only decide needs and makes itself), the agent's
        character, the room and the sender's name; with `act_index`, the act step's record
        if that action of the latest decision ran already (a retried invocation); with
        `unreflected`, how many messages from others the room has after its reflection
        bookmark (`messages_since_reflection`), for the evaluate step; with `conversation`
        (a count), what a decide step's providers show of it: that many recent messages as
        they stood for the turn's message, the room's members and the sender's known
        relationships."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT t.id AS t_id, t.status, t.steps_taken, t.decision, t.state, t.error,"
                " t.updated_at AS t_updated_at,"
                " m.id, m.seq, m.agent_id, m.entity_id, m.room_id, m.world_id, m.kind, m.content,"
                " m.dedupe_key, m.metadata, m.created_at, a.character,"
                " r.world_id AS r_world_id, r.name AS r_name, r.kind AS r_kind,"
                " r.source AS r_source, r.metadata AS r_metadata,"
                f" coalesce({entity_name('e')}, 'someone') AS sender,"
                f" (SELECT to_jsonb(s) FROM (SELECT {_STEP_COLUMNS} FROM turn_steps"
                " WHERE turn_id = t.id AND key = 'act:' || t.steps_taken || ':' || %s::int) s)"
                " AS done,"
                " CASE WHEN %s THEN (SELECT count(*) FROM memories u WHERE u.room_id = r.id"
                " AND u.kind = 'message' AND u.seq > r.reflected_seq"
                " AND u.entity_id <> r.agent_id) END AS unreflected,"
                " CASE WHEN %s::int IS NOT NULL THEN (SELECT coalesce(jsonb_agg(to_jsonb(x)"
                " ORDER BY x.seq), '[]') FROM"
                f" ({_recent_rows('r.id', ' AND (rm.seq <= m.seq OR rm.turn_id = t.id)')}) x)"
                " END AS recent,"
                " CASE WHEN %s::int IS NOT NULL THEN (SELECT coalesce(jsonb_agg(to_jsonb(x)"
                f" ORDER BY x.joined_at), '[]') FROM ({_people_rows('r.id')}) x) END AS people,"
                " CASE WHEN %s::int IS NOT NULL THEN (SELECT coalesce(jsonb_agg(to_jsonb(x)"
                " ORDER BY x.updated_at DESC), '[]') FROM"
                f" ({_relationship_rows('t.agent_id', 'm.entity_id')}) x) END AS relationships"
                " FROM turns t JOIN memories m ON m.id = t.message_id"
                " JOIN agents a ON a.id = t.agent_id JOIN rooms r ON r.id = t.room_id"
                " LEFT JOIN entities e ON e.id = m.entity_id WHERE t.id = %s",
                (
                    act_index,
                    unreflected,
                    conversation,
                    conversation,
                    conversation,
                    conversation,
                    RELATIONSHIPS_SHOWN,
                    turn_id,
                ),
            ).fetchone()
        if row is None:
            raise NotFound(f"no turn with id {turn_id}")
        turn = TurnRecord(
            id=row["t_id"],
            agent_id=row["agent_id"],
            room_id=row["room_id"],
            message_id=row["id"],
            status=row["status"],
            steps_taken=row["steps_taken"],
            decision=row["decision"],
            state=row["state"],
            error=row["error"],
            updated_at=row["t_updated_at"],
        )
        room = Room(
            id=row["room_id"],
            agent_id=row["agent_id"],
            world_id=row["r_world_id"],
            name=row["r_name"],
            kind=RoomKind(row["r_kind"]),
            source=row["r_source"],
            metadata=row["r_metadata"],
        )
        character = parse_character(row["character"], source=f"agent {row['agent_id']}")
        done = None
        if row["done"] is not None:
            found = dict(row["done"])
            for stamp in ("started_at", "finished_at"):
                found[stamp] = datetime.fromisoformat(found[stamp])
            done = TurnStep(**found)
        talk = None
        if conversation is not None:
            talk = Conversation(
                recent=_named(row["recent"]),
                people=[Entity(**person) for person in row["people"]],
                relationships=[_relationship(r) for r in row["relationships"]],
            )
        return Scene(
            turn, _memory(row), character, room, row["sender"], done, row["unreflected"], talk
        )
