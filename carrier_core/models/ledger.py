"""The usage ledger: every model call written to Postgres, and the daily budget.

Each call is one row of `model_calls`: agent, turn and step, provider, model, role,
tokens in and out, latency, and its cost estimated from its model provider's prices
(`prices.py`). A call that failed is recorded too, with its error, as are the providers
a fallback passed over.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from carrier_core.models.base import Embeddings, Generation, ModelBudgetExceeded
from carrier_core.models.prices import estimate_cost, is_priced
from carrier_core.store.usage import ModelCall

if TYPE_CHECKING:
    from carrier_core.store.store import Store

log = logging.getLogger(__name__)


@functools.cache
def _warn_unpriced(model: str) -> None:
    """Once per model: its calls are ledgered at $0, so a daily budget does not see them."""
    log.warning(
        "no price for model %s in its model provider's prices: its calls count as $0", model
    )


def check_budget(store: Store, agent_id: uuid.UUID, budget: float | None) -> None:
    """Raise `ModelBudgetExceeded` before a call when the agent's spend today (UTC) has
    reached `budget` (the `daily_budget_usd` setting; None: no budget)."""
    if budget is None:
        return
    spent = store.spent_today(agent_id)
    if spent >= budget:
        raise ModelBudgetExceeded(
            f"agent {agent_id} has spent ${spent:.4f} of its ${budget:.4f} daily model"
            " budget (CARRIER_DAILY_BUDGET_USD); no more model calls today (UTC)"
        )


def _provider(model: Any) -> str:
    return str(
        getattr(model, "provider", "")
        or ("offline" if getattr(model, "offline", False) else "unknown")
    )


def ledger_rows(
    agent_id: uuid.UUID,
    *,
    role: str,
    model: Any,
    started: float,
    result: Generation | Embeddings | None = None,
    error: BaseException | None = None,
    task: str | None = None,
    turn_id: uuid.UUID | None = None,
    step: str | None = None,
) -> list[ModelCall]:
    """The ledger rows of one call: the call itself, and any providers a fallback passed over."""
    latency_ms = int((time.monotonic() - started) * 1000)
    calls: list[ModelCall] = []
    base = ModelCall(
        agent_id=agent_id,
        provider=_provider(model),
        model=str(getattr(model, "name", "?")),
        role=role,
        task=task,
        turn_id=turn_id,
        step=step,
    )
    if result is not None:
        for failure in getattr(result, "fallbacks", ()):
            where, _, reason = failure.partition(": ")
            provider, _, name = where.partition("/")
            calls.append(
                base._replace(
                    provider=provider, model=name or "?", status="error", error=reason[:1000]
                )
            )
        output_tokens = getattr(result.usage, "output_tokens", 0)
        provider = result.provider or base.provider
        if provider != "offline" and not is_priced(result.model):
            _warn_unpriced(result.model)
        calls.append(
            base._replace(
                provider=provider,
                model=result.model,
                input_tokens=result.usage.input_tokens,
                output_tokens=output_tokens,
                latency_ms=latency_ms,
                cost_usd=estimate_cost(result.model, result.usage.input_tokens, output_tokens),
            )
        )
    else:
        calls.append(
            base._replace(
                status="error",
                error=f"{type(error).__name__}: {error}"[:1000],
                latency_ms=latency_ms,
            )
        )
    return calls


def record_call(store: Store, agent_id: uuid.UUID, **call: Any) -> None:
    """Write one call's rows to the ledger now (see `record_call_rows`)."""
    record_call_rows(store, ledger_rows(agent_id, **call))


def record_call_rows(store: Store, calls: list[ModelCall]) -> None:
    """Write ledger rows now. A ledger that cannot be written is logged, never allowed to
    fail the work that made the call."""
    try:
        store.record_model_calls(calls)
    except Exception as exc:  # the ledger is bookkeeping: the turn goes on
        log.warning("usage ledger not written: %s: %s", type(exc).__name__, exc)


def embed_recorded(
    store: Store, agent_id: uuid.UUID, model: Any, texts: list[str], *, step: str
) -> Embeddings:
    """Embed outside a turn (knowledge, reembed), writing the ledger row of the call whether
    it succeeds or fails."""
    embeddings, calls = embed_measured(store, agent_id, model, texts, step=step)
    record_call_rows(store, calls)
    return embeddings


def embed_measured(
    store: Store, agent_id: uuid.UUID, model: Any, texts: list[str], *, step: str
) -> tuple[Embeddings, list[ModelCall]]:
    """Embed, and give back the call's ledger rows for the caller to write with what it
    stores (`Store.set_embeddings`: one statement). A failed call's rows are written now."""
    started = time.monotonic()
    where = {"role": "embedding", "model": model, "started": started, "step": step}
    try:
        embeddings: Embeddings = model.embed(texts)
    except Exception as exc:
        record_call(store, agent_id, **where, error=exc)
        raise
    return embeddings, ledger_rows(agent_id, **where, result=embeddings)
