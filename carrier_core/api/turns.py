"""Turns: what became of a message — its status, replies, steps and model usage."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from carrier_core.api.deps import Caller, RuntimeDep, turn_of
from carrier_core.memory import MemoryKind
from carrier_core.runtime import Runtime
from carrier_core.store import TurnRecord

router = APIRouter(prefix="/v1/turns", tags=["turns"])


class Reply(BaseModel):
    id: uuid.UUID
    text: str
    actions: list[str]
    #: Media the reply carries (ElizaOS's `Media` shape), as the action gave them.
    attachments: list[dict[str, Any]]


class Usage(BaseModel):
    model_calls: int
    input_tokens: int
    output_tokens: int
    #: Estimated from list prices; 0 for models without a known price.
    cost_usd: float


class TurnView(BaseModel):
    turn_id: uuid.UUID
    agent_id: uuid.UUID
    message_id: uuid.UUID
    #: queued (waiting behind another turn of its room), running, retrying (a model call
    #: failed and is tried again; `error` says why), done or failed.
    status: str
    error: str | None
    replies: list[Reply]
    usage: Usage
    #: Set when the message was answered together with later ones (an agent that coalesces
    #: double texts): that turn's id. Status and replies are then that turn's.
    answered_by: uuid.UUID | None = None


class StepView(BaseModel):
    step: str
    key: str | None
    status: str
    detail: dict[str, Any]
    model_calls: int
    input_tokens: int
    output_tokens: int


def turn_view(runtime: Runtime, turn: TurnRecord) -> TurnView:
    store = runtime.store
    answering = store.answering(turn)
    turn_id = answering.id
    calls = store.model_calls(turn_id)
    return TurnView(
        turn_id=turn.id,
        agent_id=turn.agent_id,
        message_id=turn.message_id,
        status=answering.status,
        error=answering.error,
        answered_by=turn.answered_by,
        replies=[
            Reply(
                id=m.id,
                text=m.content.text,
                actions=m.content.actions,
                attachments=m.content.attachments,
            )
            for m in store.turn_memories(turn_id, MemoryKind.MESSAGE)
        ],
        usage=Usage(
            model_calls=len(calls),
            input_tokens=sum(c.input_tokens for c in calls),
            output_tokens=sum(c.output_tokens for c in calls),
            cost_usd=round(sum(c.cost_usd for c in calls), 6),
        ),
    )


@router.get("/{turn_id}", response_model=TurnView)
def get_turn(runtime: RuntimeDep, principal: Caller, turn_id: uuid.UUID) -> TurnView:
    """Poll this until `status` is done or failed (or listen on the WebSocket)."""
    return turn_view(runtime, turn_of(runtime, principal, turn_id))


@router.get("/{turn_id}/steps", response_model=list[StepView])
def get_turn_steps(runtime: RuntimeDep, principal: Caller, turn_id: uuid.UUID) -> list[StepView]:
    """The turn's history: one row per step run, with what it did and the tokens it used."""
    principal.require_key("reading a turn's steps")
    turn_of(runtime, principal, turn_id)
    return [
        StepView.model_validate(s, from_attributes=True) for s in runtime.store.turn_steps(turn_id)
    ]
