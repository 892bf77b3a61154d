"""One interface for every language and embedding model Carrier talks to.

A step asks for a *role* (small, large) rather than a model, so a deployment can
map roles to providers without touching the turn code. Every call returns
token usage, which the turn records with the step that made it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class ModelRole(StrEnum):
    #: Cheap, frequent calls: should-respond checks, evaluators.
    SMALL = "small"
    #: The decide step.
    LARGE = "large"


class ModelError(RuntimeError):
    """A model call that failed; the turn records the message and goes on or fails cleanly."""


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class ModelRequest:
    """A prompt, plus the inputs it was built from.

    Real models read `system` and `prompt`. `hints` repeats the prompt's key inputs
    by name (the latest message, who sent it, the facts shown) for models that
    cannot read prose: the offline model and test doubles.
    """

    role: ModelRole
    task: str
    system: str
    prompt: str
    hints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Generation:
    text: str
    usage: Usage
    model: str


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    usage: Usage
    model: str


@runtime_checkable
class TextModel(Protocol):
    name: str

    def generate(self, request: ModelRequest) -> Generation: ...


@runtime_checkable
class EmbeddingModel(Protocol):
    name: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> Embeddings: ...


@dataclass(frozen=True)
class ModelSet:
    """The models an agent uses, by role."""

    small: TextModel
    large: TextModel
    embedding: EmbeddingModel

    def text(self, role: ModelRole) -> TextModel:
        return self.large if role is ModelRole.LARGE else self.small

    @property
    def offline(self) -> bool:
        return all(getattr(m, "offline", False) for m in (self.small, self.large, self.embedding))


def estimate_tokens(text: str) -> int:
    """A provider-neutral token estimate (about four characters a token)."""
    return max(1, len(text) // 4) if text else 0
