"""Reading structured answers out of what a language model actually wrote.

Models wrap answers in code fences, add a sentence before the XML, forget a
closing tag or a field, or answer in JSON when asked for XML. We accept all of
that and give up only when no field can be found at all.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any, Literal

_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)


class UnparsableOutput(ValueError):
    """Model output with no recognisable structure; the message quotes its start."""

    def __init__(self, what: str, raw: str):
        excerpt = raw.strip().replace("\n", " ")[:120]
        super().__init__(f"{what}: no JSON object or XML fields found in model output {excerpt!r}")
        self.raw = raw


def _unfenced(raw: str) -> str:
    fenced = _FENCE.findall(raw)
    return "\n".join(fenced) if fenced else raw


def _json_object(text: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """The first JSON object in the text that decodes and has one of the fields, if any."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):  # nested too deep is unreadable too
            continue
        if isinstance(value, dict) and any(f in value for f in fields):
            return value
    return None


def _xml_fields(text: str, fields: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in fields:
        # A missing closing tag ends the field at the next tag or the end of the text.
        match = re.search(
            rf"<{name}>(.*?)(?:</{name}>|(?=<\w+>)|(?=</response>)|\Z)", text, re.DOTALL
        )
        if match:
            found[name] = html.unescape(match.group(1).strip())
    return found


def parse_structured(
    raw: str, fields: tuple[str, ...], *, what: str, prefer: Literal["xml", "json"] = "xml"
) -> dict[str, Any]:
    """Fields of a JSON object or XML-tagged answer; raises `UnparsableOutput` if none.

    The form asked for is tried first, so that a JSON snippet quoted inside an XML
    answer's text (or tags quoted inside JSON) is read as text, not as the answer.
    """
    text = _unfenced(raw)
    readers = [lambda: _xml_fields(text, fields) or None, lambda: _json_object(text, fields)]
    for read in readers if prefer == "xml" else reversed(readers):
        found = read()
        if found:
            return found
    raise UnparsableOutput(what, raw)


def as_list(value: Any) -> list[str]:
    """A field that should be a list of names, whichever way the model wrote it."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in re.split(r"[,\n]", value) if part.strip()]
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    return [str(value)]
