"""Provider errors classified into Carrier's own `ModelError` classes.

Each SDK has its own exception types; steps and Step Functions see only these. A
message keeps what the provider said (a client needs the reason), with anything shaped
like a credential cut out (`redacted`): a server may quote the request's headers back (an
OpenAI-compatible proxy answering 400 with the `Authorization` it got), and these messages
are logged, stored with the turn and shown to clients.
"""

from __future__ import annotations

import re

from carrier_core.models.base import (
    ModelAuthError,
    ModelBadRequest,
    ModelContextTooLong,
    ModelError,
    ModelRateLimited,
    ModelUnavailable,
)

_CONTEXT = re.compile(
    r"context[ _]length|context window|maximum context|too many tokens|prompt is too long"
    r"|input is too long|too long for|max_tokens.*exceed|reduce the length|input length",
    re.IGNORECASE,
)


#: Credentials as they show in error text: a bearer token, a key by its vendor's prefix
#: (sk-..., sk-ant-..., AWS access key ids), or the value after a credential's name.
_CREDENTIALS = (
    (re.compile(r"\b(bearer|basic)\s+[^\s\"',;]+", re.IGNORECASE), r"\1 [redacted]"),
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}"), "[redacted]"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "[redacted]"),
    (
        re.compile(
            r"((?:api[_-]?key|access[_-]?key|secret|token|password)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',;}]+",
            re.IGNORECASE,
        ),
        r"\1[redacted]",
    ),
)


def redacted(message: str) -> str:
    """The message with what looks like a credential replaced by `[redacted]`."""
    for pattern, replacement in _CREDENTIALS:
        message = pattern.sub(replacement, message)
    return message


def looks_like_context_overflow(message: str) -> bool:
    return bool(_CONTEXT.search(message))


def classify_status(status: int | None, message: str, where: str) -> ModelError:
    """The `ModelError` for an HTTP status (None: no response at all), from a message
    already `redacted`."""
    text = f"{where}: {message}".strip()
    if status is None:
        return ModelUnavailable(text)
    if status in (401, 403):
        return ModelAuthError(f"{where}: authentication failed ({status}); check the API key")
    if status == 429:
        return ModelRateLimited(text)
    if status in (400, 404, 413, 422):
        if status == 413 or looks_like_context_overflow(message):
            return ModelContextTooLong(text)
        return ModelBadRequest(text)
    return ModelUnavailable(text)


def classify_sdk_error(exc: BaseException, where: str) -> ModelError:
    """Map an openai or anthropic SDK exception (they share their shape) to a `ModelError`."""
    if isinstance(exc, ModelError):
        return exc
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    message = redacted(str(getattr(exc, "message", "") or exc))
    if status is None and name in ("APITimeoutError", "Timeout", "TimeoutException"):
        return ModelUnavailable(f"{where}: timed out")
    if status is None and name == "APIConnectionError":
        return ModelUnavailable(f"{where}: cannot connect: {message}")
    if status is None and name == "APIResponseValidationError":
        return ModelUnavailable(f"{where}: malformed response: {message}")
    if status is None and isinstance(exc, ValueError):  # json.JSONDecodeError included
        return ModelUnavailable(f"{where}: malformed response: {name}: {message}")
    if status is None and name in ("OpenAIError", "AnthropicError"):
        # Raised before any request, e.g. no API key configured.
        return ModelAuthError(f"{where}: {message}")
    return classify_status(status, f"{name}: {message}", where)
