"""Turns: what became of a message — its status, replies, steps, decision and model usage."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from carrier_core.api.deps import Caller, RuntimeDep, services, turn_of
from carrier_core.api.errors import ApiError
from carrier_core.api.posting import scoped_key
from carrier_core.auth import Forbidden, Principal
from carrier_core.memory import MemoryKind
from carrier_core.runtime import Runtime
from carrier_core.storable import StorableText
from carrier_core.store.turns import TurnRecord
from carrier_core.turn import approval

#: The character setting that lets end users answer approvals in their own rooms.
END_USERS_APPROVE = "approvals_by_end_users"

router = APIRouter(prefix="/v1/turns", tags=["turns"])


class Reply(BaseModel):
    id: uuid.UUID
    text: str
    actions: list[str]
    #: Media the reply carries (ElizaOS's `Media` shape), as the action gave them.
    attachments: list[dict[str, Any]]


class Sent(BaseModel):
    """A message the turn's agent sent to another of its rooms (SEND_MESSAGE)."""

    id: uuid.UUID
    #: The room's key, as its clients name it.
    room: str
    text: str
    actions: list[str]


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
    #: failed and is tried again; `error` says why), awaiting_approval (an action waits for
    #: a person's answer: see `approval`), done or failed.
    status: str
    error: str | None
    #: What the agent said in the message's room.
    replies: list[Reply]
    usage: Usage
    #: Set when the message was answered together with later ones (an agent that coalesces
    #: double texts): that turn's id. Status and replies are then that turn's.
    answered_by: uuid.UUID | None = None
    #: What the turn's actions sent to other rooms of the agent.
    sent: list[Sent] = []
    #: The turn's latest approval request: `id`, `action`, `arguments` (the decided `text`
    #: and the `message` it answers), `status` (pending, approved, rejected, expired),
    #: `requested_at`, `expires_at`, `answered_at`, `answered_by`, `reason`. Null if none.
    approval: dict[str, Any] | None = None


class ApprovalAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: True to let the action run, false to refuse it.
    approve: bool
    #: Why, kept with the answer and shown to the agent's next steps.
    reason: StorableText | None = Field(default=None, max_length=1000)


class StepView(BaseModel):
    step: str
    key: str | None
    status: str
    #: What the step did. A decide step's holds the prompt it sent (`prompt`: `system` and
    #: `text`), its size in tokens (`prompt_tokens`, `prompt_budget`, `prompt_cut`), the
    #: model and the actions chosen.
    detail: dict[str, Any]
    model_calls: int
    input_tokens: int
    output_tokens: int
    started_at: datetime
    finished_at: datetime
    #: finished_at - started_at, in milliseconds.
    duration_ms: int


class ModelCallView(BaseModel):
    """One row of the usage ledger: a model call the turn made."""

    #: The step that made it: decide, act or evaluate.
    step: str | None
    provider: str
    model: str
    #: large, small or embedding.
    role: str
    #: What it was for (decide, reflect, describe_image, should_respond, ...), when said.
    task: str | None
    #: ok or error (then `error` says why).
    status: str
    error: str | None
    input_tokens: int
    output_tokens: int
    latency_ms: int
    #: Estimated from list prices; 0 for models without a known price.
    cost_usd: float


class DecisionView(BaseModel):
    #: Decide steps run so far.
    steps_taken: int
    #: The latest decide step's answer: `thought`, `actions`, `text`, `providers`; null
    #: before the first decide step ends.
    decision: dict[str, Any] | None
    #: What the providers composed for that step's prompt (conversation, facts, people,
    #: time, actions, ...), by name.
    state: dict[str, Any]


def turn_view(runtime: Runtime, turn: TurnRecord, caller: Principal | None = None) -> TurnView:
    """The turn as `caller` sees it: rooms by the keys the caller names them with (an end
    user's without the scope their keys are stored under)."""
    store = runtime.store
    scope = "" if caller is None else scoped_key(caller, "")
    answering = store.answering(turn)
    turn_id = answering.id
    calls = store.model_calls(turn_id)
    approvals = store.turn_approvals(turn_id)
    said = store.turn_memories(turn_id, MemoryKind.MESSAGE)
    return TurnView(
        turn_id=turn.id,
        agent_id=turn.agent_id,
        message_id=turn.message_id,
        status=approval.turn_status(answering, approvals[-1] if approvals else None),
        error=answering.error,
        answered_by=turn.answered_by,
        replies=[
            Reply(
                id=m.id,
                text=m.content.text,
                actions=m.content.actions,
                attachments=m.content.attachments,
            )
            for m in said
            if m.room_id == answering.room_id
        ],
        sent=[
            Sent(
                id=m.id,
                room=store.room(m.room_id).name.removeprefix(scope),
                text=m.content.text,
                actions=m.content.actions,
            )
            for m in said
            if m.room_id is not None and m.room_id != answering.room_id
        ],
        usage=Usage(
            model_calls=len(calls),
            input_tokens=sum(c.input_tokens for c in calls),
            output_tokens=sum(c.output_tokens for c in calls),
            cost_usd=round(sum(c.cost_usd for c in calls), 6),
        ),
        approval=approvals[-1].as_json() if approvals else None,
    )


@router.get("/{turn_id}", response_model=TurnView)
def get_turn(runtime: RuntimeDep, principal: Caller, turn_id: uuid.UUID) -> TurnView:
    """Poll this until `status` is done or failed (or listen on the WebSocket)."""
    return turn_view(runtime, turn_of(runtime, principal, turn_id), principal)


@router.post("/{turn_id}/approval", response_model=TurnView)
def answer_approval(
    request: Request,
    runtime: RuntimeDep,
    principal: Caller,
    turn_id: uuid.UUID,
    body: ApprovalAnswer,
) -> TurnView:
    """Approve or refuse the action the turn waits on; the turn goes on at once. The
    tenant's API keys may answer; an end user only in their own room, and only when the
    agent's character allows it (`settings.approvals_by_end_users: true`). 409 when no
    approval waits (none asked, or answered already), or it expired (the turn then goes
    on without the action)."""
    turn = turn_of(runtime, principal, turn_id)
    if principal.is_end_user:
        allowed = runtime.store.character(turn.agent_id).settings.get(END_USERS_APPROVE)
        if allowed is not True:
            raise Forbidden(
                "this agent's approvals need an API key (its character does not set"
                f" settings.{END_USERS_APPROVE})"
            )
    try:
        settled, token = approval.answer(
            runtime.store, turn_id, approve=body.approve, by=_who(principal), reason=body.reason
        )
    except approval.Expired as expired:
        _resume(request, runtime, expired.approval, expired.token)
        raise ApiError(409, "conflict", str(expired)) from None
    except approval.NotPending as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    _resume(request, runtime, settled, token)
    return turn_view(runtime, runtime.store.turn(turn_id), principal)


def _resume(
    request: Request, runtime: Runtime, settled: approval.Approval, token: str | None
) -> None:
    resume = services(request).resume
    if resume is not None:
        resume(settled, token)
    else:
        # In this process the room runs again within the request. Imported here: the
        # turn's steps are no part of a server that hands turns to runners elsewhere (the
        # api function's cold start).
        from carrier_core.turn.run import resume_turn

        resume_turn(runtime, settled.turn_id)


def _who(principal: Principal) -> str:
    return f"user:{principal.user}" if principal.user is not None else f"key:{principal.key_id}"


@router.get("/{turn_id}/steps", response_model=list[StepView])
def get_turn_steps(runtime: RuntimeDep, principal: Caller, turn_id: uuid.UUID) -> list[StepView]:
    """The turn's history: one row per step run, with what it did and the tokens it used."""
    principal.require_key("reading a turn's steps")
    turn_of(runtime, principal, turn_id)
    return [
        StepView.model_validate(s, from_attributes=True) for s in runtime.store.turn_steps(turn_id)
    ]


@router.get("/{turn_id}/calls", response_model=list[ModelCallView])
def get_turn_calls(
    runtime: RuntimeDep, principal: Caller, turn_id: uuid.UUID
) -> list[ModelCallView]:
    """The turn's model calls, in order: provider, model, tokens, latency, estimated cost."""
    principal.require_key("reading a turn's model calls")
    turn_of(runtime, principal, turn_id)
    return [
        ModelCallView.model_validate(c, from_attributes=True)
        for c in runtime.store.model_calls(turn_id)
    ]


@router.get("/{turn_id}/decision", response_model=DecisionView)
def get_turn_decision(runtime: RuntimeDep, principal: Caller, turn_id: uuid.UUID) -> DecisionView:
    """What the agent decided, and what its prompt was composed of."""
    principal.require_key("reading a turn's decision")
    turn = turn_of(runtime, principal, turn_id)
    return DecisionView(steps_taken=turn.steps_taken, decision=turn.decision, state=turn.state)
