"""Every error the API gives: JSON `{"error": {"code", "message"}}`, with a stable code.

Clients branch on `code`; `message` names what is wrong for the person reading it.
Free of FastAPI, so the WebSocket function, which raises them too, does not import it;
`carrier_core.api.http_errors` answers them over HTTP.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

#: Largest request body taken, in bytes. Messages are at most `max_message_chars` long;
#: character files (with their knowledge) and chat completions (whose clients resend the
#: whole conversation each time) are allowed more.
MAX_BODY_BYTES = 64 * 1024
MAX_LARGE_BODY_BYTES = 1024 * 1024
#: Document uploads (POST /v1/agents/{id}/documents). API Gateway hands Lambda a multipart
#: body base64-encoded, a third larger, and Lambda takes events of at most 6 MB: 4 MiB of
#: upload is about 5.6 MB of event.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


#: What a client is told to wait before trying again while the database is away.
RETRY_AFTER_S = 5
UNAVAILABLE_MESSAGE = "the database is unavailable; nothing was done: try again shortly"


#: The documented error answers of every route (401, 403, 404, 413 and 422 are possible anywhere).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        401: "missing or invalid credentials",
        403: "the credentials do not allow this",
        404: "no such resource for this tenant",
        413: "request body too large",
        422: "invalid request; the message names the field",
        503: "the database is unavailable; try again after Retry-After seconds",
    }.items()
}
