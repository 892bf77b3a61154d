"""The web console: plain HTML, CSS and JavaScript shipped in the package (`console/`), served
by the API itself at `/` and `/console/...`, in the cloud and under `carrier dev` alike.

The page holds no secret. It reads an API key from its URL fragment (`#key=...`, which
browsers never send to a server: `carrier dev` prints such a link) or has the user paste
one, keeps it in the tab's sessionStorage, and calls the API with it, from the same origin.
Where the WebSocket API lives elsewhere (API Gateway's WebSocket API has its own URL), the
page asks `GET /v1/console-config`, which needs no credentials; without a configured URL
the WebSocket is at `/v1/ws` beside the page (`carrier dev`).
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from carrier_core.api.http_errors import error_response

#: The console's files, by the name they are served under, and their content types. Only
#: these are served: a name not listed is 404, so no path reaches any other file.
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
INDEX = "index.html"

router = APIRouter(include_in_schema=False)
config_router = APIRouter(prefix="/v1", tags=["console"])


class ConsoleConfig(BaseModel):
    #: Where the page opens its WebSocket (wss://...); null: `/v1/ws` on the page's own host.
    websocket_url: str | None


def websocket_url(request: Request) -> str | None:
    found: str | None = getattr(request.app.state, "console_websocket_url", None)
    return found or None


@cache
def _file(name: str) -> tuple[bytes, str]:
    """A console file's bytes and its ETag."""
    body = resources.files("carrier_core.api").joinpath("console", name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def content_security_policy(websocket: str | None) -> str:
    """Scripts, styles, images and connections from this origin only, plus the WebSocket
    API's origin when it lives elsewhere (else any ws:/wss: URL, as browsers differ on
    whether 'self' covers a WebSocket to the same host)."""
    if websocket:
        parts = urlsplit(websocket)
        sockets = f"{parts.scheme}://{parts.netloc}"
    else:
        sockets = "ws: wss:"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        f" connect-src 'self' {sockets}; manifest-src 'self'; base-uri 'none';"
        " form-action 'none'; frame-ancestors 'none'"
    )


def _serve(request: Request, name: str, content_type: str) -> Response:
    body, etag = _file(name)
    headers = {
        "ETag": etag,
        "Content-Type": content_type,
        "Content-Security-Policy": content_security_policy(websocket_url(request)),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        # Small files, read again on each visit (a revalidation keeps them fresh across an
        # upgrade without a build step to version their names).
        "Cache-Control": "no-cache",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers)


@router.get("/")
def index(request: Request) -> Response:
    return _serve(request, INDEX, "text/html; charset=utf-8")


@router.get("/console/{name}")
def asset(request: Request, name: str) -> Response:
    content_type = ASSETS.get(name)
    if content_type is None:
        return error_response(404, "not_found", f"no console file named {name!r}")
    return _serve(request, name, content_type)


@config_router.get("/console-config", response_model=ConsoleConfig)
def console_config(request: Request) -> ConsoleConfig:
    """What the web console needs before it has a key: where the WebSocket API is.
    Needs no credentials."""
    return ConsoleConfig(websocket_url=websocket_url(request))
