"""Evaluate: after the reply, let evaluators learn from the turn.

An evaluator that fails is recorded and the others still run: learning
nothing this time never costs the conversation.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from carrier_core.decision import Decision
from carrier_core.events import EventType, emit
from carrier_core.store.turns import StepUsage
from carrier_core.turn.context import TurnContext

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime


def evaluate(runtime: Runtime, turn_id: uuid.UUID, *, force: bool = False) -> list[str]:
    """Run the evaluators that are due; returns the names of those that ran.

    `force` skips the evaluators' own cadence checks: a chat that ends reflects
    on what is left rather than wait for a next message that may not come.
    """
    ctx = TurnContext.load(runtime, turn_id, "evaluate", unreflected=True)
    decision = Decision.model_validate(ctx.turn.decision or {})
    responded = decision.actions != ["IGNORE"]
    ran = []
    for evaluator in ctx.plugins.evaluators:
        if not (responded or evaluator.always_run):
            continue
        ctx.usage, ctx.started_at = StepUsage(), datetime.now(UTC)
        step = f"evaluate:{evaluator.name}"
        started = False  # its events: STARTED before the handler, COMPLETED after it
        try:
            if not (force or evaluator.validate(ctx)):
                continue
            started = True
            emit(
                runtime,
                ctx.plugins,
                ctx.turn,
                EventType.EVALUATOR_STARTED,
                evaluator=evaluator.name,
            )
            detail = evaluator.handler(ctx)
            if not isinstance(detail, dict):
                raise TypeError(f"handler returned {type(detail).__name__}, not a dict")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            ctx.record_step(step, "error", error=error)
            if started:
                _completed(ctx, evaluator.name, "error", error=error)
            continue
        ctx.record_step(step, "ok", result=detail)
        _completed(ctx, evaluator.name, "ok")
        ran.append(evaluator.name)
    return ran


def _completed(ctx: TurnContext, evaluator: str, status: str, **detail: str) -> None:
    kind = EventType.EVALUATOR_COMPLETED
    emit(ctx.runtime, ctx.plugins, ctx.turn, kind, evaluator=evaluator, status=status, **detail)
