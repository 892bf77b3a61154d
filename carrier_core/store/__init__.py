"""Postgres + pgvector storage: the only state Carrier has."""

from carrier_core.store.database import DatabaseError, RoundTrips
from carrier_core.store.store import (
    EMBEDDING_DIMENSIONS,
    EmbeddingSizeError,
    NamedMessage,
    NotFound,
    StepRecord,
    StepUsage,
    Store,
    TurnRecord,
    TurnStep,
)

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "DatabaseError",
    "EmbeddingSizeError",
    "NamedMessage",
    "NotFound",
    "RoundTrips",
    "StepRecord",
    "StepUsage",
    "Store",
    "TurnRecord",
    "TurnStep",
]
