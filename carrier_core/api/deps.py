"""What every route needs: the runtime, the caller, and its right to a turn (to an agent:
`carrier_core.api.posting.agent_of`).

A resource of another tenant answers 404, exactly like one that does not exist,
so that ids cannot be probed across tenants.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from carrier_core.api.posting import CLIENT_SOURCE, Submit, agent_of, scoped_key
from carrier_core.auth import Authenticator, Principal
from carrier_core.embed import RequestEmbedding, embed_pending
from carrier_core.runtime import Runtime
from carrier_core.store.base import NotFound
from carrier_core.store.turns import TurnRecord
from carrier_core.turn.approval import Approval
from carrier_core.world import entity_id_for

#: Called once an approval is answered, with the token of the state machine task that
#: waits for it (None: none waits yet, or the turn runs in this process).
Resume = Callable[[Approval, str | None], None]


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


def turn_of(runtime: Runtime, principal: Principal, turn_id: uuid.UUID) -> TurnRecord:
    """The turn, if the caller may see it: its agent is theirs, and for an end user, they
    sent it, in one of their own rooms."""
    missing = NotFound(f"no turn with id {turn_id}")
    try:
        turn = runtime.store.turn(turn_id)
        agent_of(runtime, principal, turn.agent_id)
        if principal.user is None:
            return turn
        sender = runtime.store.memory(turn.message_id).entity_id
        room = runtime.store.room(turn.room_id).name
    except NotFound:
        raise missing from None
    if sender != entity_id_for(turn.agent_id, CLIENT_SOURCE, principal.user):
        raise missing
    if not room.startswith(scoped_key(principal, "")):
        raise missing
    return turn
