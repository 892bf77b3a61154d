"""Memories: messages, facts, documents and their fragments; their embeddings, and the
searches of recall and knowledge."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from carrier_core.attachments import DESCRIBED
from carrier_core.character import Character, parse_character
from carrier_core.memory import Content, Memory, MemoryKind, ScoredMemory
from carrier_core.store.base import NotFound, StoreBase, entity_name, where
from carrier_core.store.usage import _INSERT_CALLS, ModelCall, _calls


class NamedMessage(NamedTuple):
    """A message with the name of who said it, as prompts show it."""

    memory: Memory
    speaker: str


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

_MEMORY_COLUMNS = (
    "id, seq, agent_id, entity_id, room_id, world_id, kind, content, dedupe_key, metadata,"
    " created_at"
)

#: The same, of `memories m` in a join.
_M_MEMORY_COLUMNS = ", ".join(f"m.{c.strip()}" for c in _MEMORY_COLUMNS.split(","))


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


def _fact_rows(agent: str, entity: str) -> str:
    """SQL of the newest facts about a person, newest first (`LIMIT %s`): read alone
    (`Store.facts_about`) or with the reflection's scene."""
    return (
        f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE agent_id = {agent}"
        f" AND entity_id = {entity} AND kind = 'fact' ORDER BY seq DESC LIMIT %s"
    )


def _since_reflection(cutoff: str) -> str:
    """SQL of the messages of room `r` after its reflection bookmark: how many are from
    others than its agent (`n`) and the newest one's seq (`newest`, the bookmark to set
    once they are reflected on); `cutoff`: more conditions on `u`."""
    return (
        "SELECT count(u.id) FILTER (WHERE u.entity_id <> r.agent_id) AS n,"
        " coalesce(max(u.seq), r.reflected_seq) AS newest FROM memories u"
        f" WHERE u.room_id = r.id AND u.kind = 'message' AND u.seq > r.reflected_seq{cutoff}"
    )


def _named(rows: Sequence[Any]) -> list[NamedMessage]:
    return [NamedMessage(_memory(row), row["speaker"]) for row in rows]


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
    # The window is picked and ranked on narrow rows (id and distance): sorting whole rows,
    # embeddings included, spilled to disk in a long room (14 ms at 5,000 messages).
    columns = ", ".join(f"m.{c.strip()}" for c in _MEMORY_COLUMNS.split(","))
    query = (
        "WITH candidates AS MATERIALIZED (SELECT id, embedding <=> %s AS distance FROM memories"
        f" WHERE {' AND '.join(filters)} ORDER BY seq DESC LIMIT %s),"
        " nearest AS MATERIALIZED (SELECT id, distance FROM candidates ORDER BY distance LIMIT %s)"
        f" SELECT {columns}, 1 - n.distance AS similarity FROM nearest n"
        " JOIN memories m ON m.id = n.id ORDER BY n.distance"
    )
    return query, [vector, *params, SEARCH_WINDOW, search.count]


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


class EmbeddingWork(NamedTuple):
    """What the embed step has to do (`MemoryStore.embedding_work`)."""

    memories: list[Memory]
    #: The agent's character, when asked for and something waits.
    character: Character | None
    #: Some knowledge document of the agent is not `ready` (pending, or failed before).
    documents_waiting: bool


class MemoryStore(StoreBase):
    """What agents remember, and how they find it again."""

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
        return self.embedding_work(agent_id, limit).memories

    def embedding_work(
        self, agent_id: uuid.UUID, limit: int, *, with_character: bool = False
    ) -> EmbeddingWork:
        """The agent's oldest memories without an embedding, and whether any of its
        knowledge documents is not `ready` yet; `with_character`: its character too, read
        in the same statement (the embedding model is the character's to choose), None
        when nothing waits."""
        character = "a.character" if with_character else "NULL::jsonb AS character"
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_M_MEMORY_COLUMNS}, {character}, EXISTS (SELECT 1 FROM documents d"
                " WHERE d.agent_id = a.id AND d.status <> 'ready') AS documents_waiting"
                " FROM memories m JOIN agents a ON a.id = m.agent_id WHERE m.agent_id = %s"
                " AND m.embedding IS NULL ORDER BY m.seq LIMIT %s",
                (agent_id, limit),
            ).fetchall()
        found = None
        if rows and rows[0]["character"] is not None:
            found = parse_character(rows[0]["character"], source=f"agent {agent_id}")
        waiting = bool(rows and rows[0]["documents_waiting"])
        return EmbeddingWork([_memory(row) for row in rows], found, waiting)

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
                f"SELECT * FROM ({_fact_rows('%s', '%s')}) f ORDER BY seq",
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
                "SELECT p.n, p.newest FROM rooms r CROSS JOIN LATERAL"
                f" ({_since_reflection(' AND (%s::bigint IS NULL OR u.seq <= %s::bigint)')}) p"
                " WHERE r.id = %s",
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
