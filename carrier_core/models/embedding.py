"""Deterministic local embeddings: no model weights, no network, no key.

Words and character trigrams are hashed into 384 signed buckets and the
vector is L2-normalised. Texts sharing words or word pieces land near each
other, which is enough for recall to work offline and in tests; it is not a
semantic model, and a real embedding model replaces it through `ModelSet`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from hashlib import blake2b

from carrier_core.models.base import Embeddings, Usage, estimate_tokens

_WORD = re.compile(r"\w+", re.UNICODE)
# Words too common to say anything about what a text is about.
_STOP_WORDS = (
    "a an and are as at be but by do does for from had has have i in is it its me my of on "
    "or so that the their them they this to was we what which who will with you your"
)
_STOP = frozenset(_STOP_WORDS.split())


def _features(text: str) -> list[tuple[str, float]]:
    features: list[tuple[str, float]] = []
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        features.append(("w:" + word, 1.0))
        padded = f"#{word}#"
        features.extend(("t:" + padded[i : i + 3], 0.35) for i in range(len(padded) - 2))
    return features


class HashEmbedding:
    """The offline embedding model."""

    name = "carrier-offline-hash-384"
    dimensions = 384
    offline = True

    def embed_one(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for feature, weight in _features(text):
            digest = int.from_bytes(blake2b(feature.encode(), digest_size=8).digest(), "little")
            sign = 1.0 if digest & 1 else -1.0
            vector[(digest >> 1) % self.dimensions] += sign * weight
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            # A text with no content words still needs a unit vector: cosine of zero is undefined.
            vector[0] = 1.0
            return vector
        return [x / norm for x in vector]

    def embed(self, texts: Sequence[str]) -> Embeddings:
        return Embeddings(
            vectors=[self.embed_one(text) for text in texts],
            usage=Usage(input_tokens=sum(estimate_tokens(t) for t in texts)),
            model=self.name,
        )
