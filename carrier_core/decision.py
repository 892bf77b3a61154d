"""The decide step's answer: what the agent thinks, says and does this step."""

from __future__ import annotations

from pydantic import BaseModel, Field

from carrier_core.model_output import as_list, parse_structured

DECISION_FIELDS = ("thought", "actions", "providers", "text")


class Decision(BaseModel):
    thought: str = ""
    actions: list[str] = Field(default_factory=list)
    text: str = ""
    #: Providers the model asked to see; recorded, and available to a further step.
    providers: list[str] = Field(default_factory=list)


def parse_decision(raw: str) -> Decision:
    """Read a decision written as XML tags or JSON; missing fields take defaults.

    Raises `UnparsableOutput` when the output has no recognisable field at all.
    """
    fields = parse_structured(raw, DECISION_FIELDS, what="decision")
    return Decision(
        thought=str(fields.get("thought") or ""),
        actions=[name.upper() for name in as_list(fields.get("actions"))],
        text=str(fields.get("text") or ""),
        providers=as_list(fields.get("providers")),
    )


def render_decision(decision: Decision) -> str:
    """The XML form the decide prompt asks for (used by the offline model)."""
    from html import escape

    return (
        "<response>\n"
        f"<thought>{escape(decision.thought, quote=False)}</thought>\n"
        f"<actions>{', '.join(decision.actions)}</actions>\n"
        f"<providers>{', '.join(decision.providers)}</providers>\n"
        f"<text>{escape(decision.text, quote=False)}</text>\n"
        "</response>"
    )
