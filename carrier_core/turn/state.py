"""Composing state: run the providers side by side, each within a time limit.

The default state is every provider that is neither dynamic nor private; those run
only in a decide step after the model named them in `<providers>` (`turn/decide.py`).
A provider that raises, returns something other than a `ProviderResult`, or
runs past `provider_timeout_s` is left out of the prompt and named in the
step's history; the turn goes on without it.

Providers run on a small set of long-lived daemon threads: starting threads
for every turn cost more than the providers themselves. A worker stuck in a
provider that never returns is replaced, so it holds only itself and never
starves later turns; being a daemon, it never keeps the process from exiting.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from functools import partial
from typing import Any

from carrier_core.plugin import ProviderResult
from carrier_core.turn.context import State, TurnContext

_Job = tuple[Callable[[], Any], "Future[Any]"]


class _Workers:
    def __init__(self, size: int):
        self._size = size
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0
        self.add(size)

    def add(self, count: int) -> None:
        for _ in range(count):
            with self._lock:
                self._live += 1
            threading.Thread(target=self._work, name="carrier-provider", daemon=True).start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((fn, future))
        return future

    def _work(self) -> None:
        while True:
            fn, future = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the waiting step, never lost
                    future.set_exception(exc)
            with self._lock:
                if self._live > self._size:
                    # A replacement took this worker's place while it was stuck.
                    self._live -= 1
                    return


_workers: _Workers | None = None
_workers_lock = threading.Lock()


def _pool() -> _Workers:
    global _workers
    with _workers_lock:
        if _workers is None:
            _workers = _Workers(16)
        return _workers


def compose_state(ctx: TurnContext, asked: frozenset[str] = frozenset()) -> State:
    """Run the default providers, and the dynamic and private ones named in `asked`."""
    workers = _pool()
    providers = [
        p for p in ctx.plugins.providers if not (p.dynamic or p.private) or p.name in asked
    ]
    futures = [workers.submit(partial(p.get, ctx)) for p in providers]
    timeout = ctx.runtime.settings.provider_timeout_s
    wait(futures, timeout=timeout)
    state = State(values=dict(ctx.state.values))
    stuck = 0
    for provider, future in zip(providers, futures, strict=True):
        name = provider.name
        if not future.done():
            stuck += not future.cancel()  # cancel() fails once the provider is running
            state.errors[name] = f"timed out after {timeout:g}s"
        elif (error := future.exception()) is not None:
            state.errors[name] = f"{type(error).__name__}: {error}"
        elif not isinstance(result := future.result(), ProviderResult):
            state.errors[name] = f"returned {type(result).__name__}, not a ProviderResult"
        elif not (isinstance(result.text, str) and isinstance(result.values, dict)):
            state.errors[name] = (
                f"returned a ProviderResult with text of type {type(result.text).__name__} and"
                f" values of type {type(result.values).__name__}: text must be a str, values a"
                " dict"
            )
        else:
            if result.text.strip():
                state.texts[name] = result.text
            state.values.update(result.values)
    workers.add(stuck)
    return state
