"""Decide: compose state, make the one model call of the turn, and settle the decision.

In a group room the should-respond choice is part of this same call (the
model may pick IGNORE); in a direct conversation the agent always answers.
Output that cannot be parsed at all is answered with a safe reply and the
error is recorded, so a confused model never silently drops a message.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from carrier_core.decision import Decision, parse_decision
from carrier_core.model_output import UnparsableOutput
from carrier_core.runtime import Runtime
from carrier_core.turn.context import TurnContext
from carrier_core.turn.prompt import decide_request
from carrier_core.turn.state import compose_state
from carrier_core.world import RoomKind

SAFE_REPLY = "Sorry, I lost my train of thought there. Could you say that again?"


@dataclass(frozen=True)
class Decided:
    decision: Decision
    respond: bool
    #: Decide steps taken in this turn, this one included.
    steps_taken: int


def settle(decision: Decision, room_kind: RoomKind) -> Decision:
    """Apply the runtime's rules to what the model chose.

    Text with no REPLY is still said (REPLY goes first). In a direct
    conversation IGNORE is overruled, and a decision with nothing to do becomes
    REPLY: someone spoke to the agent alone and waits for an answer.
    """
    actions = [a for a in decision.actions if a]
    if room_kind is RoomKind.GROUP and "IGNORE" in actions:
        return decision.model_copy(update={"actions": ["IGNORE"], "text": ""})
    actions = [a for a in actions if a != "IGNORE"]
    if decision.text.strip() and "REPLY" not in actions:
        actions.insert(0, "REPLY")
    if not actions:
        actions = ["REPLY"] if room_kind is RoomKind.DM else ["IGNORE"]
    return decision.model_copy(update={"actions": actions})


def _json_safe(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in values.items() if isinstance(v, str | int | float | bool | list | None)
    }


def decide(runtime: Runtime, turn_id: uuid.UUID) -> Decided:
    ctx = TurnContext.load(runtime, turn_id)
    ctx.query_embedding()
    ctx.state = compose_state(ctx)
    request = decide_request(ctx)
    generation = ctx.generate(request)
    status, detail = "ok", {}
    try:
        decision = parse_decision(generation.text)
    except UnparsableOutput as exc:
        decision = Decision(thought="(unparsable model output)", actions=["REPLY"], text=SAFE_REPLY)
        status, detail = "error", {"error": str(exc)}
    decision = settle(decision, ctx.room.kind)
    respond = decision.actions != ["IGNORE"]
    steps_taken = ctx.turn.steps_taken + 1
    runtime.store.update_turn(
        turn_id,
        status="acting" if respond else "evaluating",
        decision=decision.model_dump(),
        state=_json_safe(ctx.state.values),
        steps_taken=steps_taken,
    )
    ctx.record_step(
        "decide",
        status,
        actions=decision.actions,
        model=generation.model,
        prompt_chars=len(request.system) + len(request.prompt),
        provider_errors=ctx.state.errors,
        **detail,
    )
    return Decided(decision=decision, respond=respond, steps_taken=steps_taken)
