"""Re-embed stored memories after the embedding model changes (`carrier reembed`).

Vectors of one model mean nothing to another, so every memory of the chosen agents is
embedded again, in batches. When the new model's size differs from the stored column,
the column is resized first (its HNSW index dropped and rebuilt, every old vector
cleared), which concerns all agents: they share the column.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from carrier_core.embed import EMBED_CHARS
from carrier_core.models import EmbeddingDimensionMismatch, EmbeddingModel
from carrier_core.models.ledger import embed_measured

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime

#: Called with (memories done, memories in all).
Progress = Callable[[int, int], None]


def reembed(
    runtime: Runtime,
    *,
    agent: str | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Re-embed the memories of every agent (or the one named by name or id); returns how
    many. Resizes the column when the embedding model's size differs from it."""
    store = runtime.store
    agents = [
        (record.id, record.name)
        for record in store.agents()
        if agent is None or agent in (record.handle, record.name, str(record.id))
    ]
    if agent is not None and not agents:
        raise LookupError(f"no agent named {agent!r}")
    models: dict[uuid.UUID, EmbeddingModel] = {
        agent_id: runtime.models_for(store.character(agent_id), check_dimensions=False).embedding
        for agent_id, _ in agents
    }
    sizes = {m.dimensions for m in models.values()}
    if len(sizes) > 1:
        raise EmbeddingDimensionMismatch(
            "the agents' embedding models differ in size ("
            + ", ".join(str(s) for s in sorted(sizes))
            + "); they share one vector column, so use one size"
        )
    if sizes:
        size = sizes.pop()
        if size != store.embedding_dimensions:
            if agent is not None and len(store.agents()) > len(agents):
                raise EmbeddingDimensionMismatch(
                    f"the column would change from {store.embedding_dimensions} to {size}"
                    " dimensions, which clears every agent's embeddings: run without --agent"
                )
            store.resize_embeddings(size)
    size_per_call = batch_size or runtime.settings.embed_batch_size
    total = sum(sum(store.count_memories(agent_id).values()) for agent_id, _ in agents)
    done = 0
    if progress:
        progress(0, total)
    for agent_id, _ in agents:
        model = models[agent_id]
        after = 0
        while True:
            batch = store.memories_after(agent_id, after, size_per_call)
            if not batch:
                break
            texts = [text[:EMBED_CHARS] for _, _, text in batch]
            embeddings, calls = embed_measured(
                runtime.store, agent_id, model, texts, step="reembed"
            )
            store.set_embeddings(
                [
                    (memory_id, v)
                    for (memory_id, _, _), v in zip(batch, embeddings.vectors, strict=True)
                ],
                calls,
            )
            after = batch[-1][1]
            done += len(batch)
            if progress:
                progress(done, total)
    return done
