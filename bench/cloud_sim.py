"""Cloud path under the emulator: N rooms x M messages, a model of fixed latency, real concurrency.

What a turn costs on AWS as `template.yaml` deploys it, measured on the emulator
(`carrier_aws.local.Emulator`: the real handlers and the real state machine on moto, all
in this process) with a model stub registered by a plugin defined here: its text model
sleeps a fixed latency (default 2 s) and then answers as the offline model does; its
embeddings are the offline `HashEmbedding` (instant).

The api function's app is served by uvicorn on a local port. One client thread per room
posts that room's M messages `--gap` seconds apart (shorter than a turn, so a room's later
messages arrive while its runner is busy), all rooms at once. Each post is answered 202
once the message and its turn are stored, and the first post of an idle room starts the
room's runner (a Standard execution named room-<room id>-g<generation>), which drains the
room's turns one at a time. One warm-up turn in a room of its own runs first; counters are
taken after it, so figures are for the N x M measured turns. Per turn, it reports:

- Lambda seconds billed / model seconds (goal <= 1.15). Billed: each invocation's wall time
  rounded up to the millisecond (`Emulator.billed_ms`) of every function a turn invokes:
  the HTTP API function (the POSTs), llm_step, action_exec, turn_finish, memory_embed.
  Model seconds: the turns' `model_calls.latency_ms` in the usage ledger, checked against
  the stub's own count of its sleeps.
- AWS API calls made by the handlers, by service and operation (`Emulator.api_calls`;
  DescribeExecution: goal 0), and the state machine's own service integrations (its
  Lambda invokes and SQS sends, from the histories).
- State transitions: `*StateEntered` events in the runners' execution histories (moto
  records one per state entered, Map iterations' inner states included), plus Task
  retries (`TaskScheduled` events beyond one per `TaskStateEntered`), as Standard bills.
- Peak database connections: `pg_stat_activity` of the database, sampled every 10 ms
  from a thread of its own (its own and the bench's connections left out). In the
  emulator all handlers share one runtime, whose pool (`carrier_aws.runtime`) holds one
  connection: the measured peak is that pool's. The cloud's is estimated from the peaks
  of concurrent invocations per function (one connection per Lambda container). The
  handlers' waits for that shared pool (psycopg_pool's `requests_wait_ms`, summed over
  threads, so overlapping) are shown too: they are part of the billed time, grow with the
  rooms, and are mostly the emulator's (in Lambda, containers do not share a pool).
- Turns per second: turns / (last turn done - first post accepted).
- accept->done minus the turn's model time, p50/p95 (accept: the client has the 202;
  done: `turns.updated_at` of the done turn), split into the wait for the room's earlier
  turns and the turn's own overhead.
- The AWS cost per 1,000 turns from the template's memory sizes and the list prices in
  `PRICES`: Standard (what the template deploys) and Express for the same executions, and
  an estimate of the design before room runners (an ingest Lambda waiting for each turn).

    python bench/cloud_sim.py [--rooms 4] [--messages 5] [--latency 2.0] [--gap 0.3]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from machine import TEXTS, cpu_model, percentile
from psycopg.rows import dict_row

from carrier_core.character import Character
from carrier_core.models import Generation, HashEmbedding, ModelRequest, ModelSet, OfflineModel
from carrier_core.plugin import ModelProvider, Plugin

ROOT = Path(__file__).resolve().parent.parent
CHARACTER = ROOT / "characters" / "ada.json"
GOAL_BILLED_PER_MODEL = 1.15
#: Connections the bench itself opens are named so, and left out of the count.
APP_NAME = "cloud_sim"
#: The sweeps fire once as the emulator starts, then not again during a run (their cost
#: is per minute, whatever the traffic, not per turn).
SCHEDULE_INTERVAL_S = 3600.0

#: List prices, US East (N. Virginia), USD, on-demand, first tier; free tiers left out.
#: From the AWS pricing pages (Lambda, Step Functions, SQS, API Gateway), as of 2025.
PRICES: dict[str, float] = {
    # Lambda, arm64: per GB-second of billed duration (first 7.5 billion GB-s a month),
    # and per request.
    "lambda_gb_s_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    # Step Functions Standard: per state transition (retries count).
    "sfn_standard_transition": 0.025 / 1000,
    # Step Functions Express: per execution, and per GB-second (first 1,000 GB-hours a
    # month), the memory rounded up to 64 MB chunks and the duration to 100 ms.
    "sfn_express_request": 1.00 / 1e6,
    "sfn_express_gb_s": 0.00001667,
    # SQS: per request (a 64 KB chunk of payload), standard and FIFO queues.
    "sqs_standard_request": 0.40 / 1e6,
    "sqs_fifo_request": 0.50 / 1e6,
    # API Gateway HTTP API: per request (512 KB chunks; first 300 million a month).
    "http_api_request": 1.00 / 1e6,
}
EXPRESS_MEMORY_MB = 64
EXPRESS_ROUND_S = 0.1

#: The design before room runners (for the estimate): the API queued each message (FIFO),
#: an ingest function (256 MB, one record a call) started the turn's own execution and
#: polled DescribeExecution until it ended (first at once, then after 0.2 s, growing 1.5x
#: up to 2 s), so each turn also billed the ingest function for the whole turn.
OLD_INGEST_MEMORY_MB = 256
OLD_POLL = (0.2, 1.5, 2.0)


# -- the model stub ------------------------------------------------------------------------

STUB_PROVIDER = "cloud-sim"


@dataclass
class StubClock:
    """The stub's latency, and what it slept (all roles, all threads)."""

    latency_s: float = 2.0
    calls: int = 0
    slept_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sleep(self) -> None:
        started = time.perf_counter()
        time.sleep(self.latency_s)
        with self.lock:
            self.calls += 1
            self.slept_s += time.perf_counter() - started

    def read(self) -> tuple[int, float]:
        with self.lock:
            return self.calls, self.slept_s


STUB = StubClock()


class StubModel:
    """A text model that takes `STUB.latency_s` to answer what the offline model answers."""

    provider = STUB_PROVIDER

    def __init__(self, role: str):
        self.name = f"{STUB_PROVIDER}-{role}"
        self._offline = OfflineModel()

    def generate(self, request: ModelRequest) -> Generation:
        STUB.sleep()
        answer = self._offline.generate(request)
        return Generation(
            text=answer.text, usage=answer.usage, model=self.name, provider=self.provider
        )


def stub_models(character: object) -> ModelSet:
    return ModelSet(small=StubModel("small"), large=StubModel("large"), embedding=HashEmbedding())


PLUGIN = Plugin(
    name=STUB_PROVIDER,
    description="A model of fixed latency answering as the offline model (bench/cloud_sim.py).",
    models=[ModelProvider(STUB_PROVIDER, stub_models)],
)
#: How the character names the plugin: this very module (`__main__` when run as a script),
#: which the handlers, running in this process, import by that name.
PLUGIN_REF = f"{__name__}:PLUGIN"


def stub_character() -> Character:
    from carrier_core import load_character

    ada = load_character(CHARACTER)
    settings = {**ada.settings, "model_provider": STUB_PROVIDER}
    return ada.model_copy(update={"plugins": [*ada.plugins, PLUGIN_REF], "settings": settings})


# -- the machine -----------------------------------------------------------------------------


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# -- database connections ------------------------------------------------------------------


class ConnectionSampler:
    """Samples `pg_stat_activity` of the database from a thread of its own: the most
    connections seen at once, and the most of them running a statement."""

    def __init__(self, url: str, interval_s: float = 0.01):
        self.url = url
        self.interval_s = interval_s
        self.peak = 0
        self.peak_active = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-sampler", daemon=True)

    def reset(self) -> None:
        self.peak = self.peak_active = self.samples = 0

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        query = (
            "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'active') AS active"
            " FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND application_name NOT LIKE %s"
        )
        with psycopg.connect(
            self.url, autocommit=True, application_name=f"{APP_NAME}-sampler"
        ) as conn:
            while not self._stop.is_set():
                row = conn.execute(query, (f"{APP_NAME}%",)).fetchone()
                if row is not None:
                    self.peak = max(self.peak, int(row[0]))
                    self.peak_active = max(self.peak_active, int(row[1]))
                    self.samples += 1
                self._stop.wait(self.interval_s)


# -- serving and posting ---------------------------------------------------------------------


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app on uvicorn at 127.0.0.1 (a free port), as `carrier dev` serves it."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@dataclass(frozen=True)
class Posted:
    room: str
    index: int
    turn_id: uuid.UUID
    #: time.time() when the post was sent, and when its 202 was in.
    sent: float
    accepted: float


def post_room(
    base: str,
    key: str,
    agent_id: uuid.UUID,
    room: str,
    count: int,
    gap_s: float,
    start: threading.Barrier,
    posted: list[Posted],
    errors: list[str],
) -> None:
    """Post the room's messages, `gap_s` apart, recording when each was accepted."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        start.wait()
        for n in range(count):
            sent = time.time()
            response = http.post(
                f"/v1/agents/{agent_id}/rooms/{room}/messages",
                json={"text": f"{TEXTS[n % len(TEXTS)]} ({room} #{n})", "sender": f"{room}-user"},
            )
            accepted = time.time()
            if response.status_code != 202:
                errors.append(f"{room} #{n}: {response.status_code} {response.text[:200]}")
            else:
                turn_id = uuid.UUID(response.json()["turn_id"])
                posted.append(Posted(room, n, turn_id, sent, accepted))
            if n < count - 1:
                time.sleep(gap_s)


def post_rooms(
    base: str, key: str, agent_id: uuid.UUID, rooms: Sequence[str], count: int, gap_s: float
) -> tuple[list[Posted], list[str]]:
    posted: list[Posted] = []
    errors: list[str] = []
    start = threading.Barrier(len(rooms))
    threads = [
        threading.Thread(
            target=post_room,
            args=(base, key, agent_id, room, count, gap_s, start, posted, errors),
            name=f"client-{room}",
        )
        for room in rooms
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return posted, errors


def wait_for_turns(url: str, turn_ids: Sequence[uuid.UUID], timeout_s: float) -> None:
    """Until every turn is done or failed (polling Postgres, not the API)."""
    ids = list(turn_ids)
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True, application_name=f"{APP_NAME}-waiter") as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM turns WHERE id = ANY(%s)"
                " AND status IN ('done', 'failed', 'coalesced')",
                (ids,),
            ).fetchone()
            if row is not None and row[0] == len(ids):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids) - (row[0] if row else 0)} turns still unfinished")
            time.sleep(0.05)


# -- what the run left behind ----------------------------------------------------------------


@dataclass(frozen=True)
class TurnRow:
    turn_id: uuid.UUID
    room_id: uuid.UUID
    status: str
    error: str | None
    #: When the runner took the turn up (its first step's start) and when it was done.
    began: float | None
    done: float
    model_ms: int
    model_calls: int


def turn_rows(url: str, turn_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, TurnRow]:
    with psycopg.connect(url, row_factory=dict_row, application_name=APP_NAME) as conn:
        rows = conn.execute(
            "SELECT t.id, t.room_id, t.status, t.error, t.updated_at,"
            " (SELECT min(s.started_at) FROM turn_steps s"
            "  WHERE s.turn_id = t.id AND s.step <> 'ingest') AS began,"
            " (SELECT coalesce(sum(c.latency_ms), 0) FROM model_calls c"
            "  WHERE c.turn_id = t.id) AS model_ms,"
            " (SELECT count(*) FROM model_calls c WHERE c.turn_id = t.id"
            "  AND c.role <> 'embedding') AS model_calls"
            " FROM turns t WHERE t.id = ANY(%s)",
            (list(turn_ids),),
        ).fetchall()
    return {
        r["id"]: TurnRow(
            turn_id=r["id"],
            room_id=r["room_id"],
            status=r["status"],
            error=r["error"],
            began=r["began"].timestamp() if r["began"] else None,
            done=r["updated_at"].timestamp(),
            model_ms=int(r["model_ms"]),
            model_calls=int(r["model_calls"]),
        )
        for r in rows
    }


@dataclass
class Histories:
    """What the runners' execution histories say."""

    executions: int = 0
    entered: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    #: The state machine's service integrations, by resourceType:resource.
    integrations: Counter[str] = field(default_factory=Counter)
    #: Each execution's duration, first event to last (for Express's price).
    durations_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def transitions(self) -> int:
        return sum(self.entered.values()) + self.retries


def read_histories(emulator: Any, room_ids: set[uuid.UUID]) -> Histories:
    found = Histories()
    for execution in emulator.executions():
        name = execution["name"]
        room = name.removeprefix("room-").rsplit("-g", 1)[0]
        if not name.startswith("room-") or uuid.UUID(room) not in room_ids:
            continue
        found.executions += 1
        found.statuses[execution["status"]] += 1
        events = list(emulator.iter_history(execution["executionArn"]))
        scheduled = task_entered = 0
        for event in events:
            kind = event["type"]
            if kind.endswith("StateEntered"):
                found.entered[event["stateEnteredEventDetails"]["name"]] += 1
                task_entered += kind == "TaskStateEntered"
            elif kind == "TaskScheduled":
                scheduled += 1
                details = event.get("taskScheduledEventDetails") or {}
                found.integrations[f"{details.get('resourceType')}:{details.get('resource')}"] += 1
        found.retries += max(0, scheduled - task_entered)
        took = events[-1]["timestamp"] - events[0]["timestamp"]
        found.durations_s.append(took.total_seconds())
    return found


# -- summaries -------------------------------------------------------------------------------


def p50_p95(values: Sequence[float]) -> str:
    return f"{percentile(values, 50):8.0f} {percentile(values, 95):8.0f}"


def diff(after: Counter[Any], before: Counter[Any]) -> Counter[Any]:
    return Counter({k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)})


#: The handlers' pool statistics kept (psycopg_pool's names): connection requests, those
#: that had to queue, the time they waited, and the time connections were held.
POOL_STATS = ("requests_num", "requests_queued", "requests_wait_ms", "usage_ms", "pool_max")


def handler_pool_stats() -> Counter[str]:
    """The statistics of the pool the emulated handlers share (`carrier_aws.runtime`)."""
    from carrier_aws.runtime import runtime

    stats = runtime().store._pool.get_stats()
    return Counter({name: int(stats.get(name, 0)) for name in POOL_STATS})


@dataclass(frozen=True)
class Snapshot:
    invocations: Counter[str]
    billed_ms: Counter[str]
    api_calls: Counter[tuple[str, str, str]]
    stub_calls: int
    stub_slept_s: float
    pool: Counter[str]
    #: CPU seconds of this process (user + system): moto, the handlers, uvicorn, clients.
    cpu_s: float

    @classmethod
    def of(cls, emulator: Any) -> Snapshot:
        calls, slept = STUB.read()
        times = os.times()
        return cls(
            Counter(emulator.invocations),
            Counter(emulator.billed_ms),
            Counter(emulator.api_calls),
            calls,
            slept,
            handler_pool_stats(),
            times.user + times.system,
        )

    def since(self, before: Snapshot) -> Snapshot:
        return Snapshot(
            diff(self.invocations, before.invocations),
            diff(self.billed_ms, before.billed_ms),
            diff(self.api_calls, before.api_calls),
            self.stub_calls - before.stub_calls,
            self.stub_slept_s - before.stub_slept_s,
            Counter({**diff(self.pool, before.pool), "pool_max": self.pool["pool_max"]}),
            self.cpu_s - before.cpu_s,
        )


def old_poll_wait(span_s: float) -> tuple[float, int]:
    """The old ingest function's wait for an execution of `span_s`: until its first
    DescribeExecution that saw it ended, and how many it made."""
    first, growth, most = OLD_POLL
    at, polls, interval = 0.0, 1, first
    while at < span_s:
        at += interval
        polls += 1
        interval = min(interval * growth, most)
    return at, polls


@dataclass
class Result:
    args: argparse.Namespace
    turns: dict[uuid.UUID, TurnRow]
    posted: list[Posted]
    used: Snapshot
    histories: Histories
    memory_mb: dict[str, int]
    peak_concurrency: Counter[str]
    connections: tuple[int, int, int]
    load_before: str
    load_after: str
    wall_s: float


def report(r: Result) -> None:
    args = r.args
    turns = len(r.turns)
    per = 1 / turns
    statuses = Counter(t.status for t in r.turns.values())
    first_accept = min(p.accepted for p in r.posted)
    last_done = max(t.done for t in r.turns.values())
    span = last_done - first_accept

    print(f"Run: {args.rooms} rooms x {args.messages} messages, posts {args.gap:g} s apart")
    print(
        f"  in each room (rooms in parallel); model stub {args.latency:g} s per text call,"
        " embeddings HashEmbedding (instant); 1 warm-up turn first, not counted"
    )
    print(
        f"  {turns} turns: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + f"; first accept to last done {span:.1f} s -> {turns / span:.2f} turns/s"
        f" (whole run {r.wall_s:.1f} s)"
    )
    failed = [t for t in r.turns.values() if t.status != "done"]
    for t in failed[:3]:
        print(f"  ! turn {t.turn_id} {t.status}: {t.error}")

    # -- Lambda ----------------------------------------------------------------------------
    model_s = sum(t.model_ms for t in r.turns.values()) / 1000
    text_calls = sum(t.model_calls for t in r.turns.values())
    billed = r.used.billed_ms
    billed_s = sum(billed.values()) / 1000
    invocations = sum(r.used.invocations.values())
    ratio = billed_s / model_s if model_s else float("nan")
    verdict = "MET" if ratio <= GOAL_BILLED_PER_MODEL else "NOT MET"
    print("\nPer turn")
    print(
        f"  model seconds (usage ledger, model_calls.latency_ms) {model_s * per:8.3f}"
        f"   ({text_calls * per:.2f} text calls; the stub's own sleeps:"
        f" {r.used.stub_slept_s * per:.3f} s in {r.used.stub_calls * per:.2f} calls)"
    )
    print(f"  Lambda seconds billed                               {billed_s * per:8.3f}")
    print(
        f"  Lambda billed / model seconds                       {ratio:8.3f}"
        f"   goal <= {GOAL_BILLED_PER_MODEL}: {verdict}"
    )
    print(
        f"  Lambda billed - model seconds                       {(billed_s - model_s) * per:8.3f}"
    )
    print(f"  Lambda invocations                                  {invocations * per:8.2f}")
    pool = r.used.pool
    pool_wait_s = pool["requests_wait_ms"] / 1000
    print(
        f"  of the billed time, waiting for the shared pool     {pool_wait_s * per:8.3f}"
        f"   (emulator only: {pool['requests_queued'] * per:.1f} of"
        f" {pool['requests_num'] * per:.1f} connection requests queued; connections held"
        f" {pool['usage_ms'] / 1000 * per:.3f} s)"
    )
    print(
        f"  CPU seconds of this process                         {r.used.cpu_s * per:8.3f}"
        "   (moto, handlers, uvicorn, clients; Postgres apart)"
    )
    h = r.histories
    print(
        f"  state transitions (StateEntered + Task retries)     {h.transitions * per:8.2f}"
        f"   ({h.retries} retries; {h.executions} executions, {h.executions * per:.2f} per turn)"
    )

    print("\nLambda by function (memory from template.yaml)")
    print(
        f"  {'function':<22} {'MB':>5} {'calls':>6} {'/turn':>6} {'billed s':>9} {'mean ms':>8}"
        f" {'s/turn':>7} {'peak conc.':>10}"
    )
    for name in sorted(r.used.invocations, key=lambda n: -billed[n]):
        calls = r.used.invocations[name]
        print(
            f"  {name:<22} {r.memory_mb[name]:>5} {calls:>6} {calls * per:>6.2f}"
            f" {billed[name] / 1000:>9.2f} {billed[name] / calls:>8.1f}"
            f" {billed[name] / 1000 * per:>7.3f} {r.peak_concurrency[name]:>10}"
        )
    print(
        "  (peak conc.: most invocations under way at once, over the whole run; the"
        " sweeps fired once at start, before the warm-up, and are left out)"
    )

    print("\nAWS API calls made by the handlers (botocore before-call, by handler context)")
    by_kind: Counter[tuple[str, str]] = Counter()
    for (_, service, operation), n in r.used.api_calls.items():
        by_kind[service, operation] += n
    for (function, service, operation), n in sorted(r.used.api_calls.items()):
        print(f"  {function:<22} {service}.{operation:<28} {n:>5}  {n * per:6.2f}/turn")
    describe = by_kind["stepfunctions", "DescribeExecution"]
    print(
        f"  DescribeExecution: {describe} -> goal 0: {'MET' if describe == 0 else 'NOT MET'};"
        f" StartExecution {by_kind['stepfunctions', 'StartExecution'] * per:.2f}/turn"
    )
    print("  the state machine's service integrations (not API calls: part of its transitions):")
    for integration, n in sorted(h.integrations.items()):
        print(f"    {integration:<30} {n:>5}  {n * per:6.2f}/turn")

    print("\nState transitions by state (StateEntered events)")
    for state, n in sorted(h.entered.items(), key=lambda kv: -kv[1]):
        print(f"  {state:<16} {n:>5}  {n * per:6.2f}/turn")

    # -- latency ---------------------------------------------------------------------------
    by_turn = {p.turn_id: p for p in r.posted}
    done = [t for t in r.turns.values() if t.status == "done"]
    total, waited, overhead, first = [], [], [], []
    for t in done:
        p = by_turn[t.turn_id]
        accept_done = (t.done - p.accepted) * 1000
        total.append(accept_done - t.model_ms)
        if t.began is not None:
            waited.append((t.began - p.accepted) * 1000)
            overhead.append((t.done - t.began) * 1000 - t.model_ms)
        if p.index == 0:
            first.append(accept_done - t.model_ms)
    post_ms = [(p.accepted - p.sent) * 1000 for p in r.posted]
    print("\nLatency, ms (accept: the client has the 202; done: turns.updated_at)")
    print(f"  {'':<58} {'p50':>8} {'p95':>8}")
    print(f"  {'POST until its 202':<58} {p50_p95(post_ms)}")
    print(f"  {'accept->done minus the turn model time, every turn':<58} {p50_p95(total)}")
    print(f"  {'  of which: waiting for earlier turns of its room (+start)':<58} {p50_p95(waited)}")
    print(f"  {'  and: taken up->done minus its model time':<58} {p50_p95(overhead)}")
    print(
        f"  {'accept->done minus model time, first message of a room':<58} {p50_p95(first)}"
        f"   ({len(first)} turns, nothing ahead of them)"
    )

    # -- connections -----------------------------------------------------------------------
    peak, active, samples = r.connections
    cloud = sum(r.peak_concurrency[n] for n in r.used.invocations)
    print("\nDatabase connections (pg_stat_activity of the database, every 10 ms)")
    print(f"  peak {peak} (peak running a statement: {active}) over {samples} samples")
    print(
        "  In the emulator every handler shares this process's runtime, whose pool"
        f" (carrier_aws.runtime) holds at most {r.used.pool['pool_max']} connection(s): the"
        " measured peak is that pool's, not the cloud's, and the handlers queue for it"
        " (the wait above)."
    )
    print(
        f"  In Lambda each container keeps its own connection: the peaks of concurrent"
        f" invocations per function add up to {cloud} containers, so about {cloud}"
        " connections (without RDS Proxy)."
    )

    # -- cost ------------------------------------------------------------------------------
    cost(r, model_s)


def cost(r: Result, model_s: float) -> None:
    turns = len(r.turns)
    k = 1000 / turns
    p = PRICES
    used, h = r.used, r.histories
    gb_s = sum(used.billed_ms[n] / 1000 * r.memory_mb[n] / 1024 for n in used.billed_ms)
    requests = sum(used.invocations.values())
    lambda_compute = gb_s * p["lambda_gb_s_arm64"] * k
    lambda_requests = requests * p["lambda_request"] * k
    standard = h.transitions * p["sfn_standard_transition"] * k
    express_gb_s = sum(
        math.ceil(d / EXPRESS_ROUND_S - 1e-9) * EXPRESS_ROUND_S * EXPRESS_MEMORY_MB / 1024
        for d in h.durations_s
    )
    express = (h.executions * p["sfn_express_request"] + express_gb_s * p["sfn_express_gb_s"]) * k
    sqs_requests = sum(n for i, n in h.integrations.items() if i.startswith("sqs:"))
    sqs_requests += sum(n for (_, s, _), n in used.api_calls.items() if s == "sqs")
    # Lambda's event source receives and deletes each batch it hands a function.
    sqs_batches = sum(used.invocations[n] for n in ("MemoryEmbedFunction", "IngestFunction"))
    sqs_requests += 2 * sqs_batches
    sqs = sqs_requests * p["sqs_standard_request"] * k
    http_posts = used.invocations.get("ApiFunction", 0)
    http = http_posts * p["http_api_request"] * k
    shared = lambda_compute + lambda_requests + sqs + http
    print("\nCost per 1,000 turns, USD (us-east-1 list prices in PRICES; RDS and data transfer")
    print("not included)")
    print(f"  {'':<44} {'Standard':>10} {'Express':>10}")
    rows = [
        (f"Lambda compute ({gb_s / turns:.3f} GB-s/turn, arm64)", lambda_compute, lambda_compute),
        (f"Lambda requests ({requests / turns:.2f}/turn)", lambda_requests, lambda_requests),
        (
            f"Step Functions ({h.transitions / turns:.2f} transitions/turn)",
            standard,
            express,
        ),
        (f"SQS requests ({sqs_requests / turns:.2f}/turn)", sqs, sqs),
        (f"HTTP API requests ({http_posts / turns:.2f}/turn)", http, http),
    ]
    for label, std, exp in rows:
        print(f"  {label:<44} {std:>10.4f} {exp:>10.4f}")
    print(f"  {'total':<44} {shared + standard:>10.4f} {shared + express:>10.4f}")
    print(
        f"  Express: {h.executions} executions of {statistics.fmean(h.durations_s):.1f} s on"
        f" average, {EXPRESS_MEMORY_MB} MB, rounded up to {EXPRESS_ROUND_S:g} s"
        f" ({express_gb_s / turns:.4f} GB-s/turn). Not a drop-in: an Express execution"
        " lasts at most 5 minutes (a runner would hand its room over far sooner than"
        " TURN_LIMIT turns), runs at least once, and its name is not unique (starting a"
        " runner twice would run it twice)."
    )

    # The design before room runners, estimated from this run: each turn its own
    # execution (3 fewer transitions per runner: NextTurn, the first Turn?, Released; one
    # fewer turn_finish invocation), plus the ingest function waiting for the turn.
    spans = [t.done - t.began for t in r.turns.values() if t.began is not None]
    waits = [old_poll_wait(s) for s in spans]
    wait_s = sum(w for w, _ in waits)
    describes = sum(n for _, n in waits)
    finish = used.billed_ms.get("TurnFinishFunction", 0) / max(
        1, used.invocations.get("TurnFinishFunction", 0)
    )
    old_gb_s = (
        gb_s
        - h.executions * finish / 1000 * r.memory_mb.get("TurnFinishFunction", 512) / 1024
        + wait_s * OLD_INGEST_MEMORY_MB / 1024
    )
    old_requests = requests - h.executions + turns
    old_transitions = h.transitions - 3 * h.executions
    # Each message also went through the FIFO ingest queue: sent, received, deleted.
    old_sqs = (sqs_requests * p["sqs_standard_request"] + 3 * turns * p["sqs_fifo_request"]) * k
    old = (
        old_gb_s * p["lambda_gb_s_arm64"] * k
        + old_requests * p["lambda_request"] * k
        + old_transitions * p["sfn_standard_transition"] * k
        + old_sqs
        + http
    )
    old_billed_s = sum(used.billed_ms.values()) / 1000 - h.executions * finish / 1000 + wait_s
    print(
        f"  Before room runners (estimated from this run's turn spans): {old:.4f} Standard;"
        f" Lambda billed / model {old_billed_s / model_s:.3f}, {describes / turns:.1f}"
        f" DescribeExecution and {wait_s / turns:.2f} s of a {OLD_INGEST_MEMORY_MB} MB ingest"
        " function waiting per turn, and each room's next message waited for it."
    )


# -- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Result:
    from carrier_aws.local.emulator import Emulator
    from carrier_core import Runtime, Settings
    from carrier_core.store.database import embedded_database_url
    from carrier_core.tenants import create_key
    from carrier_core.world import LOCAL_TENANT_ID

    STUB.latency_s = args.latency
    home = Path(tempfile.mkdtemp(prefix="carrier-bench-cloud-"))
    try:
        url = embedded_database_url(home)
        settings = Settings(database_url=url, prepared_statements=False)
        with Runtime.open(settings) as runtime:
            agent_id = runtime.register_agent(stub_character())
            key = create_key(runtime.store, LOCAL_TENANT_ID, name="bench").secret
        quiet = {"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING"}
        rooms = [f"room-{n}" for n in range(args.rooms)]
        load_before = load_average()
        started = time.perf_counter()
        with (
            Emulator(url, environment=quiet, schedule_interval_s=SCHEDULE_INTERVAL_S) as emulator,
            serving(emulator.app) as base,
            ConnectionSampler(url) as sampler,
        ):
            memory_mb = {n: f.memory_mb for n, f in emulator.template.functions.items()}
            warmup, errors = post_rooms(base, key, agent_id, ["warm-up"], 1, 0)
            if errors:
                raise SystemExit(f"the warm-up post failed: {errors[0]}")
            wait_for_turns(url, [p.turn_id for p in warmup], 60)
            emulator.drain(timeout=60)
            print(
                f"[warm-up done in {time.perf_counter() - started:.1f} s; posting]",
                file=sys.stderr,
                flush=True,
            )
            before = Snapshot.of(emulator)
            sampler.reset()
            posted, errors = post_rooms(base, key, agent_id, rooms, args.messages, args.gap)
            for error in errors:
                print(f"  ! post refused: {error}", file=sys.stderr)
            turn_ids = [p.turn_id for p in posted]
            budget = 60 + args.messages * (3 * args.latency + 5) * 2
            wait_for_turns(url, turn_ids, budget)
            emulator.drain(timeout=60)
            used = Snapshot.of(emulator).since(before)
            connections = (sampler.peak, sampler.peak_active, sampler.samples)
            turns = turn_rows(url, turn_ids)
            histories = read_histories(emulator, {t.room_id for t in turns.values()})
            peaks = Counter(emulator.peak_concurrency)
        wall_s = time.perf_counter() - started
        return Result(
            args=args,
            turns=turns,
            posted=posted,
            used=used,
            histories=histories,
            memory_mb=memory_mb,
            peak_concurrency=peaks,
            connections=connections,
            load_before=load_before,
            load_after=load_average(),
            wall_s=wall_s,
        )
    finally:
        stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


def stop_embedded(home: Path) -> None:
    """Stop the embedded server this run started, before its folder is removed."""
    pg_dir = home / "pg"
    if not (pg_dir / "PG_VERSION").exists():
        return
    import pgserver

    pgserver.get_server(pg_dir).cleanup()


def print_machine(r: Result) -> None:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("Machine")
    print(f"  cores: {os.cpu_count()} (usable by this process: {usable}); CPU: {cpu_model()}")
    print(f"  load average before: {r.load_before}; after: {r.load_after}")
    print(
        f"  Python {platform.python_version()}, moto {version('moto')},"
        f" boto3 {version('boto3')}, embedded Postgres (pgserver)"
    )
    print(
        "  Everything (client threads, uvicorn, moto, the handlers, Postgres) shares these"
        " cores: billed times include waiting for a CPU.\n"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=4, help="rooms, in parallel (4)")
    parser.add_argument("--messages", type=int, default=5, help="messages per room (5)")
    parser.add_argument(
        "--latency", type=float, default=2.0, help="seconds per text model call (2.0)"
    )
    parser.add_argument(
        "--gap", type=float, default=0.3, help="seconds between a room's posts (0.3)"
    )
    args = parser.parse_args(argv)
    if args.rooms < 1 or args.messages < 1 or args.latency < 0 or args.gap < 0:
        parser.error("--rooms and --messages must be >= 1, --latency and --gap >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Its calls are priced at $0 in the ledger, which would say so once per model.
    logging.getLogger("carrier_core.models.ledger").setLevel(logging.ERROR)
    result = run(args)
    print_machine(result)
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
