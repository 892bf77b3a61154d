"""How the HTTP app answers errors: `{"error": {"code", "message"}}` responses, the
exception handlers that turn `ApiError` and the runtime's errors into them, and the body
size limit."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carrier_core.api.errors import (
    MAX_BODY_BYTES,
    MAX_DOCUMENT_BYTES,
    MAX_LARGE_BODY_BYTES,
    RETRY_AFTER_S,
    UNAVAILABLE_MESSAGE,
    ApiError,
)
from carrier_core.auth import Forbidden, Unauthorized
from carrier_core.store.base import NotFound
from carrier_core.store.database import DatabaseUnavailable


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def unavailable_response() -> JSONResponse:
    """503 while the database is away: the request did nothing and may be sent again."""
    response = error_response(503, "unavailable", UNAVAILABLE_MESSAGE)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        response = error_response(401, "unauthorized", str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> JSONResponse:
        return error_response(403, "forbidden", str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, _body_problem(exc) or str(exc.detail))

    @app.exception_handler(DatabaseUnavailable)
    async def unavailable(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return unavailable_response()

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Logged by the server with its traceback; the client learns only that it failed.
        return error_response(500, "internal", "internal error; the request was not completed")


def _body_problem(exc: StarletteHTTPException) -> str | None:
    """What was wrong with a body FastAPI could not read ("There was an error parsing the
    body" says only that it failed): its cause, told in the client's terms."""
    if exc.status_code != 400:
        return None
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return f"body: not valid UTF-8 (byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "body: JSON nested too deep to read"
    if isinstance(cause, ValueError):  # e.g. an integer of more digits than Python reads
        return f"body: {str(cause).split(';')[0]}"
    return None


class BodyLimit:
    """Answer 413 to a body over its limit, whether or not it declared its length.

    Character uploads (POST /v1/agents, PUT /v1/agents/{id}) and chat completions get the
    larger limit, document uploads (POST /v1/agents/{id}/documents) the largest.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    @staticmethod
    def limit_for(method: str, path: str) -> int:
        parts = path.strip("/").split("/")
        is_agent = parts[:2] == ["v1", "agents"] and len(parts) <= 3
        is_chat = parts == ["v1", "chat", "completions"]
        is_documents = len(parts) == 4 and parts[:2] == ["v1", "agents"] and parts[3] == "documents"
        if is_documents and method == "POST":
            return MAX_DOCUMENT_BYTES
        large = (is_agent or is_chat) and method in {"POST", "PUT"}
        return MAX_LARGE_BODY_BYTES if large else MAX_BODY_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await error_response(413, "too_large", f"request body over {limit} bytes")(
                scope, receive, send
            )
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        await self.app(scope, counted, send)


class _TooLarge(StarletteHTTPException):
    """Raised while the body is read; FastAPI passes HTTP exceptions on to `http_error`."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over {limit} bytes")
