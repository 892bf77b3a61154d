"""Keyset pagination: each page names the cursor of the next, so pages never skip or repeat
rows when new ones arrive while a client reads."""

from __future__ import annotations

import uuid
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from carrier_core.api.errors import ApiError

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=100, description="items per page")]
Cursor = Annotated[
    str | None, Query(max_length=100, description="`next_cursor` of the previous page")
]


class Page(BaseModel, Generic[T]):
    data: list[T]
    #: Pass as `cursor` for the next page; null on the last page.
    next_cursor: str | None


def seq_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    # isascii: "²".isdigit() is true, and int("²") fails.
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
        raise ApiError(422, "invalid_cursor", f"cursor {cursor!r} is not one this API gave")
    return int(cursor)


def id_cursor(cursor: str | None) -> uuid.UUID | None:
    if cursor is None:
        return None
    try:
        return uuid.UUID(cursor)
    except ValueError:
        raise ApiError(
            422, "invalid_cursor", f"cursor {cursor!r} is not one this API gave"
        ) from None
