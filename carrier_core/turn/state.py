"""Composing state: run the providers side by side, each within a time limit.

A provider that raises, returns something other than a `ProviderResult`, or
runs past `provider_timeout_s` is left out of the prompt and named in the
step's history; the turn goes on without it. Each provider runs on a thread
of its own turn, so one that hangs holds only its own thread and never
starves the providers of later turns.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from carrier_core.plugin import Provider, ProviderResult
from carrier_core.turn.context import State, TurnContext


class _Run(threading.Thread):
    def __init__(self, provider: Provider, ctx: TurnContext):
        super().__init__(name=f"carrier-provider-{provider.name}", daemon=True)
        self.provider, self.ctx = provider, ctx
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.provider.get(self.ctx)
        except BaseException as exc:  # reported, never raised across the thread
            self.error = exc


def compose_state(ctx: TurnContext) -> State:
    runs = [_Run(provider, ctx) for provider in ctx.plugins.providers]
    for run in runs:
        run.start()
    timeout = ctx.runtime.settings.provider_timeout_s
    deadline = time.monotonic() + timeout
    state = State(values=dict(ctx.state.values))
    for run in runs:
        run.join(max(0.0, deadline - time.monotonic()))
        name = run.provider.name
        if run.is_alive():
            state.errors[name] = f"timed out after {timeout:g}s"
        elif run.error is not None:
            state.errors[name] = f"{type(run.error).__name__}: {run.error}"
        elif not isinstance(run.result, ProviderResult):
            state.errors[name] = f"returned {type(run.result).__name__}, not a ProviderResult"
        else:
            if run.result.text.strip():
                state.texts[name] = run.result.text
            state.values.update(run.result.values)
    return state
