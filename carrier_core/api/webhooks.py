"""Webhooks of an agent: URLs its replies are POSTed to, signed, with every delivery kept.

The secret that verifies the requests is in the answer that makes the webhook, once:
it cannot be read again (delete the webhook and make a new one to replace it).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from carrier_core.api.deps import AgentRef, Caller, RuntimeDep
from carrier_core.api.errors import ApiError
from carrier_core.api.pages import Cursor, Limit, Page, seq_cursor
from carrier_core.api.posting import agent_of
from carrier_core.auth import Principal
from carrier_core.runtime import Runtime
from carrier_core.storable import StorableText
from carrier_core.store.base import NotFound
from carrier_core.webhooks import (
    Delivery,
    InvalidWebhookUrl,
    TooManyWebhooks,
    Webhook,
    create_webhook,
    delete_webhook,
)
from carrier_core.webhooks.targets import MAX_URL_CHARS

router = APIRouter(prefix="/v1/agents/{agent}/webhooks", tags=["webhooks"])


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Where to POST each reply: http(s), a public address.
    url: StorableText = Field(
        min_length=1, max_length=MAX_URL_CHARS, examples=["https://example.com/hook"]
    )
    #: Only this room's replies (the client's room key); omit for every room of the agent.
    room: StorableText | None = Field(default=None, min_length=1, max_length=200)


class WebhookView(BaseModel):
    id: uuid.UUID
    agent_id: uuid.UUID
    url: str
    room: str | None
    created_at: datetime


class NewWebhookView(WebhookView):
    #: Verifies the requests (Standard Webhooks, `whsec_...`): store it now, it cannot be
    #: shown again.
    secret: str


class DeliveryView(BaseModel):
    #: Also the `webhook-id` header of its requests: the same on every attempt.
    id: uuid.UUID
    webhook_id: uuid.UUID
    turn_id: uuid.UUID
    #: The reply delivered; null for an approval request (`payload.type` says which).
    reply_id: uuid.UUID | None
    #: pending (to be tried, again), delivered, or failed (every attempt failed).
    status: str
    attempts: int
    #: The HTTP status of the last attempt; null if it got no answer.
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    #: The request body sent.
    payload: dict[str, Any]


def _view(hook: Webhook) -> WebhookView:
    return WebhookView(
        id=hook.id, agent_id=hook.agent_id, url=hook.url, room=hook.room, created_at=hook.created_at
    )


def _delivery_view(found: Delivery) -> DeliveryView:
    return DeliveryView(
        id=found.id,
        webhook_id=found.webhook_id,
        turn_id=found.turn_id,
        reply_id=found.memory_id,
        status=found.status,
        attempts=found.attempts,
        last_status=found.last_status,
        last_error=found.last_error,
        next_attempt_at=found.next_attempt_at,
        created_at=found.created_at,
        updated_at=found.updated_at,
        payload=found.payload,
    )


def _allowed(runtime: Runtime, principal: Principal, agent: str) -> uuid.UUID:
    principal.require_key("managing webhooks")
    return agent_of(runtime, principal, agent).id


@router.post("", status_code=201, response_model=NewWebhookView)
def create(
    runtime: RuntimeDep, principal: Caller, agent: AgentRef, request: WebhookRequest
) -> NewWebhookView:
    """Send the agent's replies (in one room, or all) to a URL. Each request carries
    `webhook-id`, `webhook-timestamp` and `webhook-signature` (Standard Webhooks)."""
    agent_id = _allowed(runtime, principal, agent)
    try:
        made = create_webhook(runtime, agent_id, request.url, request.room)
    except InvalidWebhookUrl as exc:
        raise ApiError(422, "invalid_webhook_url", f"body.url: {exc}") from None
    except TooManyWebhooks as exc:
        raise ApiError(409, "too_many_webhooks", str(exc)) from None
    return NewWebhookView(**_view(made.webhook).model_dump(), secret=made.secret)


@router.get("", response_model=list[WebhookView])
def list_webhooks(runtime: RuntimeDep, principal: Caller, agent: AgentRef) -> list[WebhookView]:
    agent_id = _allowed(runtime, principal, agent)
    return [_view(hook) for hook in runtime.store.agent_webhooks(agent_id)]


@router.get("/{webhook_id}", response_model=WebhookView)
def get_webhook(
    runtime: RuntimeDep, principal: Caller, agent: AgentRef, webhook_id: uuid.UUID
) -> WebhookView:
    agent_id = _allowed(runtime, principal, agent)
    return _view(runtime.store.webhook(agent_id, webhook_id))


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
def delete(
    runtime: RuntimeDep, principal: Caller, agent: AgentRef, webhook_id: uuid.UUID
) -> Response:
    """Delete a webhook and its deliveries; those not yet made are dropped."""
    agent_id = _allowed(runtime, principal, agent)
    if not delete_webhook(runtime, agent_id, webhook_id):
        raise NotFound(f"no webhook with id {webhook_id}")
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryView])
def list_deliveries(
    runtime: RuntimeDep,
    principal: Caller,
    agent: AgentRef,
    webhook_id: uuid.UUID,
    status: Annotated[
        Literal["pending", "delivered", "failed"] | None, Query(description="only these")
    ] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[DeliveryView]:
    """The webhook's deliveries, newest first; `status=failed` lists those given up on."""
    agent_id = _allowed(runtime, principal, agent)
    runtime.store.webhook(agent_id, webhook_id)
    found = runtime.store.webhook_deliveries(
        webhook_id, limit=limit, status=status, before_seq=seq_cursor(cursor)
    )
    return Page(
        data=[_delivery_view(d) for d in found],
        next_cursor=str(found[-1].seq) if len(found) == limit else None,
    )
