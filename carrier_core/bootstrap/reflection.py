"""The reflection evaluator: learn facts and relationships from the conversation.

It runs every `reflection_interval` messages in a room rather than every turn,
so most turns cost a single model call. The room keeps a bookmark of what was
reflected on, so each message is read once however the turns are spread over
processes.
"""

from __future__ import annotations

import uuid
from typing import Any

from carrier_core.memory import Content, Memory, MemoryKind
from carrier_core.model_output import parse_structured
from carrier_core.models import ModelRequest, ModelRole
from carrier_core.plugin import Evaluator
from carrier_core.turn.context import TurnContext
from carrier_core.world import Relationship

_PROMPT = """Read the conversation below and note what is worth remembering about the people in it.

{conversation}

Known facts already (do not repeat them):
{known}

Answer with one JSON object and nothing else:
{{"thought": "...",
  "facts": [{{"claim": "a short sentence naming the person", "about": "person's name"}}],
  "relationships": [{{"source": "name", "target": "name", "tags": ["friend", ...]}}]}}
Only include facts that are stated, lasting, and about a person in the conversation."""


def _due(ctx: TurnContext) -> bool:
    pending, _ = ctx.runtime.store.messages_since_reflection(ctx.room.id)
    return pending >= ctx.runtime.settings.reflection_interval


def _reflect(ctx: TurnContext) -> dict[str, Any]:
    store = ctx.runtime.store
    pending, newest = store.messages_since_reflection(ctx.room.id)
    if pending == 0:
        return {"facts_found": 0, "facts_stored": 0, "relationships": 0}
    recent = store.recent_messages(ctx.room.id, ctx.runtime.settings.recent_messages)
    conversation = "\n".join(f"{m.speaker}: {m.memory.content.text}" for m in recent)
    people = {e.name: e.id for e in store.participants(ctx.room.id)}
    people[ctx.agent_name] = ctx.message.agent_id
    known = store.facts_about(ctx.message.agent_id, ctx.message.entity_id)
    generation = ctx.generate(
        ModelRequest(
            role=ModelRole.SMALL,
            task="reflect",
            system=f"You help {ctx.agent_name} remember people.",
            prompt=_PROMPT.format(
                conversation=conversation,
                known="\n".join(f"- {f.content.text}" for f in known) or "(none)",
            ),
            hints={"conversation": conversation, "agent": ctx.agent_name},
        )
    )
    result = parse_structured(generation.text, ("thought",), what="reflection")
    claims = [
        (
            str(f.get("claim", "")).strip(),
            people.get(str(f.get("about", "")), ctx.message.entity_id),
        )
        for f in result.get("facts") or []
        if isinstance(f, dict) and str(f.get("claim", "")).strip()
    ]
    stored = 0
    if claims:
        vectors = ctx.embed([claim for claim, _ in claims]).vectors
        for (claim, entity_id), vector in zip(claims, vectors, strict=True):
            fact = Memory(
                agent_id=ctx.message.agent_id,
                entity_id=entity_id,
                room_id=ctx.room.id,
                kind=MemoryKind.FACT,
                content=Content(text=claim, source="reflection"),
                embedding=vector,
            )
            stored += store.add_fact(
                fact,
                duplicate_similarity=ctx.runtime.settings.duplicate_fact_similarity,
                turn_id=ctx.turn.id,
            )
    relationships = 0
    for rel in result.get("relationships") or []:
        if not isinstance(rel, dict):
            continue
        source, target = people.get(str(rel.get("source"))), people.get(str(rel.get("target")))
        if source is None or target is None or source == target:
            continue
        tags = [str(t) for t in rel.get("tags") or [] if str(t).strip()]
        store.save_relationship(
            Relationship(
                agent_id=ctx.message.agent_id,
                source_entity_id=uuid.UUID(str(source)),
                target_entity_id=uuid.UUID(str(target)),
                tags=tags,
            )
        )
        relationships += 1
    if newest is not None:
        store.mark_reflected(ctx.room.id, newest)
    return {"facts_found": len(claims), "facts_stored": stored, "relationships": relationships}


REFLECTION = Evaluator(
    "reflection",
    "Extracts lasting facts about people, and their relationships, from the conversation.",
    _reflect,
    validate=_due,
    # Facts are worth learning even from messages the agent chose not to answer.
    always_run=True,
)
