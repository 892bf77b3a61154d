"""The reflection evaluator: learn facts and relationships from the conversation.

It runs every `reflection_interval` incoming messages in a room rather than
every turn, so most turns cost a single model call. The room keeps a bookmark
of what was reflected on, so each message is read once however the turns are
spread over processes.
"""

from __future__ import annotations

from typing import Any

from carrier_core.memory import Content, Memory, MemoryKind
from carrier_core.model_output import UnparsableOutput, as_list, parse_structured
from carrier_core.models import ModelRequest, ModelRole
from carrier_core.plugin import Evaluator
from carrier_core.turn import templates
from carrier_core.turn.context import TurnContext
from carrier_core.world import Relationship

_PROMPT = """Read the conversation below and note what is worth remembering about the people in it.

{conversation}

Known facts already (do not repeat them):
{known}

Answer with one JSON object and nothing else:
{{"thought": "...",
  "facts": [{{"claim": "a short sentence naming the person", "about": "person's name"}}],
  "relationships": [{{"source": "name", "target": "name", "tags": ["friend", ...]}}],
  "names": [{{"about": "name as shown in the conversation", "name": "name they asked for"}}]}}
Only include facts that are stated, lasting, and about a person in the conversation. List in
"names" only people who said what they are called ("my name is ...", "call me ...")."""


class ReflectionError(ValueError):
    """A reflection answer of the wrong shape; the message names the field."""


def _due(ctx: TurnContext) -> bool:
    pending, _ = ctx.runtime.store.messages_since_reflection(ctx.room.id)
    return pending >= ctx.runtime.settings.reflection_interval


def _items(result: dict[str, Any], field: str) -> list[dict[str, Any]]:
    value = result.get(field) or []
    if not isinstance(value, list):
        raise ReflectionError(f"reflection: '{field}' should be a list, got {type(value).__name__}")
    return [item for item in value if isinstance(item, dict)]


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
    known_text = "\n".join(f"- {f.content.text}" for f in known) or "(none)"
    template = ctx.character.templates.get(templates.REFLECT)
    unknown: tuple[str, ...] = ()
    if template:
        rendered = templates.render(
            template,
            {
                **templates.character_values(ctx.character),
                "senderName": ctx.sender,
                "recentMessages": conversation,
                "knownFacts": known_text,
                "entitiesInRoom": "\n".join(f"- {name} ({id_})" for name, id_ in people.items()),
            },
        )
        templates.report_unknown(ctx.agent_name, templates.REFLECT, rendered.unknown)
        prompt, unknown = rendered.text, rendered.unknown
    else:
        prompt = _PROMPT.format(conversation=conversation, known=known_text)
    generation = ctx.generate(
        ModelRequest(
            role=ModelRole.SMALL,
            task="reflect",
            system=f"You help {ctx.agent_name} remember people.",
            prompt=prompt,
            hints={"conversation": conversation, "agent": ctx.agent_name},
        )
    )
    try:
        answer = parse_structured(
            generation.text,
            ("thought", "facts", "relationships", "names"),
            what="reflection",
            prefer="json",
        )
        facts, relationships = _items(answer, "facts"), _items(answer, "relationships")
        names = _items(answer, "names")
    except (UnparsableOutput, ReflectionError):
        # The model was asked and answered badly: retrying these messages every turn
        # would cost a call each time, so they count as read.
        store.mark_reflected(ctx.room.id, newest)
        raise
    claims = []
    for fact in facts:
        if fact.get("already_known") is True or fact.get("in_bio") is True:
            continue  # ElizaOS's template marks what needs no storing
        claim, about = str(fact.get("claim", "")).strip(), str(fact.get("about") or "")
        # A fact about someone not in the room cannot be filed under anyone we know.
        entity_id = people.get(about) if about else ctx.message.entity_id
        if claim and entity_id is not None:
            claims.append((claim, entity_id))
    stored = 0
    if claims:
        vectors = ctx.embed([claim for claim, _ in claims]).vectors
        for (claim, entity_id), vector in zip(claims, vectors, strict=True):
            fact_memory = Memory(
                agent_id=ctx.message.agent_id,
                entity_id=entity_id,
                room_id=ctx.room.id,
                kind=MemoryKind.FACT,
                content=Content(text=claim, source="reflection"),
                embedding=vector,
            )
            stored += store.add_fact(
                fact_memory,
                duplicate_similarity=ctx.runtime.settings.duplicate_fact_similarity,
                turn_id=ctx.turn.id,
            )
    linked = 0
    # ElizaOS's own template names people by entity id (sourceEntityId, targetEntityId).
    by_id = {str(id_): id_ for id_ in people.values()}
    for rel in relationships:
        source, target = (
            people.get(str(rel.get(name))) or by_id.get(str(rel.get(f"{name}EntityId")))
            for name in ("source", "target")
        )
        if source is None or target is None or source == target:
            continue
        store.save_relationship(
            Relationship(
                agent_id=ctx.message.agent_id,
                source_entity_id=source,
                target_entity_id=target,
                tags=as_list(rel.get("tags")),
            )
        )
        linked += 1
    named = 0
    for entry in names:
        entity_id, name = people.get(str(entry.get("about"))), str(entry.get("name") or "").strip()
        if entity_id is not None and entity_id != ctx.message.agent_id and 0 < len(name) <= 100:
            store.name_entity(entity_id, name)
            named += 1
    store.mark_reflected(ctx.room.id, newest)
    result: dict[str, Any] = {
        "facts_found": len(claims),
        "facts_stored": stored,
        "relationships": linked,
    }
    if named:
        result["names"] = named
    if template:
        result["template"] = templates.REFLECT
    if unknown:
        result["template_unknown"] = list(unknown)
    return result


REFLECTION = Evaluator(
    "reflection",
    "Extracts lasting facts about people, and their relationships, from the conversation.",
    _reflect,
    validate=_due,
    # Facts are worth learning even from messages the agent chose not to answer.
    always_run=True,
)
