"""What Postgres can store: text with neither NUL characters nor unpaired UTF-16 surrogates.

JSON allows both (`"\\u0000"`, `"\\ud800"`), so any client input may carry them; checked
at the edge, they are a 422 naming the field instead of a database error. What Carrier
stores without a client to answer (a model's output, a plugin's result, an exception's
message) is made storable instead (`storable_text`, `storable_json`): the store writes every
text and JSON value through them, as refusing it would lose the turn.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

if TYPE_CHECKING:
    from pydantic import AfterValidator


def storable(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (it has an unpaired surrogate)") from None
    return text


if TYPE_CHECKING:
    #: A string field that Postgres text and jsonb can hold.
    StorableText = Annotated[str, AfterValidator(storable)]


def __getattr__(name: str) -> Any:
    """`StorableText`, made on first use: it needs pydantic, which the store (that writes
    through `storable_text`) must not import for the migrate function's cold start."""
    if name != "StorableText":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pydantic import AfterValidator

    made = globals()["StorableText"] = Annotated[str, AfterValidator(storable)]
    return made


#: How deep client JSON may nest: far deeper than any real document, and well within
#: what the stack and the serializer that stores it (pydantic's gives up near 255
#: levels) can take, so a deeper one is a 422 naming the field rather than a 500.
MAX_JSON_DEPTH = 64


def check_storable_json(value: Any, depth: int = 0) -> None:
    """Raise ValueError if any string (key or value) in a JSON document cannot be stored
    or the document nests more than `MAX_JSON_DEPTH` levels deep, TypeError if the
    document is not JSON at all."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, str):
        storable(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"keys must be strings, not {type(key).__name__}")
            storable(key)
            check_storable_json(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            check_storable_json(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is no JSON number (JSON has no NaN or Infinity)")
    elif not (value is None or isinstance(value, bool | int | float)):
        raise TypeError(f"{type(value).__name__} is not JSON")


#: A UTF-16 surrogate: in a Python string always unpaired (JSON's escaped pairs decode to
#: one character), and not encodable as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    """The text with NUL characters and unpaired surrogates replaced by U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _storable_value(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # as JavaScript's JSON.stringify writes NaN and the infinities
    if isinstance(value, dict):
        return {
            storable_text(k) if isinstance(k, str) else k: _storable_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_storable_value(item) for item in value]
    return value


def storable_json(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """`value` as JSON that Postgres's jsonb takes, UTF-8 encoded: a string's NUL
    characters and unpaired surrogates (which jsonb refuses, even escaped) replaced by
    U+FFFD, NaN and the infinities (which JSON cannot write) by null. The document is
    walked only when its first encoding shows one."""
    text: str | None
    try:
        text = json.dumps(value, ensure_ascii=False, default=default, allow_nan=False)
    except ValueError:  # NaN or an infinity somewhere
        text = None
    if text is not None and "\\u0000" not in text:
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass
    cleaned = _storable_value(value)
    return json.dumps(cleaned, ensure_ascii=False, default=default, allow_nan=False).encode()
