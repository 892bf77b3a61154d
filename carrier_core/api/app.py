"""The client API (v1): one FastAPI app, served by Mangum in Lambda and uvicorn locally.

Posting a message runs only the ingest step (the message and its turn are stored: it is
accepted), so the caller gets the message and turn ids at once, and hands the result to
`submit`, which starts the room's runner if the post claimed it: a state machine
execution in the cloud and under `carrier dev`, a direct call in tests. Uploading a document
(or creating an agent with knowledge) likewise stores it and hands the agent to
`request_embedding`: a message on the embed queue in the cloud, embedding at once otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from carrier_core.api import (
    agents,
    chat_completions,
    documents,
    health,
    keys,
    memories,
    rooms,
    tasks,
    turns,
    webconsole,
    webhooks,
)
from carrier_core.api.deps import Resume, Services
from carrier_core.api.errors import ERROR_RESPONSES
from carrier_core.api.http_errors import BodyLimit, install_error_handlers
from carrier_core.api.posting import Submit
from carrier_core.embed import RequestEmbedding
from carrier_core.runtime import Runtime

DESCRIPTION = """\
Talk to Carrier agents and manage them.

Authenticate with `Authorization: Bearer <token>`: an API key (`carrier_...`) acts for its
tenant; a JWT from the configured issuer acts for one end user, who may only chat.
Every error is `{"error": {"code", "message"}}`.
"""


def create_app(
    runtime: Callable[[], Runtime],
    submit: Submit,
    request_embedding: RequestEmbedding | None = None,
    *,
    websocket_url: str | None = None,
    resume: Resume | None = None,
) -> FastAPI:
    """The API over a runtime (made on first use), a way to start a room's runner, and one
    to have new knowledge embedded (None: at once, within the request). `websocket_url` is
    where the web console opens its WebSocket when the WebSocket API is served elsewhere
    (None: at `/v1/ws` beside it). `resume` wakes a turn whose approval was answered
    (None: its room runs again in this process, within the request)."""
    app = FastAPI(title="Carrier", version="1.0.0", description=DESCRIPTION)
    app.state.services = Services(
        runtime=runtime, submit=submit, request_embedding=request_embedding, resume=resume
    )
    app.state.console_websocket_url = websocket_url
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    app.include_router(health.router)
    app.include_router(webconsole.router)
    app.include_router(webconsole.config_router)
    for module in (
        agents,
        rooms,
        turns,
        memories,
        documents,
        keys,
        chat_completions,
        webhooks,
        tasks,
    ):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    return app
