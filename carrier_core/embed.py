"""Embed: give memories that have none an embedding, in batches, for semantic recall.

A turn embeds its message in the decide step (recall needs it) and reflection its new
facts (to find near-duplicates); its replies are embedded here, after the reply is given:
locally at the end of the turn, in the cloud from the embed queue, batched across turns.
This step also catches what was left: memories stored while an embedding model was down,
memories written by plugins, knowledge. It is where a knowledge document becomes `ready`
(its fragments all embedded) or `failed` (embedding them failed).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from carrier_core.models import ModelError
from carrier_core.models.ledger import embed_measured

if TYPE_CHECKING:
    from carrier_core.agent_models import AgentModels

#: Longer texts are cut before embedding: embedding models take a few thousand tokens at most.
EMBED_CHARS = 8000

#: Asks for an agent's unembedded memories (a new document's fragments) to be embedded:
#: at once (`embed_pending`), or in the cloud through the embed queue, so that no API request
#: waits for an embedding model.
RequestEmbedding = Callable[[uuid.UUID], None]


def embed_pending(
    runtime: AgentModels,
    agent_id: uuid.UUID,
    *,
    max_batches: int | None = 10,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Embed the agent's unembedded memories, oldest first, `embed_batch_size` a call and
    at most `max_batches` calls (None: until none are left); returns how many. `progress`
    is told the number embedded so far after each call.

    Then, if fragments were embedded (or nothing waited), the agent's documents whose
    fragments are all embedded are marked ready; when the embedding model fails, its waiting
    documents are marked failed with the reason (and the error is raised): the next run
    tries them again."""
    size = runtime.settings.embed_batch_size
    done = batches = 0
    embedder = None
    # A knowledge document becomes ready once its fragments are all embedded: looked at
    # when some document waits (read with the work) and when nothing waited (a run that
    # stopped after embedding a document's last fragments left it waiting). A turn's
    # replies alone need no look: one statement fewer after every turn.
    documents = False
    try:
        while max_batches is None or batches < max_batches:
            work = runtime.store.embedding_work(agent_id, size, with_character=embedder is None)
            pending = work.memories
            if not pending:
                documents |= batches == 0
                break
            if embedder is None:
                assert work.character is not None  # read with the first batch
                embedder = runtime.models_for(work.character).embedding
            documents |= work.documents_waiting
            texts = [m.content.text[:EMBED_CHARS] for m in pending]
            embeddings, calls = embed_measured(
                runtime.store, agent_id, embedder, texts, step="embed"
            )
            vectors = embeddings.vectors
            runtime.store.set_embeddings(
                [(m.id, v) for m, v in zip(pending, vectors, strict=True)], calls
            )
            done += len(pending)
            batches += 1
            if progress is not None:
                progress(done)
            if len(pending) < size:
                break
    except ModelError as exc:
        runtime.store.mark_documents_failed(agent_id, f"embedding failed: {exc}")
        raise
    if documents:
        runtime.store.mark_documents_embedded(agent_id)
    return done
