"""The reflection evaluator: learn facts and relationships from the conversation.

It runs every `reflection_interval` incoming messages in a room rather than
every turn, so most turns cost a single model call. The room keeps a bookmark
of what was reflected on, so each message is read once however the turns are
spread over processes.

With `reflection: inline` it makes no model call: the turn's decide call was asked
what to remember (`carrier_core.turn.inline_reflection`), and the evaluator stores what
the decision carries, with the same code, dedupe and bookmark as its own answers.
Storing is idempotent (a fact already known is not stored again, a relationship is
merged, the bookmark only moves forward), so a retried evaluate step doubles nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from carrier_core.decision import LEARNED_FIELDS, Decision
from carrier_core.memory import Content, Memory, MemoryKind
from carrier_core.model_output import UnparsableOutput, as_list, parse_structured
from carrier_core.models import ModelRequest, ModelRole
from carrier_core.plugin import Evaluator
from carrier_core.turn import templates
from carrier_core.world import Entity, Relationship

if TYPE_CHECKING:
    from carrier_core.turn.context import TurnContext

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


#: How many of the newest facts about the sender the reflection prompt shows as known.
KNOWN_FACTS_SHOWN = 50


class ReflectionError(ValueError):
    """A reflection answer of the wrong shape; the message names the field."""


def _inline(ctx: TurnContext) -> dict[str, Any] | None:
    """What the turn's decision carries to remember, when reflection is inline and its
    decide step was asked; else None."""
    if ctx.runtime.settings.reflection != "inline" or not ctx.turn.decision:
        return None
    return Decision.model_validate(ctx.turn.decision).reflection


def _due(ctx: TurnContext) -> bool:
    if ctx.runtime.settings.reflection == "inline":
        return _inline(ctx) is not None
    return ctx.unreflected_messages() >= ctx.runtime.settings.reflection_interval


def _items(result: dict[str, Any], field: str) -> list[Any]:
    """A list as answered: a JSON list, or its text (an XML answer's tag)."""
    value = result.get(field) or []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ReflectionError(f"reflection: '{field}' is not a JSON list: {exc}") from None
        except RecursionError:
            raise ReflectionError(f"reflection: '{field}' nests too deep to read") from None
    if not isinstance(value, list):
        raise ReflectionError(f"reflection: '{field}' should be a list, got {type(value).__name__}")
    return value


def _reflect(ctx: TurnContext) -> dict[str, Any]:
    store = ctx.runtime.store
    inline = _inline(ctx)
    if inline is not None:
        # Learned through the turn's message: later ones were not in its decide prompt.
        _, newest = store.messages_since_reflection(ctx.room.id, through_seq=ctx.message.seq)
        return {"inline": True, **_learn(ctx, inline, newest)}
    scene = store.reflection_scene(
        ctx.room.id,
        ctx.message.entity_id,
        recent=ctx.runtime.settings.recent_messages,
        known=KNOWN_FACTS_SHOWN,
    )
    newest = scene.newest
    if scene.pending == 0:
        return {"facts_found": 0, "facts_stored": 0, "relationships": 0}
    conversation = "\n".join(f"{m.speaker}: {m.memory.content.text}" for m in scene.recent)
    people = _people(ctx, lambda: scene.people)
    known_text = "\n".join(f"- {f.content.text}" for f in scene.known) or "(none)"
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
            generation.text, ("thought", *LEARNED_FIELDS), what="reflection", prefer="json"
        )
    except UnparsableOutput:
        # The model was asked and answered badly: retrying these messages every turn
        # would cost a call each time, so they count as read.
        store.mark_reflected(ctx.room.id, newest)
        raise
    result = _learn(ctx, answer, newest)
    if template:
        result["template"] = templates.REFLECT
    if unknown:
        result["template_unknown"] = list(unknown)
    return result


def _people(
    ctx: TurnContext, read: Callable[[], list[Entity]] | None = None
) -> dict[str, uuid.UUID]:
    """The room's people by name, the agent among them: whom facts can be about. Read
    once per step (`read`: with the reflection's scene; else on its own)."""
    members = ctx.once("people", read) if read is not None else ctx.people()
    people = {e.name: e.id for e in members}
    people[ctx.agent_name] = ctx.message.agent_id
    return people


def _learn(ctx: TurnContext, answer: dict[str, Any], newest: int) -> dict[str, Any]:
    """Store the facts, relationships and names of an answer (the evaluator's own, or a
    decision's inline), and move the room's bookmark to `newest`. A malformed list raises
    `ReflectionError`, the messages counting as read all the same: asking about them
    again would likely get the same answer."""
    store = ctx.runtime.store
    try:
        lists = [_items(answer, field) for field in LEARNED_FIELDS]
    except ReflectionError:
        store.mark_reflected(ctx.room.id, newest)
        raise
    facts, relationships, names = ([i for i in items if isinstance(i, dict)] for items in lists)
    # Entries that are no object at all are skipped, and counted in the step's record.
    unreadable = sum(1 for items in lists for item in items if not isinstance(item, dict))
    people = _people(ctx)
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
    if unreadable:
        result["unreadable"] = unreadable
    return result


REFLECTION = Evaluator(
    "reflection",
    "Extracts lasting facts about people, and their relationships, from the conversation.",
    _reflect,
    validate=_due,
    # Facts are worth learning even from messages the agent chose not to answer.
    always_run=True,
)
