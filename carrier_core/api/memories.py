"""An agent's memories: read them, search them by meaning, delete one."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from carrier_core.api.deps import AgentRef, Caller, RuntimeDep
from carrier_core.api.errors import ApiError
from carrier_core.api.pages import Cursor, Limit, Page, seq_cursor
from carrier_core.api.posting import CLIENT_SOURCE, agent_of
from carrier_core.memory import Memory, MemoryKind
from carrier_core.models import ModelError
from carrier_core.models.ledger import embed_recorded
from carrier_core.storable import StorableText
from carrier_core.store.base import NotFound
from carrier_core.world import room_id_for

router = APIRouter(prefix="/v1/agents/{agent}/memories", tags=["memories"])


class MemoryView(BaseModel):
    id: uuid.UUID
    kind: MemoryKind
    entity_id: uuid.UUID
    room_id: uuid.UUID | None
    text: str
    content: dict[str, Any]
    created_at: datetime | None


class ScoredMemoryView(MemoryView):
    similarity: float


class SearchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StorableText = Field(min_length=1, max_length=8000)
    kinds: list[MemoryKind] = Field(default_factory=lambda: list(MemoryKind), min_length=1)
    #: Only memories of this room (the client's room key).
    room: StorableText | None = Field(default=None, min_length=1, max_length=200)
    limit: int = Field(default=10, ge=1, le=100)
    #: Least cosine similarity; -1 returns the nearest `limit` whatever their distance.
    threshold: float = Field(default=0.0, ge=-1, le=1)


def _view(memory: Memory) -> MemoryView:
    return MemoryView(
        id=memory.id,
        kind=memory.kind,
        entity_id=memory.entity_id,
        room_id=memory.room_id,
        text=memory.content.text,
        content=memory.content.model_dump(mode="json", exclude_none=True),
        created_at=memory.created_at,
    )


@router.get("", response_model=Page[MemoryView])
def list_memories(
    runtime: RuntimeDep,
    principal: Caller,
    agent: AgentRef,
    kind: list[MemoryKind] | None = Query(default=None),  # noqa: B008
    room: str | None = Query(default=None, min_length=1, max_length=200),
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[MemoryView]:
    """Newest first; filter by kind (repeatable) and room key."""
    principal.require_key("reading memories")
    agent_id = agent_of(runtime, principal, agent).id
    memories = runtime.store.memories_page(
        agent_id,
        kinds=kind or list(MemoryKind),
        room_id=None if room is None else room_id_for(agent_id, CLIENT_SOURCE, room),
        limit=limit,
        before_seq=seq_cursor(cursor),
    )
    return Page(
        data=[_view(m) for m in memories],
        next_cursor=str(memories[-1].seq) if len(memories) == limit else None,
    )


@router.post("/search", response_model=list[ScoredMemoryView])
def search_memories(
    runtime: RuntimeDep, principal: Caller, agent: AgentRef, search: SearchQuery
) -> list[ScoredMemoryView]:
    """Semantic search: the query is embedded with the agent's model and compared in pgvector
    with the agent's newest 5,000 memories of the kinds asked for (with `kind=fragment` alone:
    its whole knowledge), as `Store.search_memories` does."""
    principal.require_key("searching memories")
    agent_id = agent_of(runtime, principal, agent).id
    character = runtime.store.character(agent_id)
    try:
        model = runtime.models_for(character).embedding
        [vector] = embed_recorded(
            runtime.store, agent_id, model, [search.query], step="search"
        ).vectors
    except ModelError as exc:
        raise ApiError(503, "model_unavailable", f"cannot embed the query: {exc}") from None
    found = runtime.store.search_memories(
        vector,
        agent_id=agent_id,
        room_id=None if search.room is None else room_id_for(agent_id, CLIENT_SOURCE, search.room),
        kinds=search.kinds,
        count=search.limit,
        threshold=search.threshold,
    )
    return [
        ScoredMemoryView(**_view(s.memory).model_dump(), similarity=s.similarity) for s in found
    ]


@router.get("/{memory_id}", response_model=MemoryView)
def get_memory(
    runtime: RuntimeDep, principal: Caller, agent: AgentRef, memory_id: uuid.UUID
) -> MemoryView:
    principal.require_key("reading memories")
    agent_id = agent_of(runtime, principal, agent).id
    memory = runtime.store.memory(memory_id)
    if memory.agent_id != agent_id:
        raise NotFound(f"no memory with id {memory_id}")
    return _view(memory)


@router.delete("/{memory_id}", status_code=204, response_class=Response)
def delete_memory(
    runtime: RuntimeDep, principal: Caller, agent: AgentRef, memory_id: uuid.UUID
) -> Response:
    """Forget one memory (a fact, a message, a knowledge fragment)."""
    principal.require_key("deleting memories")
    agent_id = agent_of(runtime, principal, agent).id
    if not runtime.store.delete_memory(agent_id, memory_id):
        raise NotFound(f"no memory with id {memory_id}")
    return Response(status_code=204)
