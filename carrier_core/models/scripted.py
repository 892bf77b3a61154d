"""A model that plays back a script, for tests: it records every request it gets."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from carrier_core.models.base import (
    Generation,
    ModelError,
    ModelRequest,
    Usage,
    estimate_tokens,
)

Response = str | BaseException | Callable[[ModelRequest], str]


class ScriptedModel:
    """Answers each request with the next scripted response.

    A response is the text to return, an exception to raise, or a function of
    the request. An empty script raises `ModelError`, so a test that makes more
    calls than it planned fails loudly.
    """

    name = "scripted"

    def __init__(self, responses: Iterable[Response] = ()):
        self.script: deque[Response] = deque(responses)
        self.requests: list[ModelRequest] = []

    def add(self, *responses: Response) -> None:
        self.script.extend(responses)

    def generate(self, request: ModelRequest) -> Generation:
        self.requests.append(request)
        if not self.script:
            raise ModelError(f"scripted model has no response left for task {request.task!r}")
        response = self.script.popleft()
        if isinstance(response, BaseException):
            raise response
        text = response(request) if callable(response) else response
        return Generation(
            text=text,
            usage=Usage(estimate_tokens(request.system + request.prompt), estimate_tokens(text)),
            model=self.name,
        )
