"""Rooms and their messages. A room is named by the client's own key (`{room}`), which
the API maps to the same stored room every time."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel

from carrier_core.api.deps import AgentRef, Caller, RuntimeDep, services
from carrier_core.api.errors import ErrorBody
from carrier_core.api.pages import Cursor, Limit, Page, id_cursor, seq_cursor
from carrier_core.api.posting import (
    CLIENT_SOURCE,
    MAX_ROOM_CHARS,
    Accepted,
    MessagePost,
    agent_of,
    post,
    scoped_key,
)
from carrier_core.memory import Memory, MemoryKind
from carrier_core.runtime import Runtime
from carrier_core.storable import StorableText
from carrier_core.store.agents import RoomRecord
from carrier_core.store.base import NotFound
from carrier_core.world import room_id_for

router = APIRouter(prefix="/v1/agents/{agent}/rooms", tags=["rooms"])

RoomKey = Annotated[
    StorableText,
    Path(min_length=1, max_length=MAX_ROOM_CHARS, description="the client's room key"),
]


class RoomView(BaseModel):
    id: uuid.UUID
    #: The room key clients use in paths.
    room: str
    kind: str
    created_at: datetime
    messages: int


class MessageView(BaseModel):
    id: uuid.UUID
    #: Who said it: an entity id (the agent's own id for its replies).
    entity_id: uuid.UUID
    from_agent: bool
    text: str
    actions: list[str]
    #: Media the message carries (ElizaOS's `Media` shape); an image's `description` may
    #: be one Carrier made.
    attachments: list[dict[str, Any]]
    created_at: datetime | None
    #: The message's turn (`/v1/turns/{turn_id}`): the one it started, or for the agent's
    #: reply the one that said it; null for a message without one.
    turn_id: uuid.UUID | None = None


def message_view(memory: Memory, turn_id: uuid.UUID | None = None) -> MessageView:
    return MessageView(
        id=memory.id,
        entity_id=memory.entity_id,
        from_agent=memory.entity_id == memory.agent_id,
        text=memory.content.text,
        actions=memory.content.actions,
        attachments=memory.content.attachments,
        created_at=memory.created_at,
        turn_id=turn_id,
    )


def _room(runtime: Runtime, agent_id: uuid.UUID, key: str, room: str) -> uuid.UUID:
    """The id of the stored room `key` (what the caller named as `room`); 404 if none."""
    room_id = room_id_for(agent_id, CLIENT_SOURCE, key)
    try:
        runtime.store.room(room_id)
    except NotFound:
        raise NotFound(f"agent {agent_id} has no room {room!r}") from None
    return room_id


@router.get("", response_model=Page[RoomView])
def list_rooms(
    runtime: RuntimeDep,
    principal: Caller,
    agent: AgentRef,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[RoomView]:
    principal.require_key("listing rooms")
    agent_id = agent_of(runtime, principal, agent).id
    rooms = runtime.store.agent_rooms(agent_id, limit=limit, after=id_cursor(cursor))
    return Page(
        data=[_room_view(r) for r in rooms],
        next_cursor=str(rooms[-1].id) if len(rooms) == limit else None,
    )


@router.get("/{room}", response_model=RoomView)
def get_room(runtime: RuntimeDep, principal: Caller, agent: AgentRef, room: RoomKey) -> RoomView:
    agent_id = agent_of(runtime, principal, agent).id
    room_id = _room(runtime, agent_id, scoped_key(principal, room), room)
    [record] = runtime.store.agent_rooms(agent_id, limit=1, room_id=room_id)
    return _room_view(record).model_copy(update={"room": room})  # the key as the caller named it


def _room_view(record: RoomRecord) -> RoomView:
    return RoomView(
        id=record.id,
        room=record.name,
        kind=record.kind,
        created_at=record.created_at,
        messages=record.messages,
    )


@router.delete("/{room}", status_code=204, response_class=Response)
def delete_room(runtime: RuntimeDep, principal: Caller, agent: AgentRef, room: RoomKey) -> Response:
    """Forget a room: its messages and turns are deleted (facts learned about people stay)."""
    principal.require_key("deleting a room")
    agent_id = agent_of(runtime, principal, agent).id
    runtime.store.delete_room(_room(runtime, agent_id, room, room))
    return Response(status_code=204)


#: The answer to a client message id (or Idempotency-Key) used again for another message.
CONFLICT_RESPONSE: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "the Idempotency-Key (or client_message_id) was used before for a"
        " message with another text (`conflict`)",
    }
}


@router.post(
    "/{room}/messages", status_code=202, response_model=Accepted, responses=CONFLICT_RESPONSE
)
def post_message(
    runtime: RuntimeDep,
    request: Request,
    principal: Caller,
    agent: AgentRef,
    room: RoomKey,
    body: MessagePost,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Accepted:
    """Take a message in and start its turn; read the turn at `/v1/turns/{turn_id}`.

    With an `Idempotency-Key` header (or `client_message_id`), posting again is the same
    message (202 with its first ids); the same key on another text is 409 `conflict`."""
    return post(runtime, services(request).submit, principal, agent, room, body, idempotency_key)


@router.get("/{room}/messages", response_model=Page[MessageView])
def list_messages(
    runtime: RuntimeDep,
    principal: Caller,
    agent: AgentRef,
    room: RoomKey,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[MessageView]:
    """The room's messages, newest first."""
    agent_id = agent_of(runtime, principal, agent).id
    room_id = _room(runtime, agent_id, scoped_key(principal, room), room)
    memories = runtime.store.memories_page(
        agent_id,
        kinds=[MemoryKind.MESSAGE],
        room_id=room_id,
        limit=limit,
        before_seq=seq_cursor(cursor),
    )
    turns = runtime.store.message_turns([m.id for m in memories])
    return Page(
        data=[message_view(m, turns.get(m.id)) for m in memories],
        next_cursor=str(memories[-1].seq) if len(memories) == limit else None,
    )
