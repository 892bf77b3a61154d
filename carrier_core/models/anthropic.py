"""Anthropic's Messages API through the official `anthropic` SDK.

Structured tasks (decide, reflect) are answered through a forced tool use whose input
is the answer; other tasks as text. Images go before the prompt as `image` blocks (a `url`
source, or `base64` bytes). Anthropic has no embeddings API: a character using
Anthropic embeds with the embedding model its settings name (OpenAI when a key is set,
else the offline embedding).

The SDK retries with exponential backoff and jitter, honours `Retry-After` on 429 and
5xx (and 529 overloaded), and does not retry 401. Errors come out as `ModelError`s.
"""

from __future__ import annotations

import json
from typing import Any

from carrier_core.models.base import (
    IMAGE_TYPES,
    Generation,
    ModelBadRequest,
    ModelRequest,
    ModelUnavailable,
    Usage,
)
from carrier_core.models.errors import classify_sdk_error
from carrier_core.models.schemas import task_tool

DEFAULT_LARGE = "claude-sonnet-4-20250514"
DEFAULT_SMALL = "claude-3-5-haiku-latest"


def make_client(
    *, api_key: str | None, base_url: str | None, timeout: float, max_retries: int
) -> Any:
    """An `anthropic.Anthropic` client; the key defaults to ANTHROPIC_API_KEY."""
    try:
        import anthropic
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModelUnavailable(
            "the anthropic package is not installed: pip install anthropic"
        ) from exc
    return anthropic.Anthropic(
        api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
    )


def user_content(request: ModelRequest, where: str) -> str | list[dict[str, Any]]:
    """The user message's content: the prompt, or with images one `image` block per image
    (a `url` source, or `base64` of its bytes) before the prompt, as Anthropic advises.
    Raises `ModelBadRequest` for an image type the API does not take."""
    if not request.images:
        return request.prompt
    blocks: list[dict[str, Any]] = []
    for image in request.images:
        if image.url is not None:
            source = {"type": "url", "url": image.url}
        elif image.media_type not in IMAGE_TYPES:
            raise ModelBadRequest(
                f"{where}: takes images as {', '.join(IMAGE_TYPES)}, not {image.media_type}"
            )
        else:
            source = {"type": "base64", "media_type": image.media_type, "data": image.base64()}
        blocks.append({"type": "image", "source": source})
    return [*blocks, {"type": "text", "text": request.prompt}]


class AnthropicModel:
    def __init__(self, client: Any, model: str, *, max_output_tokens: int = 1024):
        self.client = client
        self.name = model
        self.provider = "anthropic"
        self.max_output_tokens = max_output_tokens

    def generate(self, request: ModelRequest) -> Generation:
        where = f"anthropic {self.name}"
        params: dict[str, Any] = {
            "model": self.name,
            "max_tokens": self.max_output_tokens,
            "system": request.system,
            "messages": [{"role": "user", "content": user_content(request, where)}],
        }
        tool = task_tool(request.task)
        if tool is not None:
            name, description, schema = tool
            params["tools"] = [{"name": name, "description": description, "input_schema": schema}]
            params["tool_choice"] = {"type": "tool", "name": name}
        try:
            response = self.client.messages.create(**params)
        except Exception as exc:
            raise classify_sdk_error(exc, where) from None  # its text may hold a key
        try:
            text = ""
            for block in response.content:
                if block.type == "tool_use":
                    text = json.dumps(block.input)
                    break
                if block.type == "text":
                    text += block.text
            usage = Usage(int(response.usage.input_tokens), int(response.usage.output_tokens))
        except (AttributeError, TypeError, ValueError) as exc:
            raise ModelUnavailable(f"{where}: malformed response: {exc}") from exc
        return Generation(
            text=text, usage=usage, model=response.model or self.name, provider=self.provider
        )
