"""The decide prompt: provider sections, then the task and the answer format.

The prompt is composed within a token budget for the large model (the `context_tokens`
setting, else its context window less room for the answer). When the providers' texts
do not fit, they are cut by priority, never arbitrarily: each provider says how its
section gives way (`Provider.cut`). Bootstrap's cut recalled older messages first (least
similar first), then knowledge, then other plugins' sections (by default), then
relationships, then facts, then the conversation from its oldest message (the latest
always stays), and last the character's description; the actions are never cut, nor
are the task and the answer format. What was cut is recorded with the decide step.

A character's `messageHandlerTemplate` replaces the task and the layout: the provider
sections, composed within what the template leaves of the budget, go where it says
`{{providers}}` (see `carrier_core.turn.templates`).

With inline reflection due (`inline_reflection.py`), the task also asks what to remember
and the answer format has its tags; a character's template gets both after its own text.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from carrier_core.models import ModelRequest, ModelRole
from carrier_core.models.tokens import context_window, count_tokens
from carrier_core.turn import templates
from carrier_core.turn.inline_reflection import FORMAT as LEARNED_FORMAT
from carrier_core.turn.inline_reflection import InlineAsk
from carrier_core.world import RoomKind

if TYPE_CHECKING:
    from carrier_core.plugin import Cut
    from carrier_core.turn.context import TurnContext

_FIELDS = """<thought>your private reasoning, one or two sentences</thought>
<actions>comma-separated action names, in the order to run them</actions>
<providers>names of extra context you need, if any</providers>
<text>what you say, if you say anything</text>"""

#: Room kept for the answer and for the estimate's error, in tokens.
_ANSWER_MARGIN = 256


@dataclass(frozen=True)
class Section:
    """One provider's part of the prompt, and how it gives way to fit the budget."""

    name: str
    title: str
    text: str
    #: None: never cut.
    cut: Cut | None


@dataclass
class Composed:
    prompt: str
    tokens: int
    budget: int
    #: What was cut, by section: how many lines, or "all".
    cut: dict[str, int | str] = field(default_factory=dict)
    #: The character's template the prompt was rendered from, if any, and the placeholders
    #: it names that had no value.
    template: str | None = None
    unknown: tuple[str, ...] = ()

    def record(self) -> dict[str, object]:
        """What the decide step's history keeps of it."""
        return {
            "prompt_tokens": self.tokens,
            "prompt_budget": self.budget,
            **({"prompt_cut": self.cut} if self.cut else {}),
            **({"template": self.template} if self.template else {}),
            **({"template_unknown": list(self.unknown)} if self.unknown else {}),
        }


def prompt_budget(ctx: TurnContext) -> int:
    settings = ctx.runtime.settings
    if settings.context_tokens:
        return settings.context_tokens
    window = context_window(ctx.models.large.name)
    return max(512, window - settings.max_output_tokens - _ANSWER_MARGIN)


def compose(sections: list[Section], tail: str, budget: int, model: str) -> Composed:
    """Join the sections and the fixed `tail` within `budget` tokens, cutting sections by
    their cut policies (ascending order; among equals the later section first)."""

    def count(text: str) -> int:
        return count_tokens(model, text)

    lines = {s.name: s.text.splitlines() for s in sections}
    costs = {name: [count(line) + 1 for line in lines[name]] for name in lines}
    headers = {s.name: count(f"# {s.title}\n") + 2 for s in sections}
    fixed = count(tail)
    total = fixed + sum(headers[n] + sum(costs[n]) for n in lines if lines[n])
    cut: dict[str, int | str] = {}

    def drop(name: str, policy: Cut) -> None:
        nonlocal total
        index = -1 if policy.end == "tail" else 0
        whole = policy.end == "whole"
        dropped = 0
        while len(lines[name]) > policy.keep_lines and (whole or total > budget):
            lines[name].pop(index)
            total -= costs[name].pop(index)
            dropped += 1
        if not lines[name]:
            total -= headers[name]
            cut[name] = "all"
        elif dropped:
            cut[name] = dropped

    cuttable = [(s.cut.order, -i, s.name, s.cut) for i, s in enumerate(sections) if s.cut]
    for _, _, name, policy in sorted(cuttable):
        if total <= budget:
            break
        if lines[name]:
            drop(name, policy)
    parts = [f"# {s.title}\n" + "\n".join(lines[s.name]) for s in sections if lines[s.name]]
    return Composed("\n\n".join([*parts, tail]), total, budget, cut)


def example_exchanges(ctx: TurnContext) -> list[tuple[str, str]]:
    """The character's example dialogues as (what someone said, what it answered) pairs."""
    pairs = []
    for exchange in ctx.character.message_examples:
        for said, answer in itertools.pairwise(exchange):
            ours = answer.speaker == ctx.agent_name and said.speaker != ctx.agent_name
            if ours and said.content.text and answer.content.text:
                pairs.append((said.content.text, answer.content.text))
    return pairs


def template_values(ctx: TurnContext) -> dict[str, str]:
    """Values of ElizaOS's placeholders in this turn: the character's, the sender's, and
    each provider's text under its own name and ElizaOS's."""
    texts = ctx.state.texts
    actions = ctx.state.values.get("actions")
    return {
        **templates.character_values(ctx.character),
        **texts,
        "senderName": ctx.sender,
        "recentMessages": texts.get("recent_messages", ""),
        "actionNames": ", ".join(actions) if isinstance(actions, list) else "",
        "actionsWithDescriptions": texts.get("actions", ""),
        "entitiesInRoom": texts.get("entities", ""),
        "knowledge": texts.get("knowledge", ""),
        "roomType": ctx.room.kind.value,
    }


def compose_template(
    template: str,
    values: dict[str, str],
    sections: list[Section],
    budget: int,
    model: str,
) -> Composed:
    """A character's template, its `{{providers}}` composed within what the rest leaves."""
    fixed = templates.render(template, {**values, "providers": ""})
    providers = compose(sections, "", max(budget - count_tokens(model, fixed.text), 1), model)
    rendered = templates.render(template, {**values, "providers": providers.prompt.strip()})
    return Composed(
        rendered.text,
        count_tokens(model, rendered.text),
        budget,
        providers.cut,
        templates.DECIDE,
        rendered.unknown,
    )


def _answer_format(ask: InlineAsk | None) -> str:
    """The XML form the decide answer is asked in, with what to remember when asked."""
    fields = f"{_FIELDS}\n{LEARNED_FORMAT}" if ask else _FIELDS
    return f"Answer in this XML form and nothing else:\n<response>\n{fields}\n</response>"


def decide_request(ctx: TurnContext, ask: InlineAsk | None = None) -> tuple[ModelRequest, Composed]:
    """The decide step's request, and how its prompt was composed (recorded with the step);
    `ask`: the step also asks what to remember (inline reflection)."""
    providers = {p.name: p for p in ctx.plugins.providers}
    sections = [
        Section(name, providers[name].title or name, text, providers[name].cut)
        for name, text in ctx.state.texts.items()
    ]
    system = ctx.character.system or f"You are {ctx.agent_name}. Stay in character."
    model = ctx.models.large.name
    budget = prompt_budget(ctx) - count_tokens(model, system)
    template = ctx.character.templates.get(templates.DECIDE)
    if template:
        if ask:
            template += f"\n\n{ask.task(ctx.agent_name)}\nAdd to your answer:\n{LEARNED_FORMAT}"
        values = template_values(ctx)
        composed = compose_template(template, values, sections, budget, model)
        shorter = compose_template(template, values, sections, max(budget // 2, 1), model)
        templates.report_unknown(ctx.agent_name, templates.DECIDE, composed.unknown)
    else:
        if ctx.room.kind is RoomKind.GROUP:
            task = (
                f"Several people talk here. Decide whether {ctx.agent_name} should answer "
                f"{ctx.sender}'s latest message. If it is not for {ctx.agent_name}, or adds "
                "nothing, choose IGNORE and write no text. Otherwise choose REPLY and write "
                "the answer."
            )
        else:
            task = (
                f"Write {ctx.agent_name}'s answer to {ctx.sender}'s latest message and choose "
                "REPLY, adding other actions if they help."
            )
        if ask:
            task += f"\n{ask.task(ctx.agent_name)}"
        tail = f"# Task\n{task}\n\n{_answer_format(ask)}"
        composed = compose(sections, tail, budget, model)
        # Composed again at half the budget, for one retry if the provider says it is too long.
        shorter = compose(sections, tail, max(budget // 2, 1), model)
    request = ModelRequest(
        role=ModelRole.LARGE,
        task="decide",
        system=system,
        prompt=composed.prompt,
        hints={
            "message": ctx.message.content.text,
            "sender": ctx.sender,
            "agent": ctx.agent_name,
            "room_kind": ctx.room.kind.value,
            "facts": ctx.state.texts.get("facts", ""),
            "knowledge": ctx.state.texts.get("knowledge", ""),
            # For the offline model, which answers as the character without a language model.
            "bio": "\n".join(ctx.character.bio),
            "examples": json.dumps(example_exchanges(ctx)),
            # The messages to learn from, when asked: the offline model reads them.
            **({"learn": ask.conversation} if ask else {}),
        },
        shorter_prompt=shorter.prompt,
    )
    return request, composed
