"""What Postgres can store: text with neither NUL characters nor unpaired UTF-16 surrogates.

JSON allows both (`"\\u0000"`, `"\\ud800"`), so any client input may carry them; checked
at the edge, they are a 422 naming the field instead of a database error.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator


def storable(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (it has an unpaired surrogate)") from None
    return text


#: A string field that Postgres text and jsonb can hold.
StorableText = Annotated[str, AfterValidator(storable)]


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
    elif not (value is None or isinstance(value, bool | int | float)):
        raise TypeError(f"{type(value).__name__} is not JSON")
