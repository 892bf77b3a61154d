"""The decide step's answer: what the agent thinks, says and does this step."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from pydantic import BaseModel, Field

from carrier_core.model_output import as_list, parse_structured

DECISION_FIELDS = ("thought", "actions", "providers", "text")
#: What an answer tells the agent to remember, in the shapes the reflection evaluator's
#: prompt asks for: the decide answer carries them with `reflection: inline`.
LEARNED_FIELDS = ("facts", "relationships", "names")


class Decision(BaseModel):
    thought: str = ""
    actions: list[str] = Field(default_factory=list)
    text: str = ""
    #: Providers the model asked to see; recorded, and available to a further step.
    providers: list[str] = Field(default_factory=list)
    #: With inline reflection, the `LEARNED_FIELDS` the model answered: JSON lists where
    #: they decode, else the text as written (checked when stored, so a malformed list
    #: never costs the reply); {} when it was asked and answered none. None: not asked.
    reflection: dict[str, Any] | None = None


def parse_decision(raw: str) -> Decision:
    """Read a decision written as XML tags or JSON; missing fields take defaults.

    Raises `UnparsableOutput` when the output has no recognisable field at all.
    """
    fields = parse_structured(raw, DECISION_FIELDS + LEARNED_FIELDS, what="decision")
    learned = {name: _decoded(fields[name]) for name in LEARNED_FIELDS if name in fields}
    return Decision(
        thought=str(fields.get("thought") or ""),
        actions=[name.upper() for name in as_list(fields.get("actions"))],
        text=str(fields.get("text") or ""),
        providers=as_list(fields.get("providers")),
        reflection=learned or None,
    )


def _decoded(value: Any) -> Any:
    """An XML tag's JSON text as the value it writes; anything else as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):  # nested too deep is text too
            return value
    return value


def render_decision(decision: Decision) -> str:
    """The XML form the decide prompt asks for (used by the offline model); what it
    learned, if anything, as a JSON list in each of its tags."""
    learned = "".join(
        f"<{name}>{escape(json.dumps(value), quote=False)}</{name}>\n"
        for name, value in (decision.reflection or {}).items()
    )
    return (
        "<response>\n"
        f"<thought>{escape(decision.thought, quote=False)}</thought>\n"
        f"<actions>{', '.join(decision.actions)}</actions>\n"
        f"<providers>{', '.join(decision.providers)}</providers>\n"
        f"<text>{escape(decision.text, quote=False)}</text>\n"
        f"{learned}"
        "</response>"
    )
