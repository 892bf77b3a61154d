"""Character knowledge: documents cut into fragments small enough to recall one at a time."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from carrier_core.memory import Content, Memory, MemoryKind

if TYPE_CHECKING:
    from carrier_core.character import Character
    from carrier_core.runtime import Runtime

FRAGMENT_CHARS = 800
#: Longer texts are cut before embedding: embedding models take a few thousand tokens at most.
EMBED_CHARS = 8000


def split_fragments(text: str, limit: int = FRAGMENT_CHARS) -> list[str]:
    """Cut at paragraph, then sentence boundaries, keeping each piece under `limit`."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        sentences = re.split(r"(?<=[.!?])\s+", paragraph.strip())
        current = ""
        for sentence in sentences:
            while len(sentence) > limit:
                pieces.append(sentence[:limit])
                sentence = sentence[limit:]
            if current and len(current) + 1 + len(sentence) > limit:
                pieces.append(current)
                current = sentence
            else:
                current = f"{current} {sentence}".strip()
        if current:
            pieces.append(current)
    return pieces


def store_knowledge(runtime: Runtime, character: Character) -> int:
    """Store the character's knowledge texts once each, embedding what is new; returns how
    many memories were added.

    Items that point at files (`{"path": ...}`, `{"directory": ...}`) are not read yet.
    """
    agent_id = character.agent_id
    created: list[Memory] = []
    for item in character.knowledge:
        if not isinstance(item, str) or not item.strip():
            continue
        digest = hashlib.sha256(item.encode()).hexdigest()
        document, is_new = runtime.store.add_memory(
            Memory(
                agent_id=agent_id,
                entity_id=agent_id,
                kind=MemoryKind.DOCUMENT,
                content=Content(text=item, source="character"),
                dedupe_key=digest,
            )
        )
        if is_new:
            created.append(document)
        for index, fragment in enumerate(split_fragments(item)):
            memory, is_new = runtime.store.add_memory(
                Memory(
                    agent_id=agent_id,
                    entity_id=agent_id,
                    kind=MemoryKind.FRAGMENT,
                    content=Content(text=fragment, source="character"),
                    dedupe_key=f"{digest}:{index}",
                    metadata={"document": digest},
                )
            )
            if is_new:
                created.append(memory)
    if created:
        embedder = runtime.models_for(character).embedding
        vectors = embedder.embed([m.content.text[:EMBED_CHARS] for m in created]).vectors
        runtime.store.set_embeddings([(m.id, v) for m, v in zip(created, vectors, strict=True)])
    return len(created)
