"""Cutting a document into fragments: about `size` tokens each, overlapping by `overlap`.

A fragment is what the KNOWLEDGE provider recalls and shows, so it should hold a thought
whole: pieces are cut at paragraph, then sentence boundaries, and only a sentence longer
than a fragment is cut between words (a "word" longer than that, between characters).
Each fragment begins with the last sentences of the one before (up to `overlap` tokens), so
a fact that straddles a cut is still found whole in one of them.

Tokens are counted the way the embedding model counts them (`carrier_core.models.tokens`):
fragments must fit what it takes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

#: Counts the tokens of a text.
Counter = Callable[[str], int]

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class _Piece:
    text: str
    tokens: int
    #: It starts a paragraph: joined to the one before by a blank line, not a space.
    opens_paragraph: bool


def chunk_text(text: str, *, count: Counter, size: int, overlap: int) -> list[str]:
    """The fragments of `text`, in order; none for a text with nothing but white space."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap < size, got size {size}, overlap {overlap}")
    chunks: list[str] = []
    current: list[_Piece] = []
    tokens = 0
    for piece in _pieces(text, count, size):
        if current and tokens + piece.tokens > size:
            chunks.append(_join(current))
            # Carry the tail of this fragment into the next, as long as it fits beside the piece.
            carried: list[_Piece] = []
            kept = 0
            for previous in reversed(current):
                if kept + previous.tokens > min(overlap, size - piece.tokens):
                    break
                carried.insert(0, previous)
                kept += previous.tokens
            current, tokens = carried, kept
        current.append(piece)
        tokens += piece.tokens
    if current:
        chunks.append(_join(current))
    return chunks


def _join(pieces: list[_Piece]) -> str:
    text = pieces[0].text
    for piece in pieces[1:]:
        text += ("\n\n" if piece.opens_paragraph else " ") + piece.text
    return text


def _pieces(text: str, count: Counter, size: int) -> list[_Piece]:
    """Sentences (or lines of text without sentence ends), none longer than `size` tokens."""
    pieces: list[_Piece] = []
    for paragraph in _PARAGRAPH.split(text):
        opens = True
        for sentence in _SENTENCE.split(paragraph.strip()):
            sentence = sentence.strip()
            if not sentence:
                continue
            for part in _fit(sentence, count, size):
                pieces.append(_Piece(part, count(part), opens))
                opens = False
    return pieces


def _fit(text: str, count: Counter, size: int) -> list[str]:
    """`text` whole if it fits in `size` tokens, else cut between words (and a word too long
    on its own, between characters)."""
    if count(text) <= size:
        return [text]
    parts: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if count(candidate) <= size:
            current = candidate
            continue
        if current:
            parts.append(current)
        while count(word) > size:
            cut = _longest_prefix(word, count, size)
            parts.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        parts.append(current)
    return parts


def _longest_prefix(word: str, count: Counter, size: int) -> int:
    """The length of the longest prefix of `word` within `size` tokens (at least 1)."""
    low, high = 1, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if count(word[:middle]) <= size:
            low = middle
        else:
            high = middle - 1
    return low
