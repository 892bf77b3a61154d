"""One interface for every language and embedding model Carrier talks to.

A step asks for a *role* (small, large) rather than a model, so a deployment can
map roles to providers without touching the turn code. Every call returns
token usage, which the turn records with the step that made it.
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol, runtime_checkable


class ModelRole(StrEnum):
    #: Cheap, frequent calls: should-respond checks, evaluators.
    SMALL = "small"
    #: The decide step.
    LARGE = "large"


class ModelError(RuntimeError):
    """A model call that failed; the turn records the message and goes on or fails cleanly.

    The subclasses' names are stable: raised out of a Lambda, a class name becomes the
    Step Functions error name that retry and catch rules match.
    """

    #: Worth trying again later, or on another provider.
    retryable = False


class ModelRateLimited(ModelError):
    """The provider said too many requests (429) and its own retries ran out."""

    retryable = True


class ModelUnavailable(ModelError):
    """The provider could not be reached, timed out, or failed (5xx, malformed answer)."""

    retryable = True


class ModelAuthError(ModelError):
    """The key is missing, wrong or not allowed (401/403). Never retried."""


class ModelBadRequest(ModelError):
    """The provider refused the request as malformed (400, 404, 422). Not retried."""


class ModelContextTooLong(ModelBadRequest):
    """The prompt does not fit the model's context window; the caller may trim and retry once."""


class ModelBudgetExceeded(ModelError):
    """The agent's daily model budget is spent; raised before the call is made."""


class EmbeddingDimensionMismatch(ModelError):
    """An embedding model whose vectors do not fit the stored vector column."""


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


#: The image types every vision API Carrier speaks takes (OpenAI, Anthropic, Bedrock).
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


@dataclass(frozen=True)
class ModelImage:
    """An image shown to the model with the prompt: a URL the provider fetches itself, or
    the image's bytes. Carrier never fetches a URL for the model: an image given inline
    (a data: URL, base64) is sent as bytes, one given by URL is passed on as that URL.
    """

    #: An http(s) URL, for providers that fetch images themselves.
    url: str | None = None
    data: bytes | None = None
    #: The image's type (image/png, ...): required with `data`, optional with a URL.
    media_type: str = ""

    def __post_init__(self) -> None:
        if (self.url is None) == (self.data is None):
            raise ValueError("a ModelImage is a url or data (bytes), exactly one of them")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"a ModelImage url must be http(s), not {self.url[:40]!r}")
        if self.data is not None and not self.media_type.startswith("image/"):
            raise ValueError(f"image bytes need an image/* media type, not {self.media_type!r}")

    def base64(self) -> str:
        """The bytes as base64 text (for an image given by URL: an error)."""
        if self.data is None:
            raise ValueError("an image given by URL has no bytes to encode")
        return b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        """The image as a URL: its own, or a data: URL of its bytes."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{self.base64()}"


@dataclass(frozen=True)
class ModelRequest:
    """A prompt, plus the inputs it was built from.

    Real models read `system`, `prompt` and `images`. `hints` repeats the prompt's key
    inputs by name (the latest message, who sent it, the facts shown) for models that
    cannot read prose: the offline model and test doubles.
    """

    role: ModelRole
    task: str
    system: str
    prompt: str
    hints: Mapping[str, str] = field(default_factory=dict)
    #: Images shown with the prompt, for vision-capable models.
    images: tuple[ModelImage, ...] = ()
    #: The prompt cut further, to retry with once when the model says it is too long.
    #: Unset: the latest half of the prompt is kept.
    shorter_prompt: str | None = None

    def shorter(self) -> ModelRequest | None:
        """This request with a shorter prompt, or None when it cannot be cut."""
        if self.shorter_prompt is not None and len(self.shorter_prompt) < len(self.prompt):
            return replace(self, prompt=self.shorter_prompt, shorter_prompt=None)
        if len(self.prompt) < 200:
            return None
        cut = self.prompt[len(self.prompt) // 2 :]
        cut = cut[cut.find("\n") + 1 :] if "\n" in cut else cut
        return replace(self, prompt="(earlier context cut)\n" + cut, shorter_prompt=None)


@dataclass(frozen=True)
class Generation:
    text: str
    usage: Usage
    model: str
    #: Which provider answered (openai, anthropic, bedrock, ...); empty for test doubles.
    provider: str = ""
    #: Providers that failed before this one answered, with their reasons.
    fallbacks: tuple[str, ...] = ()
    #: The prompt was too long for the model and was cut once.
    trimmed: bool = False


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    usage: Usage
    model: str
    provider: str = ""


@runtime_checkable
class TextModel(Protocol):
    """A language model. One that cannot take an image by URL (it needs the bytes) says so
    with a false `takes_image_urls` attribute; without it, URLs are taken."""

    #: The model's name, as the provider knows it (e.g. gpt-4o-mini).
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
