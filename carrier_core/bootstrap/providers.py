"""The bootstrap providers: what the decide prompt shows, section by section."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from carrier_core.attachments import prompt_lines
from carrier_core.memory import MemoryKind, ScoredMemory
from carrier_core.plugin import Cut, Provider, ProviderResult
from carrier_core.store.memories import Search

if TYPE_CHECKING:
    from carrier_core.turn.context import TurnContext


def _character(ctx: TurnContext) -> ProviderResult:
    c = ctx.character
    lines = [f"You are {c.name}" + (f" (@{c.username})" if c.username else "") + "."]
    lines += c.bio
    if c.lore:
        lines.append("Background: " + " ".join(c.lore))
    if c.adjectives:
        lines.append("You are " + ", ".join(a for a in c.adjectives if a) + ".")
    if topics := [t for t in c.topics if t]:
        lines.append("You know about: " + ", ".join(topics) + ".")
    if style := c.style.all + c.style.chat:
        lines.append("Style: " + "; ".join(style) + ".")
    # A few example exchanges, picked the same way for the same message, teach the voice.
    examples = list(c.message_examples)
    random.Random(str(ctx.message.id)).shuffle(examples)
    for dialogue in examples[:2]:
        lines.append("Example:")
        for line in dialogue:
            speaker = line.speaker.replace("{{user1}}", "User").replace("{{agent}}", c.name)
            lines.append(f"  {speaker}: {line.content.text}")
    return ProviderResult("\n".join(lines), {"agent_name": c.name})


def _time(ctx: TurnContext) -> ProviderResult:
    now = datetime.now(UTC)
    return ProviderResult(f"It is {now:%A %d %B %Y, %H:%M} UTC.", {"now": now.isoformat()})


def _entities(ctx: TurnContext) -> ProviderResult:
    people = ctx.people()
    names = [p.name for p in people]
    kind = "a direct conversation" if ctx.room.kind == "dm" else "a group conversation"
    text = f"This is {kind} in room '{ctx.room.name}' with: {', '.join(names) or 'nobody yet'}."
    return ProviderResult(text, {"participants": names})


def _relationships(ctx: TurnContext) -> ProviderResult:
    """What reflection learned of how the sender relates to others (newest first)."""
    found = ctx.relationships()
    lines = [
        f"- {source} and {target}: {', '.join(tags) or 'known'}" for source, target, tags in found
    ]
    return ProviderResult("\n".join(lines), {"relationships": len(lines)})


def _recalled(ctx: TurnContext) -> list[list[ScoredMemory]]:
    """The facts about the sender, the knowledge and the room's older messages most like
    the message, found in one statement (each provider below shows one of them)."""
    settings = ctx.runtime.settings

    def search() -> list[list[ScoredMemory]]:
        return ctx.runtime.store.search_together(
            ctx.query_embedding(),
            ctx.message.agent_id,
            [
                Search(
                    (MemoryKind.FACT,),
                    settings.fact_count,
                    threshold=-1.0,
                    entity_id=ctx.message.entity_id,
                ),
                Search((MemoryKind.FRAGMENT,), settings.knowledge_count, settings.recall_threshold),
                Search(
                    (MemoryKind.MESSAGE,),
                    settings.recall_count,
                    settings.recall_threshold,
                    room_id=ctx.room.id,
                    before_recent=(ctx.message, settings.recent_messages),
                ),
            ],
        )

    return ctx.once("recalled", search)


def _facts(ctx: TurnContext) -> ProviderResult:
    """Facts about the sender, most relevant to the message first (semantic recall)."""
    facts = [f.memory.content.text for f in _recalled(ctx)[0]]
    text = "\n".join(f"- {fact}" for fact in facts)
    return ProviderResult(text, {"facts": facts})


def _knowledge(ctx: TurnContext) -> ProviderResult:
    return ProviderResult("\n".join(f"- {k.memory.content.text}" for k in _recalled(ctx)[1]))


def _recall(ctx: TurnContext) -> ProviderResult:
    """Earlier messages of this room like the latest one, from before the recent window."""
    lines = [
        f"- ({m.memory.created_at:%Y-%m-%d}) {m.memory.content.text}"
        for m in _recalled(ctx)[2]
        if m.memory.created_at is not None
    ]
    return ProviderResult("\n".join(lines))


def _recent_messages(ctx: TurnContext) -> ProviderResult:
    recent = ctx.recent_messages()
    lines = [f"{m.speaker}: {m.memory.content.text}" for m in recent]
    return ProviderResult("\n".join(lines), {"conversation": "\n".join(lines)})


def _attachments(ctx: TurnContext) -> ProviderResult:
    """The attachments of the conversation's recent messages, oldest first: who sent
    each, its title, URL, description and text (images are described in the decide
    step before the providers run: `carrier_core.turn.describe`)."""
    found = ctx.attachment_messages()
    lines: list[str] = []
    shown: list[dict[str, object]] = []
    for named in found:
        for index, attachment in enumerate(named.memory.content.attachments):
            lines += prompt_lines(named.speaker, attachment)
            shown.append({"message_id": str(named.memory.id), "index": index})
    return ProviderResult("\n".join(lines), {"attachments": shown})


def _actions(ctx: TurnContext) -> ProviderResult:
    # An action whose validate raises is not offered; picked anyway, its act step fails.
    available = [a for a in ctx.plugins.actions.values() if a.fits(ctx)]
    lines = []
    for action in available:
        lines.append(f"- {action.name}: {action.description}")
        for said, answered in action.examples[:2]:
            lines.append(f"  e.g. someone: {said} / {ctx.agent_name}: {answered} ({action.name})")
    return ProviderResult("\n".join(lines), {"actions": [a.name for a in available]})


def _dynamic_providers(ctx: TurnContext) -> ProviderResult:
    """The dynamic providers the model may name in `<providers>` to see them in a further
    decide step (private ones are never listed)."""
    offered = [p for p in ctx.plugins.providers if p.dynamic and not p.private]
    lines = [f"- {p.name}: {p.description}" for p in offered]
    return ProviderResult("\n".join(lines), {"dynamic_providers": [p.name for p in offered]})


def _action_results(ctx: TurnContext) -> ProviderResult:
    """What the actions of this turn's earlier steps did, for the next decide step (after
    CONTINUE): each action's status, what it said, its text, values and data, or its error.
    The first decide step of a turn has none, and reads nothing."""
    if ctx.turn.steps_taken == 0:
        return ProviderResult()
    results = ctx.action_results()
    lines = []
    for result in results:
        line = f"- {result['action']} ({result['status']})"
        if said := len(result.get("reply_ids", [])):
            line += f": said {said} message(s)"
        if result.get("text"):
            line += f"; {result['text']}"
        for key in ("values", "data"):
            if result.get(key):
                line += f"; {key}: {json.dumps(result[key], default=str)[:1000]}"
        if result.get("error") or result.get("reason"):
            line += f"; {result.get('error') or result.get('reason')}"
        lines.append(line)
    return ProviderResult("\n".join(lines), {"action_results": results})


PROVIDERS = [
    Provider(
        "character",
        "Who the agent is and how it speaks.",
        _character,
        "About you",
        10,
        cut=Cut(90, "tail"),
    ),
    Provider("time", "The current date and time.", _time, "Time", 20, cut=Cut(80)),
    Provider("entities", "Who is in the room.", _entities, "Room", 30, cut=Cut(70, "tail")),
    Provider(
        "facts",
        "What the agent knows about the sender.",
        _facts,
        "What you know about the sender",
        40,
        cut=Cut(50, "tail"),
    ),
    Provider(
        "relationships",
        "How the sender relates to others, as reflection learned.",
        _relationships,
        "Relationships",
        42,
        cut=Cut(40, "tail"),
    ),
    Provider(
        "knowledge",
        "Character knowledge relevant to the message.",
        _knowledge,
        "Knowledge",
        45,
        cut=Cut(20, "tail"),
    ),
    Provider(
        "recall",
        "Older messages like the latest one.",
        _recall,
        "Earlier in this conversation",
        50,
        cut=Cut(10, "tail"),
    ),
    Provider(
        "recent_messages",
        "The conversation so far.",
        _recent_messages,
        "Conversation",
        60,
        cut=Cut(60, "head", keep_lines=1),
    ),
    Provider(
        "attachments",
        "What the recent messages carry: files, images and links.",
        _attachments,
        "Attachments",
        65,
    ),
    Provider(
        "action_state",
        "What the actions of this turn's earlier steps did.",
        _action_results,
        "Results of your actions so far in this turn",
        68,
    ),
    Provider(
        "dynamic_providers",
        "The extra context the agent may ask for.",
        _dynamic_providers,
        "Extra context you can ask for",
        69,
        cut=None,
    ),
    Provider(
        "actions",
        "The actions the agent can take.",
        _actions,
        "Actions you can take",
        70,
        cut=None,
    ),
]
