"""Language and embedding models behind one interface, and the offline defaults."""

from carrier_core.models.base import (
    EmbeddingDimensionMismatch,
    EmbeddingModel,
    Embeddings,
    Generation,
    ModelAuthError,
    ModelBadRequest,
    ModelBudgetExceeded,
    ModelContextTooLong,
    ModelError,
    ModelImage,
    ModelRateLimited,
    ModelRequest,
    ModelRole,
    ModelSet,
    ModelUnavailable,
    TextModel,
    Usage,
    estimate_tokens,
)
from carrier_core.models.embedding import HashEmbedding
from carrier_core.models.offline import OfflineModel
from carrier_core.models.scripted import ScriptedModel


def offline_models() -> ModelSet:
    """The default: no key, no network, deterministic."""
    model = OfflineModel()
    return ModelSet(small=model, large=model, embedding=HashEmbedding())


__all__ = [
    "EmbeddingDimensionMismatch",
    "EmbeddingModel",
    "Embeddings",
    "Generation",
    "HashEmbedding",
    "ModelAuthError",
    "ModelBadRequest",
    "ModelBudgetExceeded",
    "ModelContextTooLong",
    "ModelError",
    "ModelImage",
    "ModelRateLimited",
    "ModelRequest",
    "ModelRole",
    "ModelSet",
    "ModelUnavailable",
    "OfflineModel",
    "ScriptedModel",
    "TextModel",
    "Usage",
    "estimate_tokens",
    "offline_models",
]
