"""A message from any client surface (REST, the WebSocket, chat completions): checked,
stored with its turn and handed to the room's runner, by `post`.

Free of FastAPI, so the WebSocket function, which serves no HTTP route, does not import
it (nor build the HTTP app's routes) at its cold start.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from carrier_core.api.errors import ApiError
from carrier_core.auth import Forbidden, Principal
from carrier_core.runtime import Runtime
from carrier_core.store.agents import AgentRecord, no_agent
from carrier_core.turn.ingest import Ingested, InvalidMessage, MessageConflict, ingest
from carrier_core.world import END_USER_PREFIX, RoomKind

#: Called once a message is stored: starts the room's runner if the delivery claimed it
#: (`Ingested.runner`): a state machine execution in the cloud, a thread in tests.
Submit = Callable[[Ingested], None]

#: The source every client surface (REST, WebSocket, chat completions) stores messages
#: under, so one sender and one room key mean the same entity and room on all of them.
CLIENT_SOURCE = "api"


#: The longest room key a client may name.
MAX_ROOM_CHARS = 200


def check_room_key(room: str, where: str = "room") -> None:
    """A room key is one segment of a URL path (`/rooms/{room}`): 1 to `MAX_ROOM_CHARS`
    characters, without `/`, and neither `.` nor `..`, which clients resolve away (a
    DELETE of room `..` would reach the agent itself)."""
    if not 1 <= len(room) <= MAX_ROOM_CHARS:
        raise ApiError(
            422, "invalid_request", f"{where}: a room key of 1 to {MAX_ROOM_CHARS} characters"
        )
    if "/" in room or room in (".", ".."):
        raise ApiError(
            422,
            "invalid_request",
            f"{where}: a room key is one segment of a URL path: no '/', and not '.' or '..'",
        )


class MessagePost(BaseModel):
    """A message to the agent. With an end-user token the sender is the token's subject."""

    model_config = ConfigDict(extra="forbid")

    text: str
    sender: str | None = Field(
        default=None, description="the sender's id; required with an API key"
    )
    sender_name: str | None = None
    room_kind: RoomKind = RoomKind.DM
    world: str | None = Field(default=None, min_length=1, max_length=200)
    client_message_id: str | None = Field(
        default=None,
        min_length=1,
        description="the sender's id for this message: posting it twice is one message",
    )
    attachments: list[dict[str, Any]] = Field(default_factory=list)


class Accepted(BaseModel):
    message_id: uuid.UUID
    turn_id: uuid.UUID
    status: str


def agent_of(runtime: Runtime, principal: Principal, ref: str | uuid.UUID) -> AgentRecord:
    """The agent with this id or handle, if the caller's tenant owns it and the caller may
    use it; else 404."""
    agent = runtime.store.tenant_agent(principal.tenant_id, ref)
    if not principal.may_use(agent.id):
        raise no_agent(ref)
    return agent


def scoped_key(principal: Principal, key: str) -> str:
    """The stored key of the room (or world) a caller names. An end user's rooms and
    worlds are their own: the key is scoped to their subject, so no one else's token
    reaches them (an API key of the tenant sees them as `user:<subject>:<room>`), and no
    end user becomes the owner of a world the tenant's other rooms are in (the first to
    speak in a world owns it). The subject is percent-encoded, so no two subjects share a
    prefix."""
    if principal.user is None:
        return key
    return f"{END_USER_PREFIX}{quote(principal.user, safe='@.-_')}:{key}"


def sender_for(principal: Principal, sender: str | None) -> str:
    """End users speak as themselves; an API key names the sender."""
    if principal.user is not None:
        if sender is not None and sender != principal.user:
            raise Forbidden("an end-user token may only send as its own subject")
        return principal.user
    if sender is None:
        raise ApiError(422, "invalid_request", "body.sender: required with an API key")
    return sender


def post(
    runtime: Runtime,
    submit: Submit,
    principal: Principal,
    agent: str | uuid.UUID,
    room: str,
    body: MessagePost,
    idempotency_key: str | None = None,
) -> Accepted:
    """Store a message and its turn, then hand them to `submit` to start the room's
    runner: shared by every client surface. Stored means accepted: whatever happens
    next, the turn ends answered or failed."""
    agent_id = agent_of(runtime, principal, agent).id
    check_room_key(room)
    data = body.model_dump()
    data["sender"] = sender_for(principal, body.sender)
    # A client id makes the post idempotent; without one, each post is a new message.
    data["client_message_id"] = (
        body.client_message_id or idempotency_key or f"carrier-{uuid.uuid4()}"
    )
    data.update(agent_id=agent_id, room=scoped_key(principal, room), source=CLIENT_SOURCE)
    if body.world is not None:
        data["world"] = scoped_key(principal, body.world)
    try:
        ingested = ingest(runtime, data)
    except MessageConflict as exc:
        raise _conflict(exc, from_header=body.client_message_id is None) from None
    except InvalidMessage as exc:
        raise ApiError(422, "invalid_message", str(exc)) from None
    submit(ingested)
    return Accepted(
        message_id=ingested.message_id, turn_id=ingested.turn_id, status=ingested.status
    )


def _conflict(exc: MessageConflict, *, from_header: bool) -> ApiError:
    """409: the client's id for a message was used before for a different one. Named as
    the client gave it (the Idempotency-Key header or body.client_message_id)."""
    where = "Idempotency-Key" if from_header else "body.client_message_id"
    return ApiError(
        409,
        "conflict",
        f"{where} {exc.client_message_id!r} was already used for a message from this"
        f" sender that differs in its {exc.what}; a new message needs a new one",
    )
