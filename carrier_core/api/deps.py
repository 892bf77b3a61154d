"""What every route needs: the runtime, the caller, and the caller's right to an agent.

A resource of another tenant answers 404, exactly like one that does not exist,
so that ids cannot be probed across tenants.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from carrier_core.auth import Authenticator, Principal
from carrier_core.embed import RequestEmbedding, embed_pending
from carrier_core.runtime import Runtime
from carrier_core.store import AgentRecord, NotFound, TurnRecord
from carrier_core.store.agents import no_agent
from carrier_core.turn import Ingested
from carrier_core.turn.approval import Approval
from carrier_core.world import entity_id_for

#: Called once a message is stored: starts the room's runner if the delivery claimed it
#: (`Ingested.runner`): a state machine execution in the cloud, a thread in tests.
Submit = Callable[[Ingested], None]

#: Called once an approval is answered, with the token of the state machine task that
#: waits for it (None: none waits yet, or the turn runs in this process).
Resume = Callable[[Approval, str | None], None]

#: The source every client surface (REST, WebSocket, chat completions) stores messages
#: under, so one sender and one room key mean the same entity and room on all of them.
CLIENT_SOURCE = "api"


@dataclass
class Services:
    """Held in `app.state.services`; the runtime is opened on first use."""

    runtime: Callable[[], Runtime]
    submit: Submit
    #: Wakes a turn whose approval was answered; None: run its room again in this process.
    resume: Resume | None = None
    #: Asks for an agent's new knowledge fragments to be embedded; None: at once, in the
    #: request (local runs and tests). The cloud's API queues a request instead.
    request_embedding: RequestEmbedding | None = None
    _authenticator: Authenticator | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def authenticator(self) -> Authenticator:
        with self._lock:
            if self._authenticator is None:
                runtime = self.runtime()
                self._authenticator = Authenticator(runtime.store, runtime.settings)
            return self._authenticator


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def runtime(request: Request) -> Runtime:
    return services(request).runtime()


#: Declares the scheme in the OpenAPI document (the Authorize button of /docs); a missing
#: or non-Bearer header is left to `Authenticator.principal`, which names the problem.
bearer = HTTPBearer(auto_error=False, description="An API key (carrier_...) or an end user's JWT")


def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    return services(request).authenticator().principal(token)


def embedding(request: Request) -> RequestEmbedding:
    """How this app has an agent's new knowledge embedded (see `Services.request_embedding`)."""
    found = services(request)
    if found.request_embedding is not None:
        return found.request_embedding

    def at_once(agent_id: uuid.UUID) -> None:
        embed_pending(found.runtime(), agent_id, max_batches=None)

    return at_once


RuntimeDep = Annotated[Runtime, Depends(runtime)]
Caller = Annotated[Principal, Depends(caller)]
EmbedDep = Annotated[RequestEmbedding, Depends(embedding)]


#: An agent in a path: its id, or its handle within the caller's tenant (`ada`).
AgentRef = Annotated[
    str, Path(min_length=1, max_length=64, description="the agent's id or handle (e.g. `ada`)")
]


def agent_of(runtime: Runtime, principal: Principal, ref: str | uuid.UUID) -> AgentRecord:
    """The agent with this id or handle, if the caller's tenant owns it and the caller may
    use it; else 404."""
    agent = runtime.store.tenant_agent(principal.tenant_id, ref)
    if not principal.may_use(agent.id):
        raise no_agent(ref)
    return agent


def turn_of(runtime: Runtime, principal: Principal, turn_id: uuid.UUID) -> TurnRecord:
    """The turn, if the caller may see it: its agent is theirs, and an end user sent it."""
    missing = NotFound(f"no turn with id {turn_id}")
    try:
        turn = runtime.store.turn(turn_id)
        agent_of(runtime, principal, turn.agent_id)
    except NotFound:
        raise missing from None
    if principal.user is not None:
        sender = runtime.store.memory(turn.message_id).entity_id
        if sender != entity_id_for(turn.agent_id, CLIENT_SOURCE, principal.user):
            raise missing
    return turn


def room_key(principal: Principal, room: str) -> str:
    """The stored key of the room a caller names. An end user's rooms are their own: the
    key is scoped to their subject, so no one else's token reaches them (an API key of the
    tenant sees them as `user:<subject>:<room>`). The subject is percent-encoded, so no
    two subjects share a prefix."""
    if principal.user is None:
        return room
    return f"user:{quote(principal.user, safe='@.-_')}:{room}"
