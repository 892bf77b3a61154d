"""API keys of the caller's tenant. A new key is in the answer once and never again."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from carrier_core.api.deps import Caller, RuntimeDep
from carrier_core.api.posting import agent_of
from carrier_core.storable import StorableText
from carrier_core.store.base import NotFound
from carrier_core.tenants import ApiKey, create_key

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StorableText = Field(default="", max_length=200)
    #: Limit the key to these agents of the tenant; omit for all of them.
    agent_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=100)


class KeyView(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    agent_ids: list[uuid.UUID] | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewKeyView(KeyView):
    #: The key itself: store it now, it cannot be shown again.
    key: str


def _view(key: ApiKey) -> KeyView:
    return KeyView(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        agent_ids=None if key.agent_ids is None else sorted(key.agent_ids),
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
    )


@router.post("", status_code=201, response_model=NewKeyView)
def create(runtime: RuntimeDep, principal: Caller, request: KeyRequest) -> NewKeyView:
    principal.require_full_key("making keys")
    agent_ids = None
    if request.agent_ids is not None:
        agent_ids = frozenset(request.agent_ids)
        for agent_id in agent_ids:
            agent_of(runtime, principal, agent_id)
    made = create_key(runtime.store, principal.tenant_id, name=request.name, agent_ids=agent_ids)
    return NewKeyView(**_view(made.key).model_dump(), key=made.secret)


@router.get("", response_model=list[KeyView])
def list_keys(runtime: RuntimeDep, principal: Caller) -> list[KeyView]:
    principal.require_full_key("listing keys")
    return [_view(k) for k in runtime.store.tenant_keys(principal.tenant_id)]


@router.delete("/{key_id}", status_code=204, response_class=Response)
def revoke(runtime: RuntimeDep, principal: Caller, key_id: uuid.UUID) -> Response:
    """Revoke a key at once (a key may revoke itself)."""
    principal.require_full_key("revoking keys")
    if not runtime.store.revoke_key(principal.tenant_id, key_id):
        raise NotFound(f"no live key with id {key_id}")
    return Response(status_code=204)
