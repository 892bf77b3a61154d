"""Push frames to WebSocket connections through the API Gateway Management API.

Pushing is on where `WEBSOCKET_ENDPOINT` is set (template.yaml sets it for the
WebSocket function and the steps that push; the emulator for `carrier dev`). Each
connection is pushed to at the endpoint stored with it.

A push is news about a turn, never part of it: a connection that is gone
(`GoneException`: it closed and its `$disconnect` was lost) is forgotten, any other
failure is logged, and the step goes on either way. Clients that miss a frame read
the turn at `GET /v1/turns/{turn_id}`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from carrier_aws.clients import AwsClient
from carrier_core.frames import Frame, encode, sent_frames

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime
    from carrier_core.store.connections import Connection
    from carrier_core.store.store import Store
    from carrier_core.turn.act import Acted

log = logging.getLogger(__name__)

#: The Management API endpoint of the WebSocket API's stage:
#: `https://{api}.execute-api.{region}.amazonaws.com/{stage}`.
ENDPOINT_VARIABLE = "WEBSOCKET_ENDPOINT"


#: Where clients connect to the WebSocket API (`wss://{api}.execute-api.{region}.amazonaws.com/
#: {stage}`), which the web console is told (`GET /v1/console-config`); set for the API
#: function. Empty under `carrier dev`, which serves the WebSocket API beside the HTTP API.
CLIENT_URL_VARIABLE = "CARRIER_WEBSOCKET_URL"


def client_url() -> str | None:
    """Where clients connect, or None: not set, or set empty (beside the HTTP API)."""
    return os.environ.get(CLIENT_URL_VARIABLE, "").strip() or None


def configured_endpoint() -> str | None:
    """The endpoint pushes are on for, or None: not set, or set empty."""
    return os.environ.get(ENDPOINT_VARIABLE, "").strip() or None


class WebSocketRequest(NamedTuple):
    """What the WebSocket function needs of an API Gateway WebSocket event."""

    route: str
    connection_id: str
    #: Where to push to the connection (`connection_endpoint`).
    endpoint: str


def websocket_request(event: Mapping[str, Any]) -> WebSocketRequest:
    """The route, connection and push endpoint of a WebSocket event; a `ValueError` naming
    what is missing for anything else (a hand-made event, another trigger's)."""
    request = event.get("requestContext")
    needed = ["routeKey", "connectionId"] + ([] if configured_endpoint() else ["apiId", "stage"])
    missing = [
        f"requestContext.{key}"
        for key in needed
        if not isinstance(request, Mapping) or not isinstance(request.get(key), str)
    ]
    if missing:
        raise ValueError(f"not an API Gateway WebSocket event: no {', '.join(missing)}")
    assert isinstance(request, Mapping)
    return WebSocketRequest(
        request["routeKey"], request["connectionId"], connection_endpoint(request)
    )


def connection_endpoint(request_context: Mapping[str, Any]) -> str:
    """Where to push to a connection, from its WebSocket event: the configured endpoint,
    else the stage it came in on (as API Gateway names it, not a custom domain)."""
    configured = configured_endpoint()
    if configured:
        return configured
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    api, stage = request_context["apiId"], request_context["stage"]
    return f"https://{api}.execute-api.{region}.amazonaws.com/{stage}"


def _management_client(endpoint: str) -> Any:
    from botocore.config import Config

    # Short timeouts and one retry: a slow push must not hold a turn's step up.
    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2})
    return AwsClient("apigatewaymanagementapi", endpoint_url=endpoint, config=config)


def _gone(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response["Error"]["Code"] == "GoneException"


class Pusher:
    """Sends frames to connections, one Management API client per endpoint (thread-safe)."""

    def __init__(self, make_client: Callable[[str], Any] = _management_client):
        self._make_client = make_client
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, endpoint: str) -> Any:
        with self._lock:
            if endpoint not in self._clients:
                self._clients[endpoint] = self._make_client(endpoint)
            return self._clients[endpoint]

    def send(self, store: Store, connection_id: str, endpoint: str, frames: list[Frame]) -> bool:
        """Push frames to one connection, in order; False if it is gone (and now forgotten)
        or a push failed (logged)."""
        client = self.client(endpoint)
        for frame in frames:
            try:
                client.post_to_connection(ConnectionId=connection_id, Data=encode(frame))
            except Exception as exc:
                if _gone(exc):
                    log.info("connection %s is gone; forgetting it", connection_id)
                    store.remove_connection(connection_id)
                else:
                    log.warning("push to connection %s failed: %s", connection_id, exc)
                return False
        return True

    def to_turn(
        self, runtime: Runtime, turn_id: uuid.UUID, frames: Callable[[], list[Frame]]
    ) -> int:
        """Push a turn's frames to its room's connections; how many got them all.

        `frames` is called only if someone listens, so a room nobody watches costs one
        query. Nothing here raises: a failure is logged and the step goes on.
        """
        return self._to(
            runtime, f"turn {turn_id}", lambda: runtime.store.turn_connections(turn_id), frames
        )

    def to_room(
        self,
        runtime: Runtime,
        agent_id: uuid.UUID,
        room_id: uuid.UUID,
        frames: Callable[[], list[Frame]],
    ) -> int:
        """Push frames to the connections of one room of an agent (not the turn's: where
        an action sent a message); as `to_turn`, nothing here raises."""
        return self._to(
            runtime,
            f"room {room_id}",
            lambda: runtime.store.room_connections(agent_id, room_id),
            frames,
        )

    def _to(
        self,
        runtime: Runtime,
        what: str,
        listeners: Callable[[], list[Connection]],
        frames: Callable[[], list[Frame]],
    ) -> int:
        if configured_endpoint() is None:
            return 0
        try:
            found = listeners()
            if not found:
                return 0
            built = frames()
            return sum(self.send(runtime.store, c.id, c.endpoint, built) for c in found)
        except Exception:
            log.exception("pushing the frames of %s failed", what)
            return 0


#: The process's pusher (a Lambda container's, or the emulator's handlers').
pusher = Pusher()


def push_turn(runtime: Runtime, turn_id: uuid.UUID, frames: Callable[[], list[Frame]]) -> int:
    return pusher.to_turn(runtime, turn_id, frames)


def push_sent(runtime: Runtime, turn_id: uuid.UUID, acted: Acted) -> int:
    """Push what an action sent to other rooms to each room's connections, as a reply is
    pushed to the turn's; how many connections got theirs."""
    if not acted.sent_ids or configured_endpoint() is None:
        return 0
    try:
        by_room = sent_frames(runtime, turn_id, acted)
        agent_id = runtime.store.turn(turn_id).agent_id
    except Exception:
        log.exception("reading what turn %s sent failed", turn_id)
        return 0
    pushed = 0
    for room_id, frames in by_room.items():
        pushed += pusher.to_room(runtime, agent_id, room_id, functools.partial(list, frames))
    return pushed
