"""Turn overhead: what the Carrier runtime itself costs per turn, with the model taken out.

The model answers instantly with a fixed, valid decision, so every millisecond measured is
the runtime's own: validating and storing the message, loading the turn in each step,
running the providers (three pgvector searches among them), building the prompt, parsing
the answer, storing the reply, the reflection evaluator's cadence check (and, every
`reflection_interval` messages, the evaluator itself) and the embed step. Embedding uses the
offline `HashEmbedding` (pure Python); its time is included in the turn times, and shown on
its own so it can be subtracted.

For each size of stored memory (default 1k, 10k and 100k rows in `memories`) the script
makes a fresh database on the embedded Postgres (or on `DATABASE_URL` when it is set),
registers Ada, bulk-loads messages spread over 200 rooms plus facts with COPY (rebuilding
the HNSW index once afterwards, timed on its own), then times N turns in one benchmark
room that already has some history. Per turn it records wall time, database round trips
(`store.round_trips`), text-model calls, embedding calls and prompt characters; turns in
which the reflection evaluator ran are reported apart, so "model calls per turn when no
evaluator is due" reads straight off the table. `--reflection inline` runs the same with
inline reflection: the decide call of a due turn also answers what to remember, and the
evaluator stores it without a call of its own (one text call on every turn).

Goals, from the issue tracker: p50 at most 8 ms per turn at 10k memories on an idle 2-core
machine; at most 12 database round trips and one model call per turn when no evaluator is
due; cost growing sublinearly with stored memories. A turn is timed and counted from its
message's ingest to its runner's end (reading its result afterwards is the caller's).

    python bench/turn_overhead.py [--turns N] [--warmup N] [--sizes 1000,10000,100000]
                                  [--reflection evaluator|inline]
    python bench/turn_overhead.py --profile [--profile-size 10000]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from machine import cpu_model, mean, percentile
from pgvector import Vector
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from carrier_core import Runtime, Settings, load_character
from carrier_core.decision import Decision, render_decision
from carrier_core.models import (
    Embeddings,
    Generation,
    HashEmbedding,
    ModelRequest,
    ModelSet,
    Usage,
)
from carrier_core.store.base import EMBEDDING_DIMENSIONS
from carrier_core.store.database import database_url
from carrier_core.turn.ingest import ingest
from carrier_core.turn.run import run_room, run_turn, turn_result
from carrier_core.world import entity_id_for, room_id_for

ROOT = Path(__file__).resolve().parent.parent
CHARACTER = ROOT / "characters" / "ada.json"

SOURCE = "api"
BENCH_ROOM = "bench-room"
BENCH_USER = "bench-user"
#: Rooms the bulk of the memories is spread over, one user in each.
ROOMS = 200
#: Messages and facts the benchmark room holds before the first turn, whatever the size.
BENCH_HISTORY = 40
BENCH_FACTS = 8
#: One bulk memory in this many is a fact; the rest are messages.
FACT_EVERY = 20
GOAL_P50_MS = 8.0
#: Database round trips a turn may take without reflection (statements, BEGIN/COMMIT too).
GOAL_ROUND_TRIPS = 12
GOAL_SIZE = 10_000
PROFILE_TOP = 25

DECISION_XML = render_decision(Decision(thought="instant", actions=["REPLY"], text="ok"))
REFLECTION_JSON = json.dumps({"thought": "instant", "facts": [], "relationships": []})


# -- models -------------------------------------------------------------------------------


class InstantModel:
    """A text model that answers at once: a fixed decision, or an empty reflection.

    It counts its calls and the prompt characters it was sent, per task.
    """

    name = "bench-instant"

    def __init__(self) -> None:
        self.tasks: list[str] = []
        self.prompt_chars: dict[str, int] = {}

    def reset(self) -> None:
        self.tasks.clear()
        self.prompt_chars.clear()

    def generate(self, request: ModelRequest) -> Generation:
        self.tasks.append(request.task)
        chars = len(request.system) + len(request.prompt)
        self.prompt_chars[request.task] = self.prompt_chars.get(request.task, 0) + chars
        text = REFLECTION_JSON if request.task == "reflect" else DECISION_XML
        return Generation(text=text, usage=Usage(), model=self.name)


class CountingEmbedding:
    """The offline `HashEmbedding`, counting calls, texts and the time spent in them."""

    def __init__(self) -> None:
        self._inner = HashEmbedding()
        self.name = self._inner.name
        self.dimensions = self._inner.dimensions
        self._lock = threading.Lock()
        self.calls = 0
        self.seconds = 0.0

    def reset(self) -> None:
        with self._lock:
            self.calls, self.seconds = 0, 0.0

    def embed(self, texts: Sequence[str]) -> Embeddings:
        started = time.perf_counter()
        embeddings = self._inner.embed(texts)
        with self._lock:
            self.calls += 1
            self.seconds += time.perf_counter() - started
        return embeddings


# -- texts --------------------------------------------------------------------------------

_OPENERS = ("Today I", "Yesterday I", "This morning I", "Last weekend I", "I think I", "Lately I")
_VERBS = (
    "talked about",
    "thought about",
    "worked on",
    "read about",
    "dreamed of",
    "argued about",
    "learned about",
    "spent hours on",
)
_TOPICS = (
    "sailing",
    "the garden",
    "coffee",
    "my sister",
    "the new job",
    "chess",
    "baking bread",
    "the mountains",
    "jazz records",
    "my dog",
    "a long run",
    "the rain",
    "python code",
    "the museum",
    "an old film",
    "cooking dinner",
    "the night train",
    "a book about whales",
    "the piano",
    "my neighbour",
)
_ENDINGS = (
    "and it was lovely.",
    "and I am not sure why.",
    "with a friend.",
    "again, as usual.",
    "and it made me tired.",
    "which surprised me.",
    "- what do you think?",
    "and I want to do it again.",
)
_REPLIES = (
    "That sounds lovely. What did you enjoy most about {topic}?",
    "Why do you think {topic} stays on your mind?",
    "Tell me more about {topic}.",
    "How did {topic} make you feel?",
)
_FACTS = ("{name} likes {topic}", "{name} often talks about {topic}", "{name} dislikes {topic}")


def user_text(rng: random.Random) -> str:
    words = (rng.choice(_OPENERS), rng.choice(_VERBS), rng.choice(_TOPICS), rng.choice(_ENDINGS))
    return " ".join(words)


def agent_text(rng: random.Random) -> str:
    return rng.choice(_REPLIES).format(topic=rng.choice(_TOPICS))


def fact_text(rng: random.Random, name: str) -> str:
    return rng.choice(_FACTS).format(name=name, topic=rng.choice(_TOPICS))


def random_vector(rng: random.Random) -> Vector:
    """A random direction (not normalised: cosine distance does not need it), made in C."""
    return Vector(array("b", rng.randbytes(EMBEDDING_DIMENSIONS)).tolist())


# -- database -----------------------------------------------------------------------------


def server_url(home: Path) -> tuple[str, str]:
    """The server to use and how to describe it: DATABASE_URL, else the embedded Postgres
    started under `home` exactly as the product starts it."""
    settings = Settings(home=home)
    url = database_url(settings)
    where = "DATABASE_URL" if settings.database_url else f"embedded pgserver under {home}/pg"
    return url, where


@contextmanager
def fresh_database(server: str, name: str) -> Iterator[str]:
    """A new, empty database on the server for one size; dropped afterwards."""
    ident = sql.Identifier(name)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        except psycopg.errors.InsufficientPrivilege:
            raise SystemExit(
                "the bench makes a fresh database per size: give the DATABASE_URL user"
                " CREATEDB, or unset DATABASE_URL to use the embedded Postgres"
            ) from None
    try:
        yield make_conninfo(server, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def server_versions(url: str) -> tuple[str, str]:
    with psycopg.connect(url) as conn:
        pg = conn.execute("SHOW server_version").fetchone()
        vector = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
    return (str(pg[0]) if pg else "?"), (str(vector[0]) if vector else "?")


# -- seeding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """The ids the seeded data and the benchmark turns share."""

    agent_id: uuid.UUID
    bench_room: uuid.UUID
    bench_user: uuid.UUID
    rooms: list[uuid.UUID]
    users: list[uuid.UUID]

    @classmethod
    def for_agent(cls, agent_id: uuid.UUID) -> Scene:
        return cls(
            agent_id=agent_id,
            bench_room=room_id_for(agent_id, SOURCE, BENCH_ROOM),
            bench_user=entity_id_for(agent_id, SOURCE, BENCH_USER),
            rooms=[room_id_for(agent_id, SOURCE, f"room-{i}") for i in range(ROOMS)],
            users=[entity_id_for(agent_id, SOURCE, f"user-{i}") for i in range(ROOMS)],
        )


@dataclass(frozen=True)
class SeedTimes:
    rows: int
    load_s: float
    index_s: float
    analyze_s: float


#: A memories row, in the order of `_COPY_MEMORIES`.
MemoryRow = tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID, str, Jsonb, Vector, datetime]

_COPY_MEMORIES = (
    "COPY memories (id, agent_id, entity_id, room_id, kind, content, embedding, created_at)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ["uuid", "uuid", "uuid", "uuid", "text", "jsonb", "vector", "timestamptz"]


def _message_content(text: str, by_agent: bool) -> Jsonb:
    if by_agent:
        return Jsonb({"text": text, "actions": ["REPLY"], "source": "agent", "attachments": []})
    return Jsonb({"text": text, "actions": [], "source": SOURCE, "attachments": []})


def _fact_content(text: str) -> Jsonb:
    return Jsonb({"text": text, "actions": [], "source": "reflection", "attachments": []})


def bench_rows(scene: Scene, rng: random.Random, now: datetime) -> Iterator[MemoryRow]:
    """The benchmark room's history and facts about its user, embedded like real ones,
    so that recall and the facts provider find what they would find in use."""
    embedder = HashEmbedding()
    start = now - timedelta(hours=1)
    for n in range(BENCH_HISTORY):
        by_agent = n % 2 == 1
        text = agent_text(rng) if by_agent else user_text(rng)
        speaker = scene.agent_id if by_agent else scene.bench_user
        yield (
            uuid.uuid4(),
            scene.agent_id,
            speaker,
            scene.bench_room,
            "message",
            _message_content(text, by_agent),
            Vector(embedder.embed_one(text)),
            start + timedelta(seconds=30 * n),
        )
    for n in range(BENCH_FACTS):
        text = fact_text(rng, BENCH_USER)
        yield (
            uuid.uuid4(),
            scene.agent_id,
            scene.bench_user,
            scene.bench_room,
            "fact",
            _fact_content(text),
            Vector(embedder.embed_one(text)),
            start + timedelta(seconds=30 * n + 15),
        )


def bulk_rows(scene: Scene, count: int, rng: random.Random, now: datetime) -> Iterator[MemoryRow]:
    """`count` memories over the other rooms and the 30 days before the benchmark room's
    history: messages alternating user and agent in each room, one in `FACT_EVERY` a fact."""
    start = now - timedelta(days=30)
    step = timedelta(days=29) / max(count, 1)
    for j in range(count):
        room = j % ROOMS
        created_at = start + step * j
        if j % FACT_EVERY == FACT_EVERY - 1:
            kind, speaker = "fact", scene.users[room]
            content = _fact_content(fact_text(rng, f"user-{room}"))
        else:
            by_agent = (j // ROOMS) % 2 == 1
            kind = "message"
            speaker = scene.agent_id if by_agent else scene.users[room]
            text = agent_text(rng) if by_agent else user_text(rng)
            content = _message_content(text, by_agent)
        yield (
            uuid.uuid4(),
            scene.agent_id,
            speaker,
            scene.rooms[room],
            kind,
            content,
            random_vector(rng),
            created_at,
        )


def _create_conversations(conn: psycopg.Connection[Any], scene: Scene) -> None:
    """The rooms, their users and memberships. (Reflection bookmarks keep their defaults:
    the first warm-up turn reflects on the benchmark room's history.)"""
    rooms = [(scene.bench_room, BENCH_ROOM, scene.bench_user, BENCH_USER)] + [
        (room, f"room-{i}", user, f"user-{i}")
        for i, (room, user) in enumerate(zip(scene.rooms, scene.users, strict=True))
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO entities (id, agent_id, names) VALUES (%s, %s, %s)",
            [(user, scene.agent_id, [name]) for _, _, user, name in rooms],
        )
        cur.executemany(
            "INSERT INTO rooms (id, agent_id, name, kind, source) VALUES (%s, %s, %s, 'dm', %s)",
            [(room, scene.agent_id, name, SOURCE) for room, name, _, _ in rooms],
        )
        cur.executemany(
            "INSERT INTO participants (room_id, entity_id) VALUES (%s, %s)",
            [(room, user) for room, _, user, _ in rooms],
        )


def _copy_memories(conn: psycopg.Connection[Any], rows: Iterator[MemoryRow]) -> int:
    count = 0
    with conn.cursor() as cur, cur.copy(_COPY_MEMORIES) as copy:
        copy.set_types(_COPY_TYPES)
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def _vector_indexes(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The HNSW indexes the migrations made on `memories` (name: definition)."""
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'memories'"
        " AND indexdef LIKE '%USING hnsw%'"
    ).fetchall()
    return {str(name): str(sql) for name, sql in rows}


def seed_memories(url: str, scene: Scene, size: int, seed: int) -> SeedTimes:
    """Fill `memories` up to `size` rows: COPY with the HNSW indexes dropped, then rebuild
    them with the migrations' own definitions, then VACUUM ANALYZE."""
    rng = random.Random(seed)
    now = datetime.now(UTC) - timedelta(minutes=1)
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        existing = conn.execute("SELECT count(*) FROM memories").fetchone()
        bulk = size - (existing[0] if existing else 0) - BENCH_HISTORY - BENCH_FACTS
        if bulk < 0:
            raise SystemExit(f"size {size} is too small: the benchmark room alone needs more")
        indexes = _vector_indexes(conn)
        started = time.perf_counter()
        with conn.transaction():
            for name in indexes:
                conn.execute(f"DROP INDEX {name}".encode())
            _create_conversations(conn, scene)
            # Oldest first, so that store order (a generated sequence) follows time.
            rows = _copy_memories(conn, bulk_rows(scene, bulk, rng, now - timedelta(hours=2)))
            rows += _copy_memories(conn, bench_rows(scene, rng, now))
        loaded = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '512MB'")
        for index_sql in indexes.values():
            conn.execute(index_sql.encode())
        conn.execute("RESET maintenance_work_mem")
        indexed = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        analyzed = time.perf_counter()
        # Write the load out now rather than during the timed turns.
        conn.execute("CHECKPOINT")
    return SeedTimes(rows, loaded - started, indexed - loaded, analyzed - indexed)


# -- turns --------------------------------------------------------------------------------


class WriteClock:
    """Times the store's methods that write memories or their embeddings, on one store."""

    #: accept_message stores the message, record_step an action's replies with its step.
    METHODS = (
        "accept_message",
        "add_memory",
        "add_fact",
        "record_step",
        "save_decision",
        "set_embeddings",
    )

    def __init__(self, store: Any) -> None:
        self.seconds = 0.0
        for name in self.METHODS:
            setattr(store, name, self._timed(getattr(store, name)))

    def reset(self) -> None:
        self.seconds = 0.0

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


@dataclass(frozen=True)
class TurnSample:
    ms: float
    round_trips: int
    model_calls: int
    #: Model calls as the turn's history records them; should equal `model_calls`.
    recorded_calls: int
    embed_calls: int
    #: Embedding calls made before the reply is stored (ingest, decide and act steps).
    critical_embed_calls: int
    embed_ms: float
    #: Time in the statements that write memories and their embeddings (the message, the
    #: reply, facts, the embed step): what index upkeep makes grow with the table.
    write_ms: float
    prompt_chars: int
    #: Characters sent to the reflection evaluator's model call (0 when it did not run).
    reflect_chars: int
    #: The reflection evaluator ran (with its own call, or storing an inline answer).
    reflected: bool
    error: str | None


@dataclass
class Bench:
    runtime: Runtime
    model: InstantModel
    embedder: CountingEmbedding
    scene: Scene
    writes: WriteClock
    texts: random.Random = field(default_factory=lambda: random.Random(7))
    turns_run: int = 0

    def next_message(self) -> dict[str, Any]:
        self.turns_run += 1
        return {
            "agent_id": self.scene.agent_id,
            "room": BENCH_ROOM,
            "sender": BENCH_USER,
            "text": f"{user_text(self.texts)} (message {self.turns_run})",
        }


def measure_turn(bench: Bench) -> TurnSample:
    store = bench.runtime.store
    message = bench.next_message()
    bench.model.reset()
    bench.embedder.reset()
    bench.writes.reset()
    trips = store.round_trips.count
    started = time.perf_counter()
    # The turn as a runner answers it (ingest, then the room's runner); reading its result
    # afterwards is the caller's, not the turn's, and is not counted.
    ingested = ingest(bench.runtime, message, take_expired=True)
    if ingested.runner is not None:
        run_room(bench.runtime, ingested.runner)
    elapsed = time.perf_counter() - started
    trips = store.round_trips.count - trips
    result = turn_result(bench.runtime, ingested.turn_id)
    steps = store.turn_steps(result.turn_id)
    error = result.error
    if error is None and result.reply_texts != ["ok"]:
        error = f"unexpected replies {result.reply_texts!r}"
    if error is None and any(s.status != "ok" for s in steps):
        error = "; ".join(f"{s.step}: {s.status} {s.detail}" for s in steps if s.status != "ok")
    return TurnSample(
        ms=elapsed * 1000,
        round_trips=trips,
        model_calls=len(bench.model.tasks),
        recorded_calls=sum(s.model_calls for s in steps),
        embed_calls=bench.embedder.calls,
        critical_embed_calls=sum(
            int(s.detail.get("embedding_calls", 0))
            for s in steps
            if s.step in ("ingest", "decide") or s.step.startswith("act:")
        ),
        embed_ms=bench.embedder.seconds * 1000,
        write_ms=bench.writes.seconds * 1000,
        prompt_chars=bench.model.prompt_chars.get("decide", 0),
        reflect_chars=bench.model.prompt_chars.get("reflect", 0),
        reflected=any(s.step == "evaluate:reflection" for s in steps),
        error=error,
    )


def run_turns(bench: Bench, count: int) -> list[TurnSample]:
    return [measure_turn(bench) for _ in range(count)]


@contextmanager
def open_bench(url: str, home: Path, reflection: str) -> Iterator[Bench]:
    model, embedder = InstantModel(), CountingEmbedding()
    models = ModelSet(small=model, large=model, embedding=embedder)
    settings = Settings(home=home, database_url=url, reflection=reflection)
    with Runtime.open(settings, models=models) as runtime:
        agent_id = runtime.register_agent(load_character(CHARACTER))
        writes = WriteClock(runtime.store)
        yield Bench(runtime, model, embedder, Scene.for_agent(agent_id), writes)


# -- summaries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeResult:
    size: int
    seed: SeedTimes
    samples: list[TurnSample]
    #: Text-model calls per group-room message (reflection left out), by kind of message.
    group_calls: dict[str, float] = field(default_factory=dict)

    def part(self, reflected: bool) -> list[TurnSample]:
        return [s for s in self.samples if s.reflected is reflected]

    def p(self, pct: int, samples: Sequence[TurnSample] | None = None) -> float:
        return percentile([s.ms for s in (self.samples if samples is None else samples)], pct)

    def avg(self, get: Callable[[TurnSample], float], samples: Sequence[TurnSample]) -> float:
        return mean([get(s) for s in samples])

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.samples if s.error]

    @property
    def miscounted(self) -> int:
        return sum(s.model_calls != s.recorded_calls for s in self.samples)


def _pair(a: float, b: float, digits: int = 1) -> str:
    def show(x: float) -> str:
        return "-" if x != x else f"{x:.{digits}f}"

    return f"{show(a)} / {show(b)}"


_COLUMNS = (
    ("memories", 9),
    ("load s", 7),
    ("index s", 8),
    ("turns", 6),
    ("p50 ms", 7),
    ("p95 ms", 7),
    ("p50 no-eval/eval", 17),
    ("embed ms", 9),
    ("write ms", 9),
    ("round trips", 12),
    ("model calls", 12),
    ("embed calls", 12),
    ("critical embed calls", 21),
    ("prompt chars", 13),
)


def table_row(r: SizeResult) -> list[str]:
    quiet, busy = r.part(False), r.part(True)
    return [
        f"{r.size:,}",
        f"{r.seed.load_s:.1f}",
        f"{r.seed.index_s:.1f}",
        f"{len(r.samples)}",
        f"{r.p(50):.1f}",
        f"{r.p(95):.1f}",
        _pair(r.p(50, quiet), r.p(50, busy)),
        f"{r.avg(lambda s: s.embed_ms, r.samples):.2f}",
        f"{r.avg(lambda s: s.write_ms, r.samples):.2f}",
        _pair(r.avg(lambda s: s.round_trips, quiet), r.avg(lambda s: s.round_trips, busy)),
        _pair(r.avg(lambda s: s.model_calls, quiet), r.avg(lambda s: s.model_calls, busy), 2),
        f"{r.avg(lambda s: s.embed_calls, r.samples):.2f}",
        f"{r.avg(lambda s: s.critical_embed_calls, r.samples):.2f}",
        f"{r.avg(lambda s: s.prompt_chars, r.samples):,.0f}",
    ]


def print_table(results: Sequence[SizeResult]) -> None:
    print(" ".join(name.rjust(width) for name, width in _COLUMNS))
    for r in results:
        cells = zip(table_row(r), _COLUMNS, strict=True)
        print(" ".join(cell.rjust(width) for cell, (_, width) in cells))
    print(
        "\n  memories: rows seeded in `memories`, before warm-up (messages over "
        f"{ROOMS} rooms, 1 in {FACT_EVERY} a fact, plus the benchmark room and knowledge)."
        "\n  load s: COPY of the rows with the HNSW indexes dropped; index s: rebuilding them."
        "\n  p50/p95 ms: wall time of a turn (ingest, then its runner), embedding included;"
        " embed ms: mean time in HashEmbedding per turn; write ms: mean time per turn in the"
        " statements that write memories and embeddings (accept_message, add_memory, add_fact,"
        " record_step, save_decision, set_embeddings)."
        "\n  no-eval/eval: turns where the reflection evaluator did not / did run"
        " (round trips, model calls: means)."
        "\n  critical embed calls: embedding calls before the reply is stored (ingest, decide"
        " and act steps); the rest run after the turn (the embed step)."
        "\n  prompt chars: system + prompt of the decide call."
    )
    for r in results:
        reflect_chars = r.avg(lambda s: s.reflect_chars, r.part(True))
        counts = (
            f"{len(r.part(True))} of {len(r.samples)} turns reflected"
            f" (reflection prompt {reflect_chars:,.0f} chars)"
        )
        problems = (
            f"{len(r.errors)} failed turn(s), first: {r.errors[0]}" if r.errors else "no failures"
        )
        check = f", {r.miscounted} with model calls not matching turn_steps" if r.miscounted else ""
        print(f"  {r.size:,}: {counts}; {problems}{check}")


def growth(
    results: Sequence[SizeResult], get: Callable[[SizeResult], float]
) -> tuple[float, float]:
    """How much `get` grew from the smallest size to the largest, and the log-log slope
    (1 is linear in stored memories; below 1 is sublinear)."""
    small, large = results[0], results[-1]
    ratio = get(large) / get(small)
    return ratio, math.log(ratio) / math.log(large.size / small.size)


def print_goals(results: Sequence[SizeResult]) -> None:
    print("\nGoals")
    at_goal = next((r for r in results if r.size == GOAL_SIZE), None)
    if at_goal is None:
        print(f"  p50 <= {GOAL_P50_MS:g} ms at {GOAL_SIZE:,} memories: not measured (size not run)")
    else:
        p50 = at_goal.p(50)
        verdict = "MET" if p50 <= GOAL_P50_MS else "NOT MET"
        print(
            f"  p50 <= {GOAL_P50_MS:g} ms at {GOAL_SIZE:,} memories: {p50:.1f} ms -> {verdict}"
            f" (goal is for 2 cores; this machine has {os.cpu_count()})"
        )
    trips = [s.round_trips for r in results for s in r.part(False)]
    worst = max(trips, default=0)
    print(
        f"  round trips per turn with no evaluator due <= {GOAL_ROUND_TRIPS}: max {worst} -> "
        + ("MET" if worst <= GOAL_ROUND_TRIPS else "NOT MET")
    )
    quiet = [s.model_calls for r in results for s in r.part(False)]
    most = max(quiet, default=0)
    print(
        f"  model calls per turn with no evaluator due <= 1: max {most} -> "
        + ("MET" if most <= 1 else "NOT MET")
    )
    if len(results) >= 2 and results[-1].size > results[0].size:
        p50_ratio, p50_slope = growth(results, lambda r: r.p(50))
        rt_ratio, _ = growth(results, lambda r: r.avg(lambda s: s.round_trips, r.samples))
        verdict = "MET" if p50_slope < 1 else "NOT MET"
        print(
            f"  sublinear growth, {results[0].size:,} -> {results[-1].size:,} memories "
            f"(x{results[-1].size / results[0].size:g}): p50 x{p50_ratio:.2f}, round trips "
            f"x{rt_ratio:.2f}, log-log slope of p50 {p50_slope:.3f} -> {verdict}"
        )


def print_machine(where: str, versions: tuple[str, str], settings: Settings) -> None:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("Machine")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"  cores: {os.cpu_count()} (usable by this process: {usable}); CPU: {cpu_model()}")
    print(f"  load average at start: {load}")
    python = f"{platform.python_version()} ({platform.python_implementation()})"
    print(f"  Python {python} on {platform.system()} {platform.release()}")
    print(f"  Postgres {versions[0]}, pgvector {versions[1]}; database: {where}")
    print(
        f"  settings: recent_messages={settings.recent_messages}, reflection_interval="
        f"{settings.reflection_interval}, reflection={settings.reflection},"
        f" pool_size={settings.pool_size}"
    )
    print(
        "  models: instant text model (fixed decision / empty reflection),"
        " HashEmbedding for embeddings (its time is included)\n"
    )


# -- profiling ----------------------------------------------------------------------------

#: Before 3.12 a profiler sees one thread; providers run on threads of their own, so each
#: new thread gets a profiler too, merged afterwards. From 3.12 cProfile uses
#: sys.monitoring, one tool for the whole interpreter, so one profiler is all there can be.
_PER_THREAD = sys.version_info < (3, 12)


@contextmanager
def profiling() -> Iterator[list[cProfile.Profile]]:
    """Profile the calling thread and, where the profiler allows, threads started inside."""
    profiles = [cProfile.Profile()]
    lock = threading.Lock()

    def start_thread_profiler(frame: object, event: str, arg: object) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()  # replaces this hook for the rest of the thread

    if _PER_THREAD:
        threading.setprofile(start_thread_profiler)
    profiles[0].enable()
    try:
        yield profiles
    finally:
        profiles[0].disable()
        if _PER_THREAD:
            threading.setprofile(None)


def profile_turns(bench: Bench, count: int) -> tuple[list[TurnSample], pstats.Stats]:
    with profiling() as profiles:
        samples = run_turns(bench, count)
    stats = pstats.Stats(profiles[0])
    with_data = [p for p in profiles[1:] if p.getstats()]
    if with_data:
        stats.add(*with_data)
    return samples, stats


def print_profile(stats: pstats.Stats, size: int, turns: int) -> None:
    print(
        f"\nProfile: {turns} timed turns at {size:,} memories; provider threads"
        + (" merged in" if _PER_THREAD else " not separated (Python 3.12+)")
        + ". Times under the profiler are inflated, and one thread's waits overlap"
        " other threads' work: compare entries, not totals."
    )
    for key in ("cumulative", "tottime"):
        print(f"\n-- top {PROFILE_TOP} by {key} --")
        stats.strip_dirs().sort_stats(key).print_stats(PROFILE_TOP)


# -- main ---------------------------------------------------------------------------------


def run_size(server: str, home: Path, size: int, args: argparse.Namespace) -> SizeResult:
    name = f"carrier_bench_{os.getpid()}_{size}"
    with fresh_database(server, name) as url, open_bench(url, home, args.reflection) as bench:
        print(f"[{size:,}] seeding...", file=sys.stderr, flush=True)
        seed = seed_memories(url, bench.scene, size, seed=size)
        print(
            f"[{size:,}] {seed.rows:,} rows loaded in {seed.load_s:.1f}s,"
            f" index {seed.index_s:.1f}s, analyze {seed.analyze_s:.1f}s;"
            f" {args.warmup} warm-up + {args.turns} timed turns",
            file=sys.stderr,
            flush=True,
        )
        run_turns(bench, args.warmup)
        if args.profile:
            samples, stats = profile_turns(bench, args.turns)
            result = SizeResult(size, seed, samples)
            print_profile(stats, size, args.turns)
        else:
            samples = run_turns(bench, args.turns)
            result = SizeResult(size, seed, samples, measure_group(bench, GROUP_MESSAGES))
    return result


#: Messages of each kind sent to a group room, after the timed turns.
GROUP_MESSAGES = 12
_GROUP_KINDS = {
    "for someone else": "@bo {}",
    "naming the agent": "Ada, {}",
    "plain": "{}",
}


def measure_group(bench: Bench, count: int) -> dict[str, float]:
    """Text-model calls per message in a group room the agent neither follows nor muted: a
    message @mentioning someone else should make none (left unanswered by rule), others
    one (the decide call, which may choose IGNORE)."""
    calls = {}
    for label, pattern in _GROUP_KINDS.items():
        made = 0
        for _ in range(count):
            message = bench.next_message()
            bench.model.reset()
            run_turn(
                bench.runtime,
                {
                    **message,
                    "room": "bench-group",
                    "room_kind": "group",
                    "text": pattern.format(message["text"]),
                },
            )
            made += sum(task != "reflect" for task in bench.model.tasks)
        calls[label] = made / count
    return calls


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200, help="timed turns per size (200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed turns first (20)")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[1_000, 10_000, 100_000],
        help="stored memories, comma-separated",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run cProfile over the timed turns of --profile-size only; print the top entries",
    )
    parser.add_argument("--profile-size", type=int, default=GOAL_SIZE)
    parser.add_argument(
        "--reflection",
        choices=["evaluator", "inline"],
        default="evaluator",
        help="how facts are learned: the evaluator's own call, or inline in decide",
    )
    args = parser.parse_args(argv)
    if args.turns < 1 or args.warmup < 0 or not args.sizes:
        parser.error("--turns must be >= 1, --warmup >= 0, and --sizes not empty")
    args.sizes = [args.profile_size] if args.profile else sorted(args.sizes)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="carrier-bench-"))
    try:
        server, where = server_url(home)
        settings = Settings(home=home, reflection=args.reflection)
        print_machine(where, server_versions(server), settings)
        results = [run_size(server, home, size, args) for size in args.sizes]
        print("\nTurn overhead per size (instant model)")
        print_table(results)
        for r in results:
            if r.group_calls:
                shown = ", ".join(f"{k} {v:.2f}" for k, v in r.group_calls.items())
                print(f"  {r.size:,}: text-model calls per group message: {shown}")
        print_goals(results)
    finally:
        stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)
    print(f"\nTotal run time {time.perf_counter() - started:.0f} s")
    return 0


def stop_embedded(home: Path) -> None:
    """Stop the embedded server, if this run started one, before its folder is removed."""
    pg_dir = home / "pg"
    if not (pg_dir / "PG_VERSION").exists():
        return
    import pgserver

    pgserver.get_server(pg_dir).cleanup()


if __name__ == "__main__":
    sys.exit(main())
