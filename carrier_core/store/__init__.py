"""Postgres + pgvector storage: the only state Carrier has."""

from carrier_core.store.agents import AgentConflict, AgentRecord, RoomRecord
from carrier_core.store.base import EMBEDDING_DIMENSIONS, EmbeddingSizeError, NotFound, where
from carrier_core.store.database import DatabaseError, DatabaseUnavailable, RoundTrips
from carrier_core.store.memories import NamedMessage, Search
from carrier_core.store.store import Store
from carrier_core.store.turns import (
    UNFINISHED,
    UNFINISHED_SQL,
    StepRecord,
    StepUsage,
    TurnEnd,
    TurnRecord,
    TurnStep,
)
from carrier_core.store.usage import ModelCall, UsageRow

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "UNFINISHED",
    "UNFINISHED_SQL",
    "AgentConflict",
    "AgentRecord",
    "DatabaseError",
    "DatabaseUnavailable",
    "EmbeddingSizeError",
    "ModelCall",
    "NamedMessage",
    "NotFound",
    "RoomRecord",
    "RoundTrips",
    "Search",
    "StepRecord",
    "StepUsage",
    "Store",
    "TurnEnd",
    "TurnRecord",
    "TurnStep",
    "UsageRow",
    "where",
]
