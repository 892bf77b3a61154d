"""OpenAI, and any server that speaks its API (Ollama, vLLM, LM Studio), through the
official `openai` SDK.

Structured tasks (decide, reflect) are answered through a forced tool call whose
arguments are the answer; other tasks as plain text. Servers that speak the API but
not tool calls can be asked for plain text (`tools=False`); the prompt's XML form is
then what the model follows. Embeddings ask for the stored column's size where the
model allows it (text-embedding-3-*). Images go with the prompt as `image_url` parts: an
image's own URL, or its bytes as a data: URL.

The SDK does the retrying: exponential backoff with jitter, `Retry-After` honoured on
429 and 5xx, nothing retried on 401. Errors come out as `ModelError` subclasses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from carrier_core.models.base import (
    EmbeddingDimensionMismatch,
    Embeddings,
    Generation,
    ModelRequest,
    ModelUnavailable,
    Usage,
    estimate_tokens,
)
from carrier_core.models.errors import classify_sdk_error
from carrier_core.models.schemas import task_tool

DEFAULT_LARGE = "gpt-4o"
DEFAULT_SMALL = "gpt-4o-mini"
DEFAULT_EMBEDDING = "text-embedding-3-small"

#: Native sizes of embedding models; those marked flexible take a `dimensions` parameter.
EMBEDDING_SIZES: dict[str, tuple[int, bool]] = {
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
    # Common models served by Ollama and friends.
    "nomic-embed-text": (768, False),
    "mxbai-embed-large": (1024, False),
    "all-minilm": (384, False),
    "bge-m3": (1024, False),
    "snowflake-arctic-embed": (1024, False),
}


def make_client(
    *,
    api_key: str | None,
    base_url: str | None,
    timeout: float,
    max_retries: int,
) -> Any:
    """An `openai.OpenAI` client; the key and base URL default to the SDK's own
    (OPENAI_API_KEY, OPENAI_BASE_URL)."""
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModelUnavailable("the openai package is not installed: pip install openai") from exc
    try:
        return openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )
    except openai.OpenAIError as exc:  # no key anywhere
        raise classify_sdk_error(exc, "openai") from None


def user_content(request: ModelRequest) -> str | list[dict[str, Any]]:
    """The user message's content: the prompt, or with images the prompt and one
    `image_url` part per image (its URL, or its bytes as a data: URL)."""
    if not request.images:
        return request.prompt
    return [
        {"type": "text", "text": request.prompt},
        *(
            {"type": "image_url", "image_url": {"url": image.data_url()}}
            for image in request.images
        ),
    ]


class OpenAIChatModel:
    """A chat-completions model."""

    def __init__(
        self,
        client: Any,
        model: str,
        *,
        provider: str = "openai",
        tools: bool = True,
        max_output_tokens: int = 1024,
    ):
        self.client = client
        self.name = model
        self.provider = provider
        self.tools = tools
        self.max_output_tokens = max_output_tokens

    def generate(self, request: ModelRequest) -> Generation:
        where = f"{self.provider} {self.name}"
        messages = [
            {"role": "system", "content": request.system},
            {"role": "user", "content": user_content(request)},
        ]
        params: dict[str, Any] = {"model": self.name, "messages": messages}
        # OpenAI's own API renamed the limit; compatible servers know the old name.
        limit = "max_completion_tokens" if self.provider == "openai" else "max_tokens"
        params[limit] = self.max_output_tokens
        tool = task_tool(request.task) if self.tools else None
        if tool is not None:
            name, description, schema = tool
            params["tools"] = [
                {
                    "type": "function",
                    "function": {"name": name, "description": description, "parameters": schema},
                }
            ]
            params["tool_choice"] = {"type": "function", "function": {"name": name}}
        try:
            response = self.client.chat.completions.create(**params)
        except Exception as exc:
            raise classify_sdk_error(exc, where) from None  # its text may hold a key
        try:
            choice = response.choices[0]
            message = choice.message
            calls = getattr(message, "tool_calls", None) or []
            if calls:
                arguments = calls[0].function.arguments or "{}"
                try:
                    text = json.dumps(json.loads(arguments))
                except ValueError:
                    # Arguments cut short (the answer hit max_output_tokens): asking again
                    # gives the same; the caller's parser takes what it can, or answers safely.
                    text = arguments
            else:
                text = message.content or ""
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise ModelUnavailable(f"{where}: malformed response: {exc}") from exc
        usage = getattr(response, "usage", None)
        if usage is not None:
            tokens = Usage(int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0))
        else:
            tokens = Usage(estimate_tokens(request.system + request.prompt), estimate_tokens(text))
        return Generation(
            text=text,
            usage=tokens,
            model=getattr(response, "model", None) or self.name,
            provider=self.provider,
        )


class OpenAIEmbedding:
    """An embeddings model, giving vectors of `dimensions` floats."""

    def __init__(
        self,
        client: Any,
        model: str,
        dimensions: int,
        *,
        provider: str = "openai",
        native: int | None = None,
    ):
        """`dimensions`: the size wanted (the stored column's); `native`: the model's own
        size when Carrier does not know it."""
        self.client = client
        self.name = model
        self.provider = provider
        known = EMBEDDING_SIZES.get(model)
        if native is not None:
            native, flexible = native, bool(known and known[1])
        else:
            native, flexible = known or (dimensions, False)
        self.flexible = flexible and dimensions <= native
        # A fixed-size model has its own size, whatever the column wants.
        self.dimensions = dimensions if self.flexible else native

    def embed(self, texts: Sequence[str]) -> Embeddings:
        where = f"{self.provider} {self.name}"
        params: dict[str, Any] = {"model": self.name, "input": list(texts)}
        if self.flexible:
            params["dimensions"] = self.dimensions
        try:
            response = self.client.embeddings.create(**params)
        except Exception as exc:
            raise classify_sdk_error(exc, where) from None  # its text may hold a key
        try:
            data = sorted(response.data, key=lambda d: d.index)
            vectors = [[float(x) for x in d.embedding] for d in data]
        except (AttributeError, TypeError, ValueError) as exc:
            raise ModelUnavailable(f"{where}: malformed response: {exc}") from exc
        if len(vectors) != len(texts):
            raise ModelUnavailable(f"{where}: {len(vectors)} vectors for {len(texts)} texts")
        for vector in vectors:
            if len(vector) != self.dimensions:
                raise EmbeddingDimensionMismatch(
                    f"{where} returned {len(vector)}-dimensional vectors; {self.dimensions}"
                    " were expected. Set CARRIER_EMBEDDING_DIMENSIONS to the model's size"
                    " and run `carrier reembed`"
                )
        usage = getattr(response, "usage", None)
        tokens = int(getattr(usage, "prompt_tokens", 0) or 0) or sum(
            estimate_tokens(t) for t in texts
        )
        return Embeddings(
            vectors=vectors, usage=Usage(tokens), model=self.name, provider=self.provider
        )
