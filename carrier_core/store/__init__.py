"""Postgres + pgvector storage: the only state Carrier has."""

from carrier_core.store.database import DatabaseError, RoundTrips
from carrier_core.store.store import (
    EMBEDDING_DIMENSIONS,
    EmbeddingSizeError,
    ModelCall,
    NamedMessage,
    NotFound,
    StepRecord,
    StepUsage,
    Store,
    TurnRecord,
    TurnStep,
    UsageRow,
)

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "DatabaseError",
    "EmbeddingSizeError",
    "ModelCall",
    "NamedMessage",
    "NotFound",
    "RoundTrips",
    "StepRecord",
    "StepUsage",
    "Store",
    "TurnRecord",
    "TurnStep",
    "UsageRow",
]
