"""The HTTP API: post a message, read a turn.

Posting runs only the ingest step (so the caller gets the message and turn
ids at once) and hands the message to `submit`, which queues it for the rest
of the turn; the answer is 202. The caller then reads the turn until it is
done. Which queue `submit` uses is the caller's business: SQS in the cloud,
the emulated SQS locally, a direct call in tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from carrier_core.memory import MemoryKind
from carrier_core.runtime import Runtime
from carrier_core.store import NotFound, TurnRecord
from carrier_core.turn import IncomingMessage, InvalidMessage, ingest
from carrier_core.world import RoomKind

#: Largest request body taken, in bytes: messages are at most `max_message_chars` long.
MAX_BODY_BYTES = 64 * 1024


class MessagePost(BaseModel):
    """The body of a message post; agent and room come from the path."""

    model_config = ConfigDict(extra="forbid")

    text: str
    sender: str
    sender_name: str | None = None
    room_kind: RoomKind = RoomKind.DM
    world: str | None = None
    client_message_id: str | None = None
    attachments: list[dict[str, Any]] = Field(default_factory=list)


class Accepted(BaseModel):
    message_id: uuid.UUID
    turn_id: uuid.UUID
    status: str


class Reply(BaseModel):
    id: uuid.UUID
    text: str
    actions: list[str]


class TurnView(BaseModel):
    turn_id: uuid.UUID
    status: str
    error: str | None
    replies: list[Reply]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


#: Queues a message's turn; it is given the turn as it stands (new, or failed and retried).
Submit = Callable[[IncomingMessage, TurnRecord], None]


def create_app(runtime: Callable[[], Runtime], submit: Submit) -> FastAPI:
    """The API over a runtime (made on first use) and a way to queue a message's turn."""
    app = FastAPI(title="Carrier", version="0.1.0")

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _error(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        return _error(422, "invalid_request", problems)

    @app.post("/agents/{agent_id}/rooms/{room}/messages", status_code=202)
    def post_message(
        agent_id: uuid.UUID,
        room: str,
        body: MessagePost,
        idempotency_key: str | None = Header(default=None),
    ) -> Any:
        data = body.model_dump()
        # A client id makes the post idempotent; without one, each post is a new message.
        data["client_message_id"] = (
            body.client_message_id or idempotency_key or f"carrier-{uuid.uuid4()}"
        )
        data.update(agent_id=agent_id, room=room, source="api")
        try:
            ingested = ingest(runtime(), data)
        except InvalidMessage as exc:
            return _error(422, "invalid_message", str(exc))
        except NotFound as exc:
            return _error(404, "not_found", str(exc))
        turn = runtime().store.turn(ingested.turn_id)
        if turn.status != "done":
            submit(IncomingMessage.model_validate(data), turn)
        return Accepted(
            message_id=ingested.message_id, turn_id=ingested.turn_id, status=turn.status
        )

    @app.get("/turns/{turn_id}")
    def get_turn(turn_id: uuid.UUID) -> Any:
        store = runtime().store
        try:
            turn = store.turn(turn_id)
        except NotFound as exc:
            return _error(404, "not_found", str(exc))
        replies = [
            Reply(id=m.id, text=m.content.text, actions=m.content.actions)
            for m in store.turn_memories(turn_id, MemoryKind.MESSAGE)
        ]
        return TurnView(turn_id=turn.id, status=turn.status, error=turn.error, replies=replies)

    return app
