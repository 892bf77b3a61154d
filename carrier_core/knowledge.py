"""Character knowledge: documents cut into fragments small enough to recall one at a time."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING

from carrier_core.memory import Content, Memory, MemoryKind
from carrier_core.turn.embed import embed_pending

if TYPE_CHECKING:
    from carrier_core.character import Character
    from carrier_core.runtime import Runtime

FRAGMENT_CHARS = 800

log = logging.getLogger(__name__)


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


def store_knowledge(runtime: Runtime, character: Character) -> None:
    """Store the character's knowledge texts once each and embed what is new.

    Items that point at files (`{"path": ...}`, `{"directory": ...}`) are not read
    yet; each is logged as skipped.
    """
    agent_id = character.agent_id
    for item in character.knowledge:
        if not isinstance(item, str):
            log.warning("knowledge skipped (files are not read yet): %s", item.model_dump())
            continue
        if not item.strip():
            continue
        digest = hashlib.sha256(item.encode()).hexdigest()
        runtime.store.add_memory(
            Memory(
                agent_id=agent_id,
                entity_id=agent_id,
                kind=MemoryKind.DOCUMENT,
                content=Content(text=item, source="character"),
                dedupe_key=digest,
            )
        )
        for index, fragment in enumerate(split_fragments(item)):
            runtime.store.add_memory(
                Memory(
                    agent_id=agent_id,
                    entity_id=agent_id,
                    kind=MemoryKind.FRAGMENT,
                    content=Content(text=fragment, source="character"),
                    dedupe_key=f"{digest}:{index}",
                    metadata={"document": digest},
                )
            )
    embed_pending(runtime, agent_id, max_batches=None)
