"""Embed: give memories that have none an embedding, in batches, for semantic recall."""

from __future__ import annotations

import uuid

from carrier_core.knowledge import EMBED_CHARS
from carrier_core.runtime import Runtime


def embed_pending(runtime: Runtime, agent_id: uuid.UUID, *, max_batches: int = 10) -> int:
    """Embed up to `max_batches` batches of the agent's unembedded memories; returns how many."""
    embedder = runtime.models_for(runtime.store.character(agent_id)).embedding
    size = runtime.settings.embed_batch_size
    done = 0
    for _ in range(max_batches):
        pending = runtime.store.unembedded(agent_id, size)
        if not pending:
            break
        vectors = embedder.embed([m.content.text[:EMBED_CHARS] for m in pending]).vectors
        runtime.store.set_embeddings([(m.id, v) for m, v in zip(pending, vectors, strict=True)])
        done += len(pending)
        if len(pending) < size:
            break
    return done
