"""The WebSocket client API: one protocol, served by API Gateway in the cloud and by
`carrier dev` locally (`ws://HOST:PORT/v1/ws`), with the same handler code behind both.

Connect (browsers cannot set headers on a WebSocket, so everything is in the query):

    wss://{api}.execute-api.{region}.amazonaws.com/{stage}?agent=AGENT&room=ROOM&token=TOKEN

AGENT is the agent's handle or id, ROOM the client's room key, TOKEN an API key or end-user JWT.

The token is checked as a REST call's bearer token, and the agent as REST checks it
(another tenant's agent does not exist). Refused connections fail the handshake with
401 (credentials), 404 (no such agent) or 422 (no agent or room key). An end user's
rooms are their own, as in REST: the room key is scoped to their subject, so they can
listen only to their own conversations. The connection listens to one room of one
agent: every turn in that room is pushed to it, whoever sent the message. The token is
checked at connect (later frames carry none); revoking the API key silences its open
connections at once, and an end user's connection goes quiet when their token expires
(reconnect with a fresh one).

Client → server, one JSON object per text frame:

    {"action": "sendMessage", "text": "...", "sender": "...", "sender_name": "...",
     "client_message_id": "...", "room_kind": "dm"|"group", "world": "...", "attachments": []}

`sender` is required with an API key; with an end-user token the sender is always the
token's subject. The message goes to the connection's room exactly as
`POST /v1/agents/{agent}/rooms/{room}/messages` takes it: same checks, same error
codes, and posting a `client_message_id` twice is one message (the same id on another
text is a `conflict` error).

Server → client, one JSON object per text frame, told apart by `type`; a frame that
reports one of ElizaOS's events names it in `event` too (`carrier_core.frames`):

- `{"type": "accepted", "event": "MESSAGE_RECEIVED", "message_id", "turn_id", "status",
  "client_message_id"}`: sent once the message is stored and before its room's runner is
  started, so it comes before any frame of that turn;
- `{"type": "turn.progress", "turn_id", "step": "decided", "decide_step", "respond", "actions"}`;
- `{"type": "reply", "event": "MESSAGE_SENT", "turn_id", "id", "text", "actions",
  "attachments"}`: one per reply (`attachments` as the turn's replies have them: ElizaOS's
  `Media` objects); also, alone, for a message a turn of another room sent here
  (SEND_MESSAGE), with that turn's id;
- `{"type": "turn.progress", "turn_id", "step": "action", "action", "event":
  "ACTION_COMPLETED", "error"?}`;
- `{"type": "turn.awaiting_approval", "turn_id", "approval"}`: an action waits for a
  person's answer (`POST /v1/turns/{turn_id}/approval`); `{"type": "turn.approval",
  "turn_id", "approval"}` when the sweep expired it;
- `{"type": "turn.done", "event": "RUN_ENDED", "turn_id"}` or `{"type": "turn.failed",
  "event": "RUN_ENDED", "turn_id", "error"}`;
  with `"answered_by"` for a turn another turn answered (an agent that coalesces double
  texts: that turn's replies answered this message too);
- `{"type": "error", "code", "message", "client_message_id"?}`: a frame that was not
  taken (codes as REST: invalid_request, invalid_message, unauthorized, forbidden,
  not_found, conflict, unavailable, internal); the connection stays open.

Turn frames are pushed at least once (a retried step pushes again): drop replies
whose `id` you have seen. A push never holds a turn up; a client that missed one
reads the turn at `GET /v1/turns/{turn_id}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from carrier_core.api.errors import UNAVAILABLE_MESSAGE, ApiError
from carrier_core.api.posting import (
    CLIENT_SOURCE,
    MessagePost,
    Submit,
    agent_of,
    check_room_key,
    post,
    scoped_key,
)
from carrier_core.auth import Authenticator, Forbidden, Principal, Unauthorized
from carrier_core.frames import Frame, accepted_frame, error_frame
from carrier_core.runtime import Runtime
from carrier_core.storable import storable
from carrier_core.store.base import NotFound
from carrier_core.store.connections import Connection
from carrier_core.store.database import DatabaseUnavailable
from carrier_core.turn.ingest import Ingested
from carrier_core.world import room_id_for

log = logging.getLogger(__name__)

#: The one action a client sends (API Gateway routes on `$request.body.action`).
SEND_MESSAGE = "sendMessage"
#: Sends one frame to the connection the client frame came on.
Send = Callable[[Frame], None]


class Refused(Exception):
    """A connection not allowed; `status` is the handshake's HTTP status."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @property
    def body(self) -> str:
        """As every REST error: `{"error": {"code", "message"}}`."""
        return json.dumps({"error": {"code": self.code, "message": self.message}})


def describe(exc: Exception) -> tuple[int, str, str] | None:
    """HTTP status, error code and message of an error a client caused; None otherwise."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, Unauthorized):
        return 401, "unauthorized", str(exc)
    if isinstance(exc, Forbidden):
        return 403, "forbidden", str(exc)
    if isinstance(exc, NotFound):
        return 404, "not_found", str(exc)
    if isinstance(exc, DatabaseUnavailable):
        return 503, "unavailable", UNAVAILABLE_MESSAGE
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'frame'}: {err['msg']}"
            for err in exc.errors()
        )
        return 422, "invalid_request", problems
    return None


def _query(query: Mapping[str, str]) -> tuple[str, str]:
    agent = query.get("agent") or ""
    if not 1 <= len(agent) <= 64:
        raise ApiError(422, "invalid_request", "query.agent: the agent's id or handle")
    room = query.get("room") or ""
    try:
        storable(room)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"query.room: {exc}") from None
    check_room_key(room, "query.room")
    return agent, room


def connect(
    runtime: Runtime,
    authenticator: Authenticator,
    *,
    connection_id: str,
    endpoint: str,
    query: Mapping[str, str],
) -> Connection:
    """Check a new connection's token and agent, and store it; `Refused` if not allowed."""
    try:
        principal = authenticator.principal(query.get("token"))
        agent, room = _query(query)
        agent_id = agent_of(runtime, principal, agent).id
        room_id = room_id_for(agent_id, CLIENT_SOURCE, scoped_key(principal, room))
        return runtime.store.add_connection(
            Connection(
                id=connection_id,
                tenant_id=principal.tenant_id,
                agent_id=agent_id,
                room_id=room_id,
                room=room,
                sender=principal.user or "",
                endpoint=endpoint,
                key_id=principal.key_id,
                expires_at=principal.expires_at,
            ),
        )
    except Exception as exc:
        described = describe(exc)
        if described is None:
            raise
        raise Refused(*described) from None


def _frame(body: str | None) -> dict[str, Any]:
    """A client frame read as JSON, or `ApiError`. JSON nested deeper than Python's
    recursion limit (a few KiB of `[`) raises RecursionError, not ValueError: it is a bad
    frame like any other, and must not end the connection."""
    try:
        frame = json.loads(body or "")
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_request", f"a frame is one JSON object: {exc}") from None
    except ValueError as exc:  # an integer of more digits than can be read
        raise ApiError(422, "invalid_request", f"frame: {str(exc).split(';')[0]}") from None
    except RecursionError:
        raise ApiError(
            422, "invalid_request", "a frame is one JSON object; this one is nested too deeply"
        ) from None
    if not isinstance(frame, dict):
        raise ApiError(422, "invalid_request", "a frame is one JSON object")
    return frame


def _message(body: str | None) -> MessagePost:
    frame = _frame(body)
    action = frame.pop("action", None)
    if action != SEND_MESSAGE:
        raise ApiError(
            422, "invalid_request", f"unknown action {action!r}; the action is {SEND_MESSAGE!r}"
        )
    return MessagePost.model_validate(frame)


def _client_message_id(body: str | None) -> str | None:
    """The frame's client message id, if it has a readable one, to tag an error with."""
    try:
        found = _frame(body).get("client_message_id")
    except ApiError:
        return None
    return found if isinstance(found, str) else None


def receive(
    runtime: Runtime, submit: Submit, connection_id: str, body: str | None, send: Send
) -> None:
    """Take one client frame: post its message, answer `accepted` or an error frame.

    `accepted` is sent before the room's runner is started, so no frame of the turn can
    pass it.
    Errors a client caused become error frames; others too, after being logged, since
    the client is owed an answer either way.
    """
    client_message_id = _client_message_id(body)

    def accept_then_submit(ingested: Ingested) -> None:
        send(
            accepted_frame(
                ingested.message_id, ingested.turn_id, ingested.status, client_message_id
            )
        )
        submit(ingested)

    try:
        connection = runtime.store.live_connection(connection_id)
        if connection is None:
            send(error_frame("unauthorized", "this connection is closed; connect again"))
            return
        message = _message(body)
        post(
            runtime,
            accept_then_submit,
            Principal.of_connection(connection),
            connection.agent_id,
            connection.room,
            message,
        )
    except Exception as exc:
        described = describe(exc)
        if described is None:
            log.exception("a WebSocket message failed (connection %s)", connection_id)
            described = (500, "internal", "internal error; the message may not have been taken")
        _, code, text = described
        send(error_frame(code, text, client_message_id))
