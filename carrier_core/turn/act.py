"""Act: run one chosen action (validate, then handler) and store what it says.

One action per call, so each can run as its own Lambda invocation. Reply
memories carry a key made of the turn, step and action position: running the
same action again (a retried invocation) stores nothing twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from carrier_core.decision import Decision
from carrier_core.memory import Content, Memory, MemoryKind
from carrier_core.runtime import Runtime
from carrier_core.turn.context import TurnContext
from carrier_core.world import RoomKind

FAILED_ACTION_REPLY = "Sorry, something went wrong on my side while doing that ({action})."


@dataclass(frozen=True)
class Acted:
    action: str
    reply_ids: list[uuid.UUID] = field(default_factory=list)
    continue_turn: bool = False
    error: str | None = None


def _say(ctx: TurnContext, texts: list[str], action: str, key: str) -> list[uuid.UUID]:
    ids = []
    for n, text in enumerate(t for t in texts if t.strip()):
        memory, _ = ctx.runtime.store.add_memory(
            Memory(
                agent_id=ctx.message.agent_id,
                entity_id=ctx.message.agent_id,
                room_id=ctx.room.id,
                world_id=ctx.room.world_id,
                kind=MemoryKind.MESSAGE,
                content=Content(
                    text=text, actions=[action], source="agent", in_reply_to=ctx.message.id
                ),
                dedupe_key=f"{key}:{n}",
            ),
            turn_id=ctx.turn.id,
        )
        ids.append(memory.id)
    return ids


def act(runtime: Runtime, turn_id: uuid.UUID, index: int) -> Acted:
    ctx = TurnContext.load(runtime, turn_id)
    if ctx.turn.decision is None:
        raise ValueError(f"turn {turn_id} has no decision to act on; run decide first")
    decision = Decision.model_validate(ctx.turn.decision)
    if not 0 <= index < len(decision.actions):
        raise IndexError(
            f"turn {turn_id} chose {len(decision.actions)} action(s); there is no action {index}"
        )
    name = decision.actions[index]
    action = ctx.plugins.action(name)
    if action is None:
        ctx.record_step(f"act:{name}", "skipped", reason=f"no action named {name!r}")
        return Acted(name, error=f"no action named {name!r}")
    step = f"act:{action.name}"
    if not action.validate(ctx):
        ctx.record_step(step, "skipped", reason="its validate declined")
        return Acted(action.name)
    key = f"reply:{turn_id}:{ctx.turn.steps_taken}:{index}"
    try:
        result = action.handler(ctx, decision)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        apology = []
        if ctx.room.kind is RoomKind.DM:
            # Someone is waiting for an answer in a direct conversation: say what happened.
            apology = _say(ctx, [FAILED_ACTION_REPLY.format(action=action.name)], action.name, key)
        ctx.record_step(step, "error", error=error)
        return Acted(action.name, reply_ids=apology, error=error)
    reply_ids = _say(ctx, result.replies, action.name, key)
    ctx.record_step(
        step, "ok", replies=len(reply_ids), continue_turn=result.continue_turn, **result.data
    )
    return Acted(action.name, reply_ids=reply_ids, continue_turn=result.continue_turn)
