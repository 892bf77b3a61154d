"""Agents: made from a character (the JSON of an ElizaOS character file), one tenant's each."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel

from carrier_core.api.deps import AgentRef, Caller, EmbedDep, RuntimeDep
from carrier_core.api.errors import ApiError, ErrorBody
from carrier_core.api.pages import Cursor, Limit, Page, id_cursor
from carrier_core.api.posting import agent_of
from carrier_core.character import HANDLE, Character, CharacterError, parse_character
from carrier_core.embed import RequestEmbedding
from carrier_core.knowledge import plan_knowledge
from carrier_core.models import ModelError
from carrier_core.plugin import PluginError
from carrier_core.runtime import Runtime
from carrier_core.storable import check_storable_json
from carrier_core.store.agents import AgentConflict, AgentRecord, agent_id_in
from carrier_core.store.base import NotFound

router = APIRouter(prefix="/v1/agents", tags=["agents"])

CONFLICT_RESPONSE: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "the tenant has an agent of this handle (`conflict`)"}
}

CharacterBody = Annotated[
    dict[str, Any],
    Body(
        description="An ElizaOS character (name, bio, lore, system, messageExamples, style, "
        "topics, adjectives, knowledge, plugins, settings); unknown fields are kept. "
        "Secrets (`secrets`, `settings.secrets`, and settings named like *_API_KEY, *_TOKEN, "
        "*_SECRET or *PASSWORD*) go to the secret store: the agent shows their names only. "
        "Upload a file with `curl --data @character.json`.",
        examples=[{"name": "Ada", "bio": ["A patient teacher of mathematics."]}],
    ),
]


class AgentView(BaseModel):
    id: uuid.UUID
    #: How the tenant addresses the agent in paths and as a chat completions `model`.
    handle: str
    name: str
    created_at: datetime
    updated_at: datetime


class AgentDetail(AgentView):
    #: The stored character: each secret's name with "(secret)" for its value, which is kept
    #: in the secret store and never returned. Sent back unchanged, a marker keeps its value.
    character: dict[str, Any]
    #: Plugins named by the character that this runtime does not have, with the reason.
    skipped_plugins: dict[str, str]
    #: Knowledge files named by the character (`path`, `directory`), which the API does not
    #: read, with the reason: upload them to /v1/agents/{id}/documents.
    skipped_knowledge: dict[str, str]


def _view(record: AgentRecord) -> AgentView:
    return AgentView.model_validate(record, from_attributes=True)


def _detail(runtime: Runtime, record: AgentRecord) -> AgentDetail:
    character = runtime.store.character(record.id)
    return AgentDetail(
        **_view(record).model_dump(),
        character=character.to_document(),
        skipped_plugins=dict(runtime.plugins_for(character).skipped),
        skipped_knowledge={s.name: s.message for s in plan_knowledge(character).skipped},
    )


def _parse(document: dict[str, Any], agent_id: uuid.UUID) -> Character:
    """The character posted, as this agent (its own `id` field is replaced)."""
    try:
        check_storable_json(document)
    except ValueError as exc:
        raise ApiError(422, "invalid_character", f"body: {exc}") from None
    try:
        return parse_character({**document, "id": str(agent_id)}, source="body")
    except CharacterError as exc:
        raise ApiError(422, "invalid_character", str(exc)) from None


def _save(
    runtime: Runtime,
    tenant_id: uuid.UUID,
    character: Character,
    handle: str,
    embed: RequestEmbedding,
) -> AgentRecord:
    """Store the character as the tenant's agent `handle`. Its knowledge texts are stored
    as documents, embedded by `embed` (queued in the cloud); its knowledge files are not
    read (see `carrier_core.knowledge.items`): upload them."""
    try:
        runtime.models_for(character)  # an unknown model set is named now, not at the first turn
        agent_id = runtime.register_agent(character, tenant_id, handle=handle, embed=embed)
    except CharacterError as exc:
        raise ApiError(422, "invalid_character", str(exc)) from None
    except (PluginError, ModelError) as exc:
        raise ApiError(422, "invalid_character", f"body: {exc}") from None
    except AgentConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return runtime.store.agent_record(agent_id)


@router.post("", status_code=201, response_model=AgentDetail, responses=CONFLICT_RESPONSE)
def create_agent(
    runtime: RuntimeDep, principal: Caller, embed: EmbedDep, character: CharacterBody
) -> AgentDetail:
    """Create an agent from a character; its handle is the slug of its name (`Ada` -> `ada`).
    409 if the tenant has an agent of that handle: `PUT /v1/agents/{handle}` replaces it."""
    principal.require_full_key("creating agents")
    parsed = _parse(character, uuid.uuid4())
    try:
        taken = runtime.store.agent_by_handle(principal.tenant_id, parsed.handle)
    except NotFound:
        taken = None
    if taken is not None:
        raise ApiError(
            409,
            "conflict",
            f"an agent with handle {parsed.handle!r} exists (id {taken.id}):"
            f" PUT /v1/agents/{parsed.handle} replaces its character",
        )
    return _detail(runtime, _save(runtime, principal.tenant_id, parsed, parsed.handle, embed))


@router.get("", response_model=Page[AgentView])
def list_agents(
    runtime: RuntimeDep, principal: Caller, limit: Limit = 20, cursor: Cursor = None
) -> Page[AgentView]:
    principal.require_key("listing agents")
    records = runtime.store.tenant_agents(
        principal.tenant_id, limit=limit, after=id_cursor(cursor), only=principal.agent_ids
    )
    next_cursor = str(records[-1].id) if len(records) == limit else None
    return Page(data=[_view(r) for r in records], next_cursor=next_cursor)


@router.get("/{agent}", response_model=AgentDetail)
def get_agent(runtime: RuntimeDep, principal: Caller, agent: AgentRef) -> AgentDetail:
    principal.require_key("reading an agent")
    return _detail(runtime, agent_of(runtime, principal, agent))


@router.put(
    "/{agent}",
    response_model=AgentDetail,
    responses={201: {"model": AgentDetail, "description": "made: no agent had the handle"}},
)
def put_agent(
    runtime: RuntimeDep,
    principal: Caller,
    embed: EmbedDep,
    agent: AgentRef,
    character: CharacterBody,
    response: Response,
) -> AgentDetail:
    """Replace the character of the agent with this id or handle (its memories, documents
    and rooms stay, and so does its handle), or make an agent with this handle (201).
    Safe to repeat: the way to keep one agent per character from a script."""
    principal.require_key("updating an agent")
    try:
        found: AgentRecord | None = agent_of(runtime, principal, agent)
    except NotFound:
        if agent_id_in(agent) is not None:
            raise
        if not HANDLE.fullmatch(agent):
            raise ApiError(
                422,
                "invalid_request",
                f"handle {agent!r}: lowercase letters, digits and inner hyphens, at most 48",
            ) from None
        principal.require_full_key("creating agents")
        found = None
    if found is None:
        response.status_code = 201
    agent_id, handle = (uuid.uuid4(), agent) if found is None else (found.id, found.handle)
    record = _save(runtime, principal.tenant_id, _parse(character, agent_id), handle, embed)
    return _detail(runtime, record)


@router.delete("/{agent}", status_code=204, response_class=Response)
def delete_agent(runtime: RuntimeDep, principal: Caller, agent: AgentRef) -> Response:
    """Delete the agent with everything it remembers, its rooms, turns, webhooks and secrets."""
    principal.require_key("deleting an agent")
    agent_id = agent_of(runtime, principal, agent).id
    runtime.delete_agent(agent_id)
    return Response(status_code=204)
