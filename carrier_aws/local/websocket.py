"""API Gateway's WebSocket API, for `carrier dev`: the template's WebSocket routes at `/v1/ws`.

A client connects to `ws://HOST:PORT/v1/ws?agent=...&room=...&token=...` and the
route's function (functions/websocket) gets the events API Gateway would send it:
`$connect` before the handshake is accepted (any answer but 200 denies it, with that
status and body), one event per text frame, routed on the API's selection field
(`action`) to its route or `$default`, and `$disconnect` after the socket closes.

What the functions push (`post_to_connection`, through moto) reaches the socket
through `LocalSockets`: moto's Management API backend is patched to hand the frame to
the server's event loop (`asyncio.run_coroutine_threadsafe`), from whichever thread
the pushing function runs in, and to answer `GoneException` for a socket that is not
open here, as API Gateway does for a closed connection.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from carrier_aws.local.template import ACCOUNT_ID, REGION, WebSocketApiSpec

if TYPE_CHECKING:
    from carrier_aws.local.emulator import Emulator

log = logging.getLogger(__name__)

#: Where `carrier dev` serves the WebSocket API (API Gateway serves it at the stage's root).
WEBSOCKET_PATH = "/v1/ws"
#: API Gateway's largest message (128 KiB); a longer one closes the connection (1009).
MAX_MESSAGE_BYTES = 128 * 1024
#: How long a push waits for the socket to take a frame.
PUSH_TIMEOUT_S = 10.0


#: Sends one text frame on an open socket (a coroutine of the server's event loop).
_Sender = Callable[[str], Coroutine[Any, Any, None]]


#: Set in the task of a connection this API refused with a denial response.
_denied: contextvars.ContextVar[bool] = contextvars.ContextVar("carrier_ws_denied", default=False)


class _DenialIsNotAnError(logging.Filter):
    """uvicorn's websockets-sansio server logs "ASGI callable returned without completing
    handshake." after a denial response, which is a complete handshake (uvicorn 0.54): one
    error line per refused connection. Dropped for connections this API denied only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_denied.get() and "without completing handshake" in record.getMessage())


logging.getLogger("uvicorn.error").addFilter(_DenialIsNotAnError())


class Gone(Exception):
    """No open socket has this connection id (API Gateway's GoneException, 410)."""


class LocalSockets:
    """The open sockets by connection id; frames may be pushed from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[asyncio.AbstractEventLoop, _Sender]] = {}

    def register(
        self,
        connection_id: str,
        loop: asyncio.AbstractEventLoop,
        send: _Sender,
    ) -> None:
        with self._lock:
            self._open[connection_id] = (loop, send)

    def unregister(self, connection_id: str) -> None:
        with self._lock:
            self._open.pop(connection_id, None)

    def __contains__(self, connection_id: object) -> bool:
        with self._lock:
            return connection_id in self._open

    def post(self, connection_id: str, data: bytes) -> None:
        """Send one frame, waiting until the socket took it; `Gone` if it is not open."""
        with self._lock:
            found = self._open.get(connection_id)
        if found is None:
            raise Gone(connection_id)
        loop, send = found
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("a push from the server's own event loop would wait for itself")
        future = asyncio.run_coroutine_threadsafe(send(data.decode()), loop)
        try:
            future.result(timeout=PUSH_TIMEOUT_S)
        except Exception as exc:
            future.cancel()
            self.unregister(connection_id)
            raise Gone(connection_id) from exc


def _connection_id() -> str:
    """Shaped like API Gateway's (16 characters, ending in `=`, so it is URL-quoted)."""
    return secrets.token_urlsafe(12)[:15] + "="


class WebSocketGateway:
    """One WebSocket API of the template, its routes calling the emulated functions."""

    def __init__(self, emulator: Emulator, spec: WebSocketApiSpec):
        self.emulator = emulator
        self.spec = spec
        self.sockets = LocalSockets()

    @property
    def domain(self) -> str:
        return f"{self.spec.api_id}.execute-api.{REGION}.amazonaws.com"

    def _context(
        self, connection_id: str, route: str, event_type: str, connected_at: int
    ) -> dict[str, Any]:
        now = time.time()
        return {
            "routeKey": route,
            "eventType": event_type,
            "messageDirection": "IN",
            "extendedRequestId": str(uuid.uuid4()),
            "requestId": str(uuid.uuid4()),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "connectedAt": connected_at,
            "stage": self.spec.stage_name,
            "domainName": self.domain,
            "apiId": self.spec.api_id,
            "accountId": ACCOUNT_ID,
            "connectionId": connection_id,
            "identity": {"sourceIp": "127.0.0.1"},
        }

    def route_for(self, text: str) -> str | None:
        """The route a message takes: its selection field's route, else `$default`."""
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):  # nested too deeply to read: no route names it
            body = None
        chosen = body.get(self.spec.selection_field) if isinstance(body, dict) else None
        if isinstance(chosen, str) and chosen in self.spec.routes and not chosen.startswith("$"):
            return chosen
        return "$default" if "$default" in self.spec.routes else None

    async def _call(self, route: str, event: dict[str, Any]) -> Any:
        function = self.emulator.function(self.spec.routes[route])
        return await run_in_threadpool(self.emulator.call, function, event)

    async def serve(self, websocket: WebSocket) -> None:
        connection_id = _connection_id()
        connected_at = int(time.time() * 1000)
        query = dict(websocket.query_params)
        headers = dict(websocket.headers)
        if "$connect" in self.spec.routes:
            event = {
                "headers": headers,
                "queryStringParameters": query or None,
                "requestContext": self._context(connection_id, "$connect", "CONNECT", connected_at),
                "isBase64Encoded": False,
            }
            try:
                answer = await self._call("$connect", event)
            except Exception:
                log.exception("the $connect function failed")
                answer = {"statusCode": 500, "body": '{"message": "Internal server error"}'}
            status = int((answer or {}).get("statusCode", 200))
            if not 200 <= status < 300:
                await self._deny(websocket, status, str((answer or {}).get("body") or ""))
                return
        lock = asyncio.Lock()

        async def send(text: str) -> None:
            async with lock:
                await websocket.send_text(text)

        await websocket.accept()
        self.sockets.register(connection_id, asyncio.get_running_loop(), send)
        close_code = 1000
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    close_code = int(message.get("code") or 1005)
                    break
                if message.get("bytes") is not None:
                    # API Gateway takes text frames only: it closes on a binary one.
                    close_code = 1003
                    await websocket.close(1003, "Binary frames are not supported")
                    break
                text = message.get("text") or ""
                if len(text.encode()) > MAX_MESSAGE_BYTES:
                    close_code = 1009
                    await websocket.close(1009, "Message too big")
                    break
                await self._message(connection_id, connected_at, text, send)
        except WebSocketDisconnect as disconnect:
            close_code = disconnect.code
        finally:
            self.sockets.unregister(connection_id)
            if "$disconnect" in self.spec.routes:
                context = self._context(connection_id, "$disconnect", "DISCONNECT", connected_at)
                context.update(disconnectStatusCode=close_code, disconnectReason="")
                try:
                    await self._call(
                        "$disconnect",
                        {"headers": headers, "requestContext": context, "isBase64Encoded": False},
                    )
                except Exception:
                    log.exception("the $disconnect function failed")

    async def _message(
        self,
        connection_id: str,
        connected_at: int,
        text: str,
        send: _Sender,
    ) -> None:
        route = self.route_for(text)
        context = self._context(connection_id, route or "$default", "MESSAGE", connected_at)
        context["messageId"] = secrets.token_urlsafe(12)
        if route is None:  # what API Gateway answers when no route matches
            await send(json.dumps({"message": "Forbidden", "connectionId": connection_id}))
            return
        try:
            await self._call(
                route, {"requestContext": context, "body": text, "isBase64Encoded": False}
            )
        except Exception:
            log.exception("the %s function failed", route)
            await send(
                json.dumps(
                    {
                        "message": "Internal server error",
                        "connectionId": connection_id,
                        "requestId": context["requestId"],
                    }
                )
            )

    @staticmethod
    async def _deny(websocket: WebSocket, status: int, body: str) -> None:
        """Refuse the handshake with the function's status and body, as API Gateway does
        (a server without the denial-response extension closes with 4000 + status)."""
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            _denied.set(True)
            await websocket.send_denial_response(
                Response(body, status_code=status, media_type="application/json")
            )
        else:
            await websocket.close(code=4000 + status)

    def asgi(self, http_app: ASGIApp) -> ASGIApp:
        """`http_app`, with this API's WebSocket at `WEBSOCKET_PATH`."""
        routes = [WebSocketRoute(WEBSOCKET_PATH, self.serve)]
        return _WithWebSocket(http_app, Starlette(routes=routes))


class _WithWebSocket:
    """WebSocket requests for `WEBSOCKET_PATH` to the gateway, everything else to the API."""

    def __init__(self, http_app: ASGIApp, websocket_app: ASGIApp):
        self.http_app = http_app
        self.websocket_app = websocket_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope.get("path") == WEBSOCKET_PATH:
            await self.websocket_app(scope, receive, send)
        else:
            await self.http_app(scope, receive, send)
