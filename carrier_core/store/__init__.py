"""Postgres + pgvector storage: the only state Carrier has."""

from carrier_core.store.database import DatabaseError, DatabaseUnavailable, RoundTrips
from carrier_core.store.store import (
    EMBEDDING_DIMENSIONS,
    AgentConflict,
    AgentRecord,
    EmbeddingSizeError,
    ModelCall,
    NamedMessage,
    NotFound,
    RoomRecord,
    StepRecord,
    StepUsage,
    Store,
    TurnRecord,
    TurnStep,
    UsageRow,
    where,
)

__all__ = [
    "EMBEDDING_DIMENSIONS",
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
    "StepRecord",
    "StepUsage",
    "Store",
    "TurnRecord",
    "TurnStep",
    "UsageRow",
    "where",
]
