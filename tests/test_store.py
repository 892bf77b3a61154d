"""Storage on the embedded Postgres: migrations, semantic search, duplicate facts."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from carrier_core import Character
from carrier_core.memory import Content, Memory, MemoryKind
from carrier_core.models import HashEmbedding
from carrier_core.store.agents import AgentConflict
from carrier_core.store.base import EmbeddingSizeError
from carrier_core.store.migrate import migrate, migrations
from carrier_core.store.store import Store

EMBED = HashEmbedding()


def test_migrations_are_recorded_and_rerunning_applies_nothing(
    database_url: str, session_store: Store
) -> None:
    # session_store has migrated this database once already.
    assert migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [v for v, _, _ in migrations()]


def test_migrations_race_safely_on_a_fresh_database(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS carrier_race")
        conn.execute("CREATE DATABASE carrier_race")
    fresh = make_conninfo(database_url, dbname="carrier_race")
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(migrate(fresh))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each migration is applied exactly once, by whichever process took its lock first.
    applied = sorted(v for result in results for v in result)
    assert applied == [v for v, _, _ in migrations()]
    with psycopg.connect(fresh) as conn:
        recorded = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert recorded == applied


def test_only_knowledge_has_a_vector_index(store: Store) -> None:
    """Fragments have an HNSW index of their own (an agent's are too small a share of all
    memories for a walk of a global index to find them, bench/recall_scale.py); nothing
    else has one, so writing a message or a fact keeps no graph up to date."""
    with store._pool.connection() as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'memories'"
            " AND indexdef LIKE '%%USING hnsw%%'"
        ).fetchall()
    assert [r["indexname"] for r in rows] == ["memories_fragment_embedding"]
    assert "WHERE (kind = 'fragment'::text)" in rows[0]["indexdef"]


def _agent(store: Store, name: str) -> uuid.UUID:
    return store.save_agent(Character(name=name))


def _room(store: Store, agent_id: uuid.UUID, key: str) -> tuple[uuid.UUID, uuid.UUID]:
    entity_id, room_id = uuid.uuid4(), uuid.uuid4()
    with store.connection() as conn:
        conn.execute(
            "INSERT INTO entities (id, agent_id, names) VALUES (%s, %s, ARRAY['Sam'])",
            (entity_id, agent_id),
        )
        conn.execute(
            "INSERT INTO rooms (id, agent_id, name, kind, source) VALUES (%s, %s, %s, 'dm', 'api')",
            (room_id, agent_id, key),
        )
    return room_id, entity_id


def _remember(
    store: Store,
    agent_id: uuid.UUID,
    room_id: uuid.UUID | None,
    entity_id: uuid.UUID,
    text: str,
    kind: MemoryKind = MemoryKind.MESSAGE,
) -> Memory:
    memory, _ = store.add_memory(
        Memory(
            agent_id=agent_id,
            entity_id=entity_id,
            room_id=room_id,
            kind=kind,
            content=Content(text=text),
            embedding=EMBED.embed_one(text),
        )
    )
    return memory


def test_search_is_filtered_by_agent_room_and_kind(store: Store) -> None:
    ada, bob = _agent(store, "Ada"), _agent(store, "Bob")
    room1, sam = _room(store, ada, "one")
    room2, _ = _room(store, ada, "two")
    other_room, other = _room(store, bob, "one")
    _remember(store, ada, room1, sam, "sailing on the fjord")
    _remember(store, ada, room2, sam, "sailing boats are fun")
    _remember(store, ada, room1, sam, "Sam likes sailing", MemoryKind.FACT)
    _remember(store, bob, other_room, other, "sailing secrets of another agent")
    query = EMBED.embed_one("sailing")

    def texts(**kw: object) -> set[str]:
        found = store.search_memories(query, count=10, threshold=-1.0, **kw)  # type: ignore[arg-type]
        return {f.memory.content.text for f in found}

    assert texts(agent_id=ada, room_id=room1, kinds=[MemoryKind.MESSAGE]) == {
        "sailing on the fjord"
    }
    assert texts(agent_id=ada, room_id=None, kinds=[MemoryKind.MESSAGE]) == {
        "sailing on the fjord",
        "sailing boats are fun",
    }
    assert texts(agent_id=ada, room_id=None, kinds=[MemoryKind.FACT]) == {"Sam likes sailing"}
    assert texts(agent_id=bob, room_id=None, kinds=list(MemoryKind)) == {
        "sailing secrets of another agent"
    }


def test_search_orders_by_similarity_and_applies_count_and_threshold(store: Store) -> None:
    ada = _agent(store, "Ada")
    room, sam = _room(store, ada, "r")
    for text in ["sailing", "sailing boats", "tax returns", "sailing boats in the harbour"]:
        _remember(store, ada, room, sam, text)
    found = store.search_memories(
        EMBED.embed_one("sailing boats"),
        agent_id=ada,
        room_id=room,
        kinds=[MemoryKind.MESSAGE],
        count=2,
        threshold=-1.0,
    )
    assert [f.memory.content.text for f in found] == [
        "sailing boats",
        "sailing boats in the harbour",
    ]
    assert found[0].similarity == pytest.approx(1.0)
    strict = store.search_memories(
        EMBED.embed_one("sailing boats"),
        agent_id=ada,
        room_id=room,
        kinds=[MemoryKind.MESSAGE],
        count=10,
        threshold=0.5,
    )
    assert "tax returns" not in {f.memory.content.text for f in strict}


def test_knowledge_search_finds_the_same_fragments_read_whole_or_through_its_index(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small knowledge base is read whole and sorted; a larger one (here: over 2
    fragments) walks the fragments' index. Either way: the agent's nearest fragments only."""
    ada, bob = _agent(store, "Ada"), _agent(store, "Bob")
    room, sam = _room(store, ada, "r")
    for text in ["sailing boats", "tax returns", "sailing boats in the harbour", "bread"]:
        _remember(store, ada, None, ada, text, MemoryKind.FRAGMENT)
    _remember(store, bob, None, bob, "sailing boats", MemoryKind.FRAGMENT)
    _remember(store, ada, room, sam, "sailing boats", MemoryKind.MESSAGE)

    def search() -> list[str]:
        found = store.search_memories(
            EMBED.embed_one("sailing boats"),
            agent_id=ada,
            room_id=None,
            kinds=[MemoryKind.FRAGMENT],
            count=2,
            threshold=-1.0,
        )
        assert found[0].similarity == pytest.approx(1.0)
        return [f.memory.content.text for f in found]

    assert search() == ["sailing boats", "sailing boats in the harbour"]
    monkeypatch.setattr("carrier_core.store.memories.EXACT_KNOWLEDGE_UP_TO", 2)
    assert search() == ["sailing boats", "sailing boats in the harbour"]


def test_recall_looks_back_from_a_message_past_its_recent_window(store: Store) -> None:
    ada = _agent(store, "Ada")
    room, sam = _room(store, ada, "r")
    stored = [_remember(store, ada, room, sam, f"sailing story {n}") for n in range(6)]
    found = store.search_memories(
        EMBED.embed_one("sailing story"),
        agent_id=ada,
        room_id=room,
        kinds=[MemoryKind.MESSAGE],
        count=10,
        threshold=-1.0,
        before_recent=(stored[4], 3),
    )
    # Messages 2-4 are the window ending at message 4; message 5 came after it.
    assert {f.memory.content.text for f in found} == {"sailing story 0", "sailing story 1"}


def test_room_recall_looks_among_the_newest_earlier_messages_only(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recall costs the same however long a room's history: it compares the message with
    the newest `SEARCH_WINDOW` earlier ones (exactly), not with every message ever said."""
    ada = _agent(store, "Ada")
    room, sam = _room(store, ada, "r")
    texts = ["sailing boats", "tax returns", "bread recipes", "train times", "hello", "now"]
    stored = [_remember(store, ada, room, sam, text) for text in texts]

    def recall() -> list[str]:
        found = store.search_memories(
            EMBED.embed_one("sailing boats"),
            agent_id=ada,
            room_id=room,
            kinds=[MemoryKind.MESSAGE],
            count=1,
            threshold=-1.0,
            before_recent=(stored[-1], 2),
        )
        return [f.memory.content.text for f in found]

    assert recall() == ["sailing boats"]
    monkeypatch.setattr("carrier_core.store.memories.SEARCH_WINDOW", 3)
    assert recall() != ["sailing boats"]  # the oldest message is past the window


def test_recent_messages_keep_store_order_when_timestamps_tie(store: Store) -> None:
    ada = _agent(store, "Ada")
    room, sam = _room(store, ada, "r")
    stored = [_remember(store, ada, room, sam, f"m{n}") for n in range(4)]
    with store._pool.connection() as conn:
        conn.execute("UPDATE memories SET created_at = '2026-01-01' WHERE room_id = %s", (room,))
    assert [m.memory.content.text for m in store.recent_messages(room, 3)] == ["m1", "m2", "m3"]
    through = store.recent_messages(room, 2, through=store.memory(stored[1].id))
    assert [m.memory.content.text for m in through] == ["m0", "m1"]


def test_near_duplicate_facts_are_stored_once(store: Store) -> None:
    ada = _agent(store, "Ada")
    room, sam = _room(store, ada, "r")

    def fact(text: str, entity: uuid.UUID = sam) -> Memory:
        return Memory(
            agent_id=ada,
            entity_id=entity,
            room_id=room,
            kind=MemoryKind.FACT,
            content=Content(text=text),
            embedding=EMBED.embed_one(text),
        )

    assert store.add_fact(fact("Sam likes sailing"), duplicate_similarity=0.9)
    assert not store.add_fact(fact("Sam likes sailing."), duplicate_similarity=0.9)
    assert not store.add_fact(fact("sam LIKES sailing"), duplicate_similarity=0.9)
    assert store.add_fact(fact("Sam lives in Oslo"), duplicate_similarity=0.9)
    # The same claim about someone else is a different fact.
    assert store.add_fact(fact("Sam likes sailing", uuid.uuid4()), duplicate_similarity=0.9)
    assert [f.content.text for f in store.facts_about(ada, sam)] == [
        "Sam likes sailing",
        "Sam lives in Oslo",
    ]


def test_an_embedding_of_the_wrong_size_is_refused_and_nothing_is_stored(store: Store) -> None:
    ada = _agent(store, "Ada")
    room, sam = _room(store, ada, "r")
    memory = Memory(
        agent_id=ada, entity_id=sam, room_id=room, content=Content(text="x"), embedding=[0.1] * 1536
    )
    with pytest.raises(EmbeddingSizeError, match="1536 dimensions; the memories table stores 384"):
        store.add_memory(memory)
    assert store.recent_messages(room, 10) == []


def test_memory_dedupe_key_makes_stores_idempotent(store: Store) -> None:
    ada = _agent(store, "Ada")
    room, sam = _room(store, ada, "r")
    first, created = store.add_memory(
        Memory(
            agent_id=ada, entity_id=sam, room_id=room, content=Content(text="hi"), dedupe_key="m-1"
        )
    )
    again, created_again = store.add_memory(
        Memory(
            agent_id=ada, entity_id=sam, room_id=room, content=Content(text="hi"), dedupe_key="m-1"
        )
    )
    assert created and not created_again
    assert again.id == first.id


def test_an_agent_id_cannot_be_taken_over_by_another_tenant(store: Store) -> None:
    acme, globex = store.ensure_tenant("acme"), store.ensure_tenant("globex")
    theirs = Character(name="Ada", id=uuid.uuid4(), bio=["acme's own"])
    store.save_agent(theirs, acme.id)
    with pytest.raises(AgentConflict, match="belongs to another tenant"):
        store.save_agent(theirs.model_copy(update={"bio": ["stolen"]}), globex.id)
    assert store.agent_record(theirs.agent_id).tenant_id == acme.id
    assert store.character(theirs.agent_id).bio == ["acme's own"]
    # The owner may update it, and saving it unchanged is a no-op, not a conflict.
    store.save_agent(theirs.model_copy(update={"bio": ["updated"]}), acme.id)
    store.save_agent(theirs.model_copy(update={"bio": ["updated"]}), acme.id)
    assert store.character(theirs.agent_id).bio == ["updated"]


def test_sessions_get_the_search_settings_from_the_database_not_their_startup(
    session_store: Store,
) -> None:
    """RDS Proxy and PgBouncer refuse startup `options`: the settings a search needs are
    the database's (migration 0005), so every pooled session has them anyway."""
    with session_store.connection() as conn:
        row = conn.execute("SELECT current_setting('hnsw.iterative_scan') AS mode").fetchone()
        assert row is not None and row["mode"] == "relaxed_order"
        assert conn.info.get_parameters().get("options") is None
