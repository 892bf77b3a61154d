"""Act: run one chosen action (validate, then handler) and store what it says.

One action per call, so each can run as its own Lambda invocation. A run is
keyed by its decide step and position: running it again (a retried
invocation) returns what the first run recorded instead of acting twice.
An action that needs approval asks for it and returns without acting; run again
once the request is answered or expired, it acts or records why not (`approval.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from carrier_core.attachments import check_attachments
from carrier_core.decision import Decision
from carrier_core.events import EventType, emit
from carrier_core.memory import Content, Memory, MemoryKind
from carrier_core.models import ModelError
from carrier_core.plugin import Action, ActionResult, OutgoingMessage
from carrier_core.storable import check_storable_json
from carrier_core.store.base import NotFound
from carrier_core.turn import approval
from carrier_core.turn.context import TurnContext
from carrier_core.world import Room, RoomKind, end_user_scope

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime
    from carrier_core.store.turns import StepRecord, TurnStep

FAILED_ACTION_REPLY = "Sorry, something went wrong on my side while doing that ({action})."


@dataclass(frozen=True)
class Acted:
    action: str
    reply_ids: list[uuid.UUID] = field(default_factory=list)
    continue_turn: bool = False
    error: str | None = None
    #: Set while the action waits for a person's approval: the request's id.
    approval_id: uuid.UUID | None = None
    #: The messages it sent to other rooms of the agent (SEND_MESSAGE).
    sent_ids: list[uuid.UUID] = field(default_factory=list)


def _capped(ctx: TurnContext, texts: list[str], what: str = "replies") -> list[str]:
    """The replies (or sent messages) cut to `max_reply_chars`, each cut noted on the step
    (which one, and how long it was): a model that runs on must not become a reply of
    megabytes."""
    limit = ctx.runtime.settings.max_reply_chars
    cuts = [
        {"reply": n, "chars": len(t), "kept": limit} for n, t in enumerate(texts) if len(t) > limit
    ]
    if cuts:
        ctx.usage.detail[f"{what}_cut"] = cuts
    return [t[:limit] for t in texts]


def _check_attachments(result: ActionResult) -> None:
    """Raise, naming what is wrong, unless the handler's attachments are storable
    `Media` objects with a reply to go with."""
    attachments = result.attachments
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise TypeError("handler's attachments must be a list of objects (ElizaOS's Media)")
    try:
        check_storable_json(attachments)
        check_attachments(attachments)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"handler's attachments: {exc}") from None
    if attachments and not any(r.strip() for r in result.replies):
        raise ValueError("handler's attachments need a reply (a non-empty text) to go with")


def _check_sent(ctx: TurnContext, result: ActionResult) -> list[Room]:
    """The rooms the handler's messages go to, in order; raise, naming what is wrong, for
    a room that is not one of the turn's agent's (nor, so, of its tenant), or, in an end
    user's room, not one of that end user's: no plugin sends anywhere its agent could not
    speak, nor makes the agent say an end user's words to another."""
    scope = end_user_scope(ctx.room.name)
    sent = result.sent
    if not isinstance(sent, list) or not all(isinstance(m, OutgoingMessage) for m in sent):
        raise TypeError("handler's sent must be a list of OutgoingMessage")
    rooms = []
    for message in sent:
        if not isinstance(message.text, str):
            raise TypeError("a sent message's text must be a string")
        try:
            room = ctx.runtime.store.room(message.room_id)
        except NotFound:
            room = None
        if room is None or room.agent_id != ctx.turn.agent_id:
            raise ValueError(
                f"handler sent a message to {message.room_id}, not a room of its agent"
            )
        if not room.name.startswith(scope):
            raise ValueError(
                f"handler sent a message to {message.room_id}, not a room of this end user's"
            )
        rooms.append(room)
    return rooms


def _sent(
    ctx: TurnContext, rooms: list[Room], texts: list[str], action: str, key: str
) -> list[Memory]:
    """What an action sends to other rooms, each as the agent's message in its room with
    this turn's id: like a reply, it is idempotent (a retried step stores nothing twice),
    pushed to that room's listeners and delivered to its webhooks."""
    return [
        Memory(
            agent_id=ctx.message.agent_id,
            entity_id=ctx.message.agent_id,
            room_id=room.id,
            world_id=room.world_id,
            kind=MemoryKind.MESSAGE,
            content=Content(text=text, actions=[action], source="agent"),
            dedupe_key=f"sent:{ctx.turn.id}:{key}:{n}",
        )
        for n, (room, text) in enumerate(zip(rooms, _capped(ctx, texts, "sent"), strict=True))
        if text.strip()
    ]


def _replies(
    ctx: TurnContext,
    texts: list[str],
    action: str,
    key: str,
    attachments: list[dict[str, Any]] | None = None,
) -> list[Memory]:
    """What an action says, as messages to store; its attachments go with the last reply.

    Not embedded here: the reply is given first, and the embed step (the embed queue in
    the cloud, batched across turns) embeds it after the turn, off its critical path. Recall
    looks back past the recent messages, which the prompt shows whole, so it never waits.
    """
    texts = _capped(ctx, [t for t in texts if t.strip()])
    last = len(texts) - 1
    return [
        Memory(
            agent_id=ctx.message.agent_id,
            entity_id=ctx.message.agent_id,
            room_id=ctx.room.id,
            world_id=ctx.room.world_id,
            kind=MemoryKind.MESSAGE,
            content=Content(
                text=text,
                actions=[action],
                source="agent",
                in_reply_to=ctx.message.id,
                attachments=(attachments or []) if n == last else [],
            ),
            dedupe_key=f"reply:{ctx.turn.id}:{key}:{n}",
        )
        for n, text in enumerate(texts)
    ]


def act_key(step: int, index: int) -> str:
    """The history key of the action at `index` of decide step `step`'s decision: each
    runs (and says what it says) once under it."""
    return f"act:{step}:{index}"


def step_record(
    ctx: TurnContext, key: str, status: str, acted: Acted, **detail: object
) -> StepRecord:
    """The action's row of the turn's history."""
    return ctx.step_record(
        f"act:{acted.action}",
        status,
        key=key,
        reply_ids=[str(i) for i in acted.reply_ids],
        **({"sent_ids": [str(i) for i in acted.sent_ids]} if acted.sent_ids else {}),
        continue_turn=acted.continue_turn,
        **({"error": acted.error} if acted.error else {}),
        **detail,
    )


def _finish(
    ctx: TurnContext,
    key: str,
    status: str,
    acted: Acted,
    said: Sequence[Memory] = (),
    **detail: object,
) -> Acted:
    """Record the action's step, with the messages it said (one statement)."""
    record = step_record(ctx, key, status, acted, **detail)
    if ctx.runtime.store.record_step(ctx.turn.id, record, said=said):
        return acted
    # Another run of this same step (a retried invocation, a runner taking over) recorded it
    # first, with what it said: that run's result is the step's, and this one stored nothing.
    recorded = ctx.runtime.store.turn_step(ctx.turn.id, key)
    assert recorded is not None, "a keyed step, once recorded, stays"
    return recorded_acted(recorded)


def recorded_acted(step: TurnStep) -> Acted:
    """What an act step that ran already did, as its record says."""
    return Acted(
        action=step.step.removeprefix("act:"),
        reply_ids=[uuid.UUID(i) for i in step.detail.get("reply_ids", [])],
        continue_turn=bool(step.detail.get("continue_turn")),
        error=step.detail.get("error"),
        sent_ids=[uuid.UUID(i) for i in step.detail.get("sent_ids", [])],
    )


@dataclass(frozen=True)
class Outcome:
    """What running an action came to, before it is recorded (its handler ran: once it is
    recorded, `completed` fires its events)."""

    status: str
    acted: Acted
    #: The messages it says (replies, then those it sends to other rooms).
    said: list[Memory]
    #: More for the step's record (`text`, `values`, `data`).
    detail: dict[str, Any]


def _failed(ctx: TurnContext, action: str, key: str, error: str) -> Outcome:
    """A failed action; someone waiting in a direct conversation is told."""
    said = []
    if ctx.room.kind is RoomKind.DM:
        said = _replies(ctx, [FAILED_ACTION_REPLY.format(action=action)], action, f"{key}:failed")
    return Outcome("error", Acted(action, reply_ids=[m.id for m in said], error=error), said, {})


def run_action(ctx: TurnContext, key: str, action: Action, decision: Decision) -> Outcome:
    """Run the action's handler (its validate said yes): what it said and did, to be
    recorded under `key` (by the act step, or by a decide step that ran a simple reply)."""
    emit(ctx.runtime, ctx.plugins, ctx.turn, EventType.ACTION_STARTED, action=action.name)
    try:
        result = action.handler(ctx, decision)
        if not isinstance(result, ActionResult):
            raise TypeError(f"handler returned {type(result).__name__}, not an ActionResult")
        if isinstance(result.replies, str) or not all(isinstance(r, str) for r in result.replies):
            raise TypeError("handler's replies must be a list of strings")
        _check_attachments(result)
        rooms = _check_sent(ctx, result)
        if result.error is not None and not isinstance(result.error, str):
            raise TypeError("handler's error must be a string or None")
    except Exception as exc:
        if isinstance(exc, ModelError) and exc.retryable:
            # A provider that is down or rate limited: the caller retries the action (the
            # state machine does, with backoff) or fails the turn with the reason.
            raise
        return _failed(ctx, action.name, key, f"{type(exc).__name__}: {exc}")
    replies = _replies(ctx, result.replies, action.name, key, result.attachments)
    sent = _sent(ctx, rooms, [m.text for m in result.sent], action.name, key)
    acted = Acted(
        action.name,
        reply_ids=[m.id for m in replies],
        continue_turn=result.continue_turn,
        error=result.error,
        sent_ids=[m.id for m in sent],
    )
    shown = {k: v for k, v in (("text", result.text), ("values", result.values)) if v}
    status = "ok" if result.success else "error"
    return Outcome(status, acted, [*replies, *sent], {"data": result.data, **shown})


def act(runtime: Runtime, turn_id: uuid.UUID, index: int) -> Acted:
    """Run the action at `index` of the turn's latest decision."""
    ctx = TurnContext.load(runtime, turn_id, "act", act_index=index)
    if ctx.turn.decision is None:
        raise ValueError(f"turn {turn_id} has no decision to act on; run decide first")
    decision = Decision.model_validate(ctx.turn.decision)
    if not 0 <= index < len(decision.actions):
        raise IndexError(
            f"turn {turn_id} chose {len(decision.actions)} action(s); there is no action {index}"
        )
    key = act_key(ctx.turn.steps_taken, index)
    if ctx.done is not None:
        return recorded_acted(ctx.done)
    name = decision.actions[index]
    action = ctx.plugins.action(name)
    if action is None:
        error = f"no action named {name!r}"
        return _finish(ctx, key, "skipped", Acted(name, error=error))
    try:
        valid = action.validate(ctx)
    except Exception as exc:
        failed = _failed(ctx, action.name, key, f"validate: {type(exc).__name__}: {exc}")
        return _finish(ctx, key, failed.status, failed.acted, failed.said)
    if not valid:
        return _finish(ctx, key, "skipped", Acted(action.name), reason="its validate declined")
    if action.needs_approval:
        asked = _approval(ctx, key, action.name, decision)
        if asked.status == approval.PENDING:
            return Acted(action.name, approval_id=asked.id)
        if asked.status != approval.APPROVED:
            by = f" by {asked.answered_by}" if asked.answered_by else ""
            why = f": {asked.reason}" if asked.reason else ""
            reason = f"not approved: {asked.status}{by}{why}"
            return _finish(ctx, key, "skipped", Acted(action.name), reason=reason)
        if not runtime.store.use_approval(asked.id):
            # A run of this step took the yes and stopped before its record: it may have
            # acted. An approved action runs at most once, so this run does not.
            error = "the approved action was run before and its result was lost; not run again"
            return _finish(ctx, key, "error", Acted(action.name, error=error))
    outcome = run_action(ctx, key, action, decision)
    acted = _finish(ctx, key, outcome.status, outcome.acted, outcome.said, **outcome.detail)
    return completed(ctx, acted)


def completed(ctx: TurnContext, acted: Acted) -> Acted:
    """Fire the events of an action whose handler ran, once what it said is stored:
    MESSAGE_SENT for each reply, then ACTION_COMPLETED."""
    fire = partial(emit, ctx.runtime, ctx.plugins, ctx.turn)
    if ctx.plugins.event_handlers(EventType.MESSAGE_SENT):  # else no reply need be read
        for reply_id in acted.reply_ids:
            text = ctx.runtime.store.memory(reply_id).content.text
            fire(EventType.MESSAGE_SENT, reply_id=reply_id, text=text, action=acted.action)
    status = {"status": "error", "error": acted.error} if acted.error else {"status": "ok"}
    fire(EventType.ACTION_COMPLETED, action=acted.action, reply_ids=acted.reply_ids, **status)
    return acted


def _approval(ctx: TurnContext, key: str, action: str, decision: Decision) -> approval.Approval:
    """The action's request for approval, asked once (and expired if its time ran out)."""
    asked = ctx.runtime.store.request_approval(
        turn_id=ctx.turn.id,
        agent_id=ctx.turn.agent_id,
        step_key=key,
        action=action,
        arguments={"text": decision.text, "message": ctx.message.content.text},
        timeout_s=ctx.runtime.settings.approval_timeout_s,
    )
    return approval.expire_if_due(ctx.runtime.store, asked)
