"""Amazon Bedrock models through botocore: the Converse API for text (Claude, Llama,
Titan, ...) and Titan Text Embeddings v2, registered as the `bedrock` model set.

Structured tasks use a forced tool call on models that support one (Anthropic's on
Bedrock); other models answer in the prompt's XML form. botocore does the retrying
("standard" mode: exponential backoff with jitter on throttling and 5xx, never on
access errors); Bedrock sends no Retry-After. Errors come out as Carrier's
`ModelError` classes. Credentials are the usual AWS chain (the Lambda's role).

Images go to Converse as bytes (png, jpeg, gif, webp). Converse cannot fetch a URL and
Carrier fetches none for a model, so an image given by URL is named in the prompt as
one that cannot be seen (`takes_image_urls` is false: attachments are described so).

Settings: `model_provider: bedrock`, `large_model`/`small_model` (model or inference
profile ids), `embedding_model` (e.g. amazon.titan-embed-text-v2:0 with
`embedding_dimensions` 256, 512 or 1024, then `carrier reembed`; unset, the offline
embedding is kept unless the column already has a Titan size); region from AWS_REGION.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from carrier_aws.clients import AwsClient
from carrier_core.models import (
    EmbeddingDimensionMismatch,
    EmbeddingModel,
    Embeddings,
    Generation,
    HashEmbedding,
    ModelAuthError,
    ModelBadRequest,
    ModelContextTooLong,
    ModelError,
    ModelImage,
    ModelRateLimited,
    ModelRequest,
    ModelSet,
    ModelUnavailable,
    Usage,
    estimate_tokens,
)
from carrier_core.models.errors import looks_like_context_overflow
from carrier_core.models.schemas import task_tool
from carrier_core.models.select import role_model
from carrier_core.plugin import ModelProvider, Plugin

if TYPE_CHECKING:
    from carrier_core.character import Character
    from carrier_core.config import Settings

DEFAULT_LARGE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
DEFAULT_SMALL = "anthropic.claude-3-haiku-20240307-v1:0"
DEFAULT_EMBEDDING = "amazon.titan-embed-text-v2:0"
#: Sizes Titan Text Embeddings v2 can give.
TITAN_V2_SIZES = (256, 512, 1024)

_RATE = {"ThrottlingException", "TooManyRequestsException", "ServiceQuotaExceededException"}
_AUTH = {
    "AccessDeniedException",
    "UnrecognizedClientException",
    "ExpiredTokenException",
    "InvalidSignatureException",
}
_BAD = {"ValidationException", "ResourceNotFoundException", "ModelErrorException"}


def classify(exc: Exception, where: str) -> ModelError:
    """A botocore error as a `ModelError`."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        text = f"{where}: {code}: {message}"
        if code in _RATE:
            return ModelRateLimited(text)
        if code in _AUTH:
            return ModelAuthError(
                f"{where}: {code}: not allowed; check the AWS credentials and model access"
            )
        if code in _BAD:
            if looks_like_context_overflow(message):
                return ModelContextTooLong(text)
            return ModelBadRequest(text)
        return ModelUnavailable(text)
    if isinstance(exc, BotoCoreError):
        return ModelUnavailable(f"{where}: {type(exc).__name__}: {exc}")
    return ModelUnavailable(f"{where}: {type(exc).__name__}: {exc}")


def make_client(settings: Settings) -> Any:
    from botocore.config import Config

    config = Config(
        read_timeout=settings.model_timeout_s,
        connect_timeout=min(settings.model_timeout_s, 10.0),
        retries={"mode": "standard", "max_attempts": settings.model_max_retries + 1},
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return AwsClient("bedrock-runtime", region_name=region, config=config)


def _supports_tool_choice(model: str) -> bool:
    return "anthropic." in model or "mistral.mistral-large" in model


#: Converse's image formats, by media type.
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}


def image_block(image: ModelImage, where: str) -> dict[str, Any]:
    """A Converse content block for an image. Converse takes images only as bytes, and
    Carrier fetches no URL for a model (see the webhooks' URL checks for what that would
    take): an image given by URL becomes a text block saying it cannot be seen, so the
    model says so rather than guessing."""
    if image.data is None:
        return {
            "text": f"[An image at {image.url} cannot be shown to this model: Bedrock takes"
            " images only as bytes, and Carrier does not fetch URLs.]"
        }
    image_format = IMAGE_FORMATS.get(image.media_type)
    if image_format is None:
        raise ModelBadRequest(
            f"{where}: takes images as {', '.join(IMAGE_FORMATS)}, not {image.media_type}"
        )
    return {"image": {"format": image_format, "source": {"bytes": image.data}}}


class BedrockModel:
    #: Converse needs an image's bytes: an image given by URL cannot be seen.
    takes_image_urls = False

    def __init__(self, client: Any, model: str, *, max_output_tokens: int = 1024):
        self.client = client
        self.name = model
        self.provider = "bedrock"
        self.max_output_tokens = max_output_tokens

    def generate(self, request: ModelRequest) -> Generation:
        where = f"bedrock {self.name}"
        params: dict[str, Any] = {
            "modelId": self.name,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"text": request.prompt},
                        *(image_block(image, where) for image in request.images),
                    ],
                }
            ],
            "inferenceConfig": {"maxTokens": self.max_output_tokens},
        }
        if request.system:
            params["system"] = [{"text": request.system}]
        tool = task_tool(request.task) if _supports_tool_choice(self.name) else None
        if tool is not None:
            name, description, schema = tool
            params["toolConfig"] = {
                "tools": [
                    {
                        "toolSpec": {
                            "name": name,
                            "description": description,
                            "inputSchema": {"json": schema},
                        }
                    }
                ],
                "toolChoice": {"tool": {"name": name}},
            }
        try:
            response = self.client.converse(**params)
        except Exception as exc:
            raise classify(exc, where) from exc
        try:
            text = ""
            for block in response["output"]["message"]["content"]:
                if "toolUse" in block:
                    text = json.dumps(block["toolUse"]["input"])
                    break
                text += block.get("text", "")
            usage = response.get("usage") or {}
            tokens = Usage(
                int(usage.get("inputTokens", estimate_tokens(request.system + request.prompt))),
                int(usage.get("outputTokens", estimate_tokens(text))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelUnavailable(f"{where}: malformed response: {exc}") from exc
        return Generation(text=text, usage=tokens, model=self.name, provider=self.provider)


class TitanEmbedding:
    """Titan Text Embeddings v2: one text a call, normalised, 256, 512 or 1024 floats."""

    def __init__(self, client: Any, model: str, dimensions: int):
        self.client = client
        self.name = model
        self.provider = "bedrock"
        # The size the column asks for if Titan can give it; else 1024, which the runtime
        # then reports as a mismatch to fix with `carrier reembed`.
        self.dimensions = dimensions if dimensions in TITAN_V2_SIZES else 1024

    def embed(self, texts: Sequence[str]) -> Embeddings:
        where = f"bedrock {self.name}"
        vectors: list[list[float]] = []
        tokens = 0
        for text in texts:
            body = {"inputText": text, "dimensions": self.dimensions, "normalize": True}
            try:
                response = self.client.invoke_model(
                    modelId=self.name,
                    body=json.dumps(body),
                    contentType="application/json",
                    accept="application/json",
                )
                answer = json.loads(response["body"].read())
                vector = [float(x) for x in answer["embedding"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelUnavailable(f"{where}: malformed response: {exc}") from exc
            except Exception as exc:
                raise classify(exc, where) from exc
            if len(vector) != self.dimensions:
                raise EmbeddingDimensionMismatch(
                    f"{where} returned {len(vector)} dimensions; {self.dimensions} expected"
                )
            vectors.append(vector)
            tokens += int(answer.get("inputTextTokenCount") or estimate_tokens(text))
        return Embeddings(vectors, Usage(tokens), self.name, self.provider)


def bedrock_models(character: Character, settings: Settings, client: Any = None) -> ModelSet:
    client = client or make_client(settings)

    def text(role: str, default: str) -> BedrockModel:
        return BedrockModel(
            client,
            role_model(settings, character, "bedrock", role, default),
            max_output_tokens=settings.max_output_tokens,
        )

    # Titan v2 gives 256, 512 or 1024 floats, not the default column's 384: it is used
    # when named (`embedding_model`, then `carrier reembed`) or when the column fits it.
    named = role_model(settings, character, "bedrock", "embedding", "")
    dimensions = settings.embedding_dimensions or 1024
    embedding: EmbeddingModel = (
        TitanEmbedding(client, named or DEFAULT_EMBEDDING, dimensions)
        if named or dimensions in TITAN_V2_SIZES
        else HashEmbedding()
    )
    return ModelSet(
        small=text("small", DEFAULT_SMALL), large=text("large", DEFAULT_LARGE), embedding=embedding
    )


plugin = Plugin(
    name="bedrock",
    description="Amazon Bedrock models (Converse API) and Titan Text Embeddings v2.",
    models=[
        ModelProvider(
            "bedrock",
            bedrock_models,
            # On-demand list prices in us-east-1, US dollars per million tokens.
            prices={
                "anthropic.claude-3-5-haiku": (0.80, 4.00),
                "anthropic.claude-3-5-sonnet": (3.00, 15.00),
                "anthropic.claude-3-haiku": (0.25, 1.25),
                "us.anthropic.claude-3-5-haiku": (0.80, 4.00),
                "meta.llama3-1-8b-instruct": (0.22, 0.22),
                "meta.llama3-1-70b-instruct": (0.72, 0.72),
                "amazon.titan-text-express": (0.20, 0.60),
                "amazon.titan-embed-text-v2": (0.02, 0.0),
            },
            context_windows={
                "anthropic.claude": 200_000,
                "us.anthropic.claude": 200_000,
                "meta.llama3": 128_000,
                "amazon.titan-text": 8_000,
            },
        )
    ],
)
