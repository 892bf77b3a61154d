"""JSON schemas of the structured tasks, for providers that answer through a tool call.

The model is made to call the task's tool; its arguments, serialised as JSON, are the
generation's text, which the same parsers that read XML or JSON answers then read.
Tasks without a schema (plain replies) are answered as text.
"""

from __future__ import annotations

from typing import Any

_STRINGS = {"type": "array", "items": {"type": "string"}}

#: What the agent learns of people: the reflection's answer, and, with inline reflection,
#: the decide answer's optional part (`carrier_core.decision.LEARNED_FIELDS`).
_LEARNED: dict[str, Any] = {
    "facts": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"claim": {"type": "string"}, "about": {"type": "string"}},
            "required": ["claim"],
        },
    },
    "relationships": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "source": {"type": "string"},
                "target": {"type": "string"},
                "tags": _STRINGS,
            },
            "required": ["source", "target"],
        },
    },
    "names": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"about": {"type": "string"}, "name": {"type": "string"}},
            "required": ["about", "name"],
        },
    },
}

TASK_TOOLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "decide": (
        "respond",
        "Give your decision: your private thought, the actions to run, and what you say"
        " (and, when asked, what to remember of people).",
        {
            "type": "object",
            "properties": {
                "thought": {"type": "string"},
                "actions": _STRINGS,
                "providers": _STRINGS,
                "text": {"type": "string"},
                **_LEARNED,
            },
            "required": ["thought", "actions", "text"],
        },
    ),
    "reflect": (
        "record_reflection",
        "Record the facts learned and the relationships seen in the conversation.",
        {
            "type": "object",
            "properties": {"thought": {"type": "string"}, **_LEARNED},
            "required": ["facts"],
        },
    ),
}


def task_tool(task: str) -> tuple[str, str, dict[str, Any]] | None:
    """(tool name, description, input schema) for a structured task, else None."""
    return TASK_TOOLS.get(task)
