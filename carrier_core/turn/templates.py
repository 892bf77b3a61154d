"""A character's own prompts: ElizaOS `templates`, rendered with the turn's state.

An ElizaOS character may replace the prompt of a step with one of its own, under the
step's template name. Carrier has a step for three of them:

- `messageHandlerTemplate`: the decide step's prompt (what to say, which actions);
- `shouldRespondTemplate`: in a group room, a small-model call before deciding, whose
  `<action>` (RESPOND, IGNORE or STOP) settles whether the agent answers at all;
- `reflectionTemplate`: the reflection evaluator's prompt.

Placeholders are ElizaOS's Handlebars names, written `{{name}}` (or `{{{name}}}`, the same
here: prompts are not HTML). A placeholder Carrier has no value for renders empty and is
reported: in the step's record (`template_unknown`) and once per process in the log, so a
misspelt name does not go unnoticed.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from carrier_core.model_output import parse_structured

if TYPE_CHECKING:
    from carrier_core.character import Character

log = logging.getLogger(__name__)

DECIDE = "messageHandlerTemplate"
SHOULD_RESPOND = "shouldRespondTemplate"
REFLECT = "reflectionTemplate"

_PLACEHOLDER = re.compile(r"\{\{\{?\s*([A-Za-z_][\w.]*)\s*\}?\}\}")

_reported: set[tuple[str, str, str]] = set()
_reported_lock = threading.Lock()


@dataclass(frozen=True)
class Rendered:
    text: str
    #: Placeholders the template names that had no value, in order of appearance.
    unknown: tuple[str, ...] = ()


def render(template: str, values: Mapping[str, str]) -> Rendered:
    """The template with each `{{name}}` replaced by its value ("" for unknown names)."""
    unknown: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        if name not in unknown:
            unknown.append(name)
        return ""

    return Rendered(_PLACEHOLDER.sub(value, template), tuple(unknown))


def report_unknown(agent: str, template: str, unknown: tuple[str, ...]) -> None:
    """Log each unknown placeholder of an agent's template once per process."""
    with _reported_lock:
        new = [name for name in unknown if (agent, template, name) not in _reported]
        _reported.update((agent, template, name) for name in new)
    if new:
        log.warning(
            "agent %s: %s names placeholders Carrier has no value for (rendered empty): %s",
            agent,
            template,
            ", ".join(new),
        )


def character_values(character: Character) -> dict[str, str]:
    """The placeholders that describe the character itself."""
    style = character.style
    examples = []
    for exchange in character.message_examples[:5]:
        lines = [f"{m.speaker}: {m.content.text}" for m in exchange if m.content.text]
        if lines:
            examples.append("\n".join(lines))
    return {
        "agentName": character.name,
        "bio": "\n".join(character.bio),
        "lore": "\n".join(character.lore),
        "system": character.system or "",
        "adjectives": ", ".join(character.adjectives),
        "topics": ", ".join(character.topics),
        "messageDirections": "\n".join([*style.all, *style.chat]),
        "postDirections": "\n".join([*style.all, *style.post]),
        "characterMessageExamples": "\n\n".join(examples),
    }


@dataclass(frozen=True)
class ShouldRespond:
    """What a `shouldRespondTemplate` call answered."""

    respond: bool
    #: RESPOND, IGNORE or STOP, as the model wrote it (upper case).
    action: str
    reasoning: str = ""


def read_should_respond(raw: str) -> ShouldRespond:
    """Read the answer ElizaOS's template asks for: `<action>RESPOND|IGNORE|STOP</action>`
    with `<reasoning>`; anything but IGNORE or STOP answers (a message is never dropped
    on a misread). Raises `UnparsableOutput` when no field is found."""
    fields = parse_structured(raw, ("name", "reasoning", "action"), what="shouldRespond")
    action = str(fields.get("action") or "RESPOND").strip().upper()
    return ShouldRespond(
        action not in ("IGNORE", "STOP"), action, str(fields.get("reasoning") or "")
    )
