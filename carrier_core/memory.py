"""Memories: everything an agent remembers, one row each in the `memories` table.

A message, a fact learned by reflection, a knowledge document and the fragments
it is cut into are all memories, told apart by `kind`, so that one semantic
search through pgvector covers them all.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class MemoryKind(StrEnum):
    MESSAGE = "message"
    FACT = "fact"
    DOCUMENT = "document"
    FRAGMENT = "fragment"


class Content(BaseModel):
    """What a memory says. Extra fields are kept so plugins can carry their own data."""

    model_config = ConfigDict(extra="allow")

    text: str = ""
    thought: str | None = None
    actions: list[str] = Field(default_factory=list)
    source: str | None = None
    in_reply_to: uuid.UUID | None = None
    attachments: list[dict[str, Any]] = Field(default_factory=list)


class Memory(BaseModel):
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    agent_id: uuid.UUID
    entity_id: uuid.UUID
    room_id: uuid.UUID | None = None
    world_id: uuid.UUID | None = None
    kind: MemoryKind = MemoryKind.MESSAGE
    content: Content
    embedding: list[float] | None = None
    created_at: datetime | None = None
    #: Position in store order, given by the database.
    seq: int | None = None
    #: Makes a store idempotent: a client's message id, or a hash of a knowledge text.
    dedupe_key: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ScoredMemory(BaseModel):
    """A memory found by semantic search, with its cosine similarity to the query."""

    memory: Memory
    similarity: float
