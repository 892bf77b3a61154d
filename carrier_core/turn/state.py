"""Composing state: run the providers side by side, each within a time limit.

A provider that raises or runs past `provider_timeout_s` is left out of the
prompt and named in the step's history; the turn goes on without it.
"""

from __future__ import annotations

from concurrent.futures import Future, wait

from carrier_core.plugin import ProviderResult
from carrier_core.turn.context import State, TurnContext


def compose_state(ctx: TurnContext) -> State:
    providers = ctx.plugins.providers
    futures: dict[str, Future[ProviderResult]] = {
        p.name: ctx.runtime.executor.submit(p.get, ctx) for p in providers
    }
    wait(futures.values(), timeout=ctx.runtime.settings.provider_timeout_s)
    state = State(values=dict(ctx.state.values))
    for provider in providers:
        future = futures[provider.name]
        if not future.done():
            future.cancel()
            state.errors[provider.name] = (
                f"timed out after {ctx.runtime.settings.provider_timeout_s:g}s"
            )
            continue
        error = future.exception()
        if error is not None:
            state.errors[provider.name] = f"{type(error).__name__}: {error}"
            continue
        result = future.result()
        if result.text.strip():
            state.texts[provider.name] = result.text
        state.values.update(result.values)
    return state
