"""The serverless path's own cost: emulated AWS against a direct `run_turn`, cold imports, layer.

1. Per-turn latency, N turns each, one room, one message at a time as a chat sends them:
   - direct: `run_turn` in this process;
   - emulated: POST to the api function's app (in-process ASGI client), which stores the
     message and its turn and, the room being idle, starts the room's runner (a Step
     Functions execution) → turn_finish (next turn) → llm_step / action_exec / turn_finish
     (finish, then the next turn: none) → embed queue, all on moto in this process
     (`carrier_aws.local.Emulator`), timed until GET /v1/turns/{id} says done.
   Both use the offline model and the same Postgres (embedded, fresh, in a temporary folder);
   the direct runtime turns prepared statements off as the template does for the functions.
   Printed: p50/p95 per path and their ratio. What the emulated path adds is the start of
   an execution and its Lambda hops (one message at a time, so each turn has a runner of
   its own, with the runner's own first step and its end), moto's own request handling,
   and the client polling the turn every 5 ms. Nothing waits for a turn on the server.
   (`bench/cloud_sim.py` measures many rooms at once, with a model of real latency.)
2. Cold import of each handler: `python -X importtime` importing `functions/<name>/app.py`
   in a fresh interpreter with the environment a function has at import (region, Powertools
   names); the cumulative microseconds of the top-level import, best of 3. Goal: llm_step at
   most 300 ms. (This interpreter is `sys.executable`; Lambda runs python3.12 on arm64.)
3. The size of the built layer, zipped, if `.aws-sam/build/CarrierLayer` exists (goal: at
   most 50 MB). Build it first with `.ci/infra-check` (it runs `sam build`).

    python bench/local_e2e.py [--turns 30] [--warmup 3] [--no-turns] [--no-imports]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import TEXTS

ROOT = Path(__file__).resolve().parent.parent
CHARACTER = ROOT / "characters" / "ada.json"
FUNCTIONS = ROOT / "functions"
LAYER = ROOT / ".aws-sam" / "build" / "CarrierLayer"
GOAL_IMPORT_MS = {"llm_step": 300.0}
GOAL_LAYER_MB = 50.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(runs: int, warmup: int, turn: Callable[[int], None]) -> list[float]:
    times = []
    for n in range(warmup + runs):
        started = time.perf_counter()
        turn(n)
        if n >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return times


def bench_turns(runs: int, warmup: int) -> None:
    from fastapi.testclient import TestClient

    from carrier_aws.local.emulator import Emulator, Function
    from carrier_core import Runtime, Settings, load_character, run_turn
    from carrier_core.store.database import embedded_database_url
    from carrier_core.tenants import create_key
    from carrier_core.world import LOCAL_TENANT_ID

    home = Path(tempfile.mkdtemp(prefix="carrier-bench-e2e-"))
    url = embedded_database_url(home)
    settings = Settings(database_url=url, model_provider="offline", prepared_statements=False)
    character = load_character(CHARACTER)
    with Runtime.open(settings) as runtime:
        agent_id = runtime.register_agent(character)
        key = create_key(runtime.store, LOCAL_TENANT_ID, name="bench").secret

        def direct(n: int) -> None:
            message = {"agent_id": agent_id, "room": "direct", "sender": "grace"}
            result = run_turn(runtime, {**message, "text": TEXTS[n % len(TEXTS)]})
            assert result.status == "done", result

        direct_ms = timed(runs, warmup, direct)

    handler_ms: dict[str, list[float]] = {}

    class TimedEmulator(Emulator):
        def call(self, function: Function, event: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().call(function, event)
            finally:
                spent = (time.perf_counter() - started) * 1000
                handler_ms.setdefault(function.name, []).append(spent)

    quiet = {"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING"}
    with TimedEmulator(url, environment=quiet) as emulator:
        client = TestClient(emulator.app, headers={"Authorization": f"Bearer {key}"})
        api_ms: list[float] = []

        def emulated(n: int) -> None:
            started = time.perf_counter()
            posted = client.post(
                f"/v1/agents/{agent_id}/rooms/emulated/messages",
                json={"text": TEXTS[n % len(TEXTS)], "sender": "grace"},
            )
            assert posted.status_code == 202, posted.text
            api_ms.append((time.perf_counter() - started) * 1000)
            turn_id = posted.json()["turn_id"]
            deadline = time.monotonic() + 60
            while True:
                status = client.get(f"/v1/turns/{turn_id}").json()["status"]
                if status in ("done", "failed"):
                    assert status == "done", f"turn {turn_id} failed"
                    return
                assert time.monotonic() < deadline, f"turn {turn_id} still {status}"
                time.sleep(0.005)

        emulated_ms = timed(runs, warmup, emulated)
        emulator.drain()
        execution_ms = []
        for execution in emulator.executions():
            events = list(emulator.iter_history(execution["executionArn"]))
            took = events[-1]["timestamp"] - events[0]["timestamp"]
            execution_ms.append(took.total_seconds() * 1000)

    print(f"Per turn, {runs} turns after {warmup} warm-up, offline model, one room:")
    print(f"  {'path':<10} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for name, values in (("direct", direct_ms), ("emulated", emulated_ms)):
        print(
            f"  {name:<10} {statistics.median(values):8.1f} {percentile(values, 0.95):8.1f}"
            f" {statistics.fmean(values):8.1f}"
        )
    ratio = statistics.median(emulated_ms) / statistics.median(direct_ms)
    print(f"  emulated / direct (p50): {ratio:.1f}x")
    print("  emulated, p50 of its parts (ms):")
    post_ms = statistics.median(api_ms)
    print(f"    POST (api: store the message and turn, start the runner) {post_ms:8.1f}")
    print(
        f"    state machine execution, first to last event {statistics.median(execution_ms):8.1f}"
    )
    for name, values in sorted(handler_ms.items()):
        print(f"    in {name} ({len(values)} calls) {statistics.median(values):8.1f}")
    print("    (No function waits for a turn: the POST answers 202 once the room's runner is")
    print("    started; TurnFinishFunction's calls are the runner's first step and each finish.)")


def import_time_us(function: str) -> int:
    """Cumulative µs of importing the function's app.py in a fresh interpreter."""
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "carrier",
        "POWERTOOLS_METRICS_NAMESPACE": "Carrier",
    }
    code = f"import sys; sys.path.insert(0, {str(FUNCTIONS / function)!r}); import app"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
    )
    for line in done.stderr.splitlines():
        found = re.match(r"import time:\s+\d+\s+\|\s+(\d+)\s+\|\s?(\S+)$", line)
        if found and found.group(2) == "app":
            return int(found.group(1))
    raise RuntimeError(f"no import time for {function}/app.py:\n{done.stderr[-2000:]}")


def bench_imports(repeat: int = 3) -> None:
    print(f"Cold import of each handler (best of {repeat}, {sys.executable}):")
    for folder in sorted(p for p in FUNCTIONS.iterdir() if (p / "app.py").is_file()):
        best = min(import_time_us(folder.name) for _ in range(repeat))
        goal = GOAL_IMPORT_MS.get(folder.name)
        verdict = ""
        if goal is not None:
            verdict = f"  goal <= {goal:.0f} ms: {'ok' if best / 1000 <= goal else 'OVER'}"
        print(f"  {folder.name:<14} {best / 1000:8.1f} ms{verdict}")


def bench_layer() -> None:
    if not LAYER.is_dir():
        print(f"Layer: {LAYER.relative_to(ROOT)} not found; run .ci/infra-check (sam build) first.")
        return
    files = [p for p in LAYER.rglob("*") if p.is_file()]
    unzipped = sum(p.stat().st_size for p in files)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "layer.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in files:
                zipped.write(path, path.relative_to(LAYER))
        size = archive.stat().st_size
    mb = size / 1_000_000
    verdict = "ok" if mb <= GOAL_LAYER_MB else "OVER"
    print(
        f"Layer: {mb:.1f} MB zipped ({unzipped / 1_000_000:.1f} MB unzipped, {len(files)} files);"
        f" goal <= {GOAL_LAYER_MB:.0f} MB zipped: {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=30, help="timed turns per path")
    parser.add_argument("--warmup", type=int, default=3, help="untimed turns first")
    parser.add_argument("--no-turns", action="store_true", help="skip the turn timings")
    parser.add_argument("--no-imports", action="store_true", help="skip the import timings")
    args = parser.parse_args()
    if not args.no_turns:
        bench_turns(args.turns, args.warmup)
    if not args.no_imports:
        bench_imports()
    bench_layer()


if __name__ == "__main__":
    main()
