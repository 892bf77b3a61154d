"""Embed: give memories that have none an embedding, in batches, for semantic recall.

Turns embed their own message and replies as they store them; this step
catches what is left: memories stored while an embedding model was down,
memories written by plugins, knowledge.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from carrier_core.models.ledger import embed_recorded

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime

#: Longer texts are cut before embedding: embedding models take a few thousand tokens at most.
EMBED_CHARS = 8000


def embed_pending(runtime: Runtime, agent_id: uuid.UUID, *, max_batches: int | None = 10) -> int:
    """Embed the agent's unembedded memories, oldest first, `embed_batch_size` a call and
    at most `max_batches` calls (None: until none are left); returns how many."""
    size = runtime.settings.embed_batch_size
    done = batches = 0
    embedder = None
    while max_batches is None or batches < max_batches:
        pending = runtime.store.unembedded(agent_id, size)
        if not pending:
            break
        if embedder is None:
            embedder = runtime.models_for(runtime.store.character(agent_id)).embedding
        texts = [m.content.text[:EMBED_CHARS] for m in pending]
        embeddings = embed_recorded(runtime, agent_id, embedder, texts, step="embed")
        vectors = embeddings.vectors
        runtime.store.set_embeddings([(m.id, v) for m, v in zip(pending, vectors, strict=True)])
        done += len(pending)
        batches += 1
        if len(pending) < size:
            break
    return done
