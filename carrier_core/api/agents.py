"""Agents: made from a character (the JSON of an ElizaOS character file), one tenant's each."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel

from carrier_core.api.deps import Caller, EmbedDep, RuntimeDep, agent_of
from carrier_core.api.errors import ApiError
from carrier_core.api.pages import Cursor, Limit, Page, id_cursor
from carrier_core.character import Character, CharacterError, parse_character
from carrier_core.knowledge import plan_knowledge
from carrier_core.models import ModelError
from carrier_core.plugin import PluginError
from carrier_core.runtime import Runtime
from carrier_core.storable import check_storable_json
from carrier_core.store import AgentRecord
from carrier_core.turn.embed import RequestEmbedding

router = APIRouter(prefix="/v1/agents", tags=["agents"])

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


def _save(
    runtime: Runtime,
    tenant_id: uuid.UUID,
    document: dict[str, Any],
    agent_id: uuid.UUID,
    embed: RequestEmbedding,
) -> None:
    """Validate and store a character as this agent (its own `id` field is replaced). Its
    knowledge texts are stored as documents, embedded by `embed` (queued in the cloud); its
    knowledge files are not read (see `carrier_core.knowledge.items`): upload them."""
    try:
        check_storable_json(document)
    except ValueError as exc:
        raise ApiError(422, "invalid_character", f"body: {exc}") from None
    try:
        character: Character = parse_character({**document, "id": str(agent_id)}, source="body")
        runtime.models_for(character)  # an unknown model set is named now, not at the first turn
        runtime.register_agent(character, tenant_id, embed=embed)
    except CharacterError as exc:
        raise ApiError(422, "invalid_character", str(exc)) from None
    except (PluginError, ModelError) as exc:
        raise ApiError(422, "invalid_character", f"body: {exc}") from None


@router.post("", status_code=201, response_model=AgentDetail)
def create_agent(
    runtime: RuntimeDep, principal: Caller, embed: EmbedDep, character: CharacterBody
) -> AgentDetail:
    """Create an agent from a character. Each call makes a new agent with a new id."""
    principal.require_full_key("creating agents")
    agent_id = uuid.uuid4()
    _save(runtime, principal.tenant_id, character, agent_id, embed)
    return _detail(runtime, runtime.store.agent_record(agent_id))


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


@router.get("/{agent_id}", response_model=AgentDetail)
def get_agent(runtime: RuntimeDep, principal: Caller, agent_id: uuid.UUID) -> AgentDetail:
    principal.require_key("reading an agent")
    return _detail(runtime, agent_of(runtime, principal, agent_id))


@router.put("/{agent_id}", response_model=AgentDetail)
def update_agent(
    runtime: RuntimeDep,
    principal: Caller,
    embed: EmbedDep,
    agent_id: uuid.UUID,
    character: CharacterBody,
) -> AgentDetail:
    """Replace the agent's character; its memories, documents and rooms stay."""
    principal.require_key("updating an agent")
    agent_of(runtime, principal, agent_id)
    _save(runtime, principal.tenant_id, character, agent_id, embed)
    return _detail(runtime, runtime.store.agent_record(agent_id))


@router.delete("/{agent_id}", status_code=204, response_class=Response)
def delete_agent(runtime: RuntimeDep, principal: Caller, agent_id: uuid.UUID) -> Response:
    """Delete the agent with everything it remembers, its rooms, turns, webhooks and secrets."""
    principal.require_key("deleting an agent")
    agent_of(runtime, principal, agent_id)
    runtime.delete_agent(agent_id)
    return Response(status_code=204)
