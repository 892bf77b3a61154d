"""OpenAI-compatible chat: `POST /v1/chat/completions` and `GET /v1/models`, so any OpenAI
client (its SDKs, chat UIs) can talk to a Carrier agent with `base_url=<api>/v1`, an API key
or end-user JWT as `api_key`, and the agent's id as `model`.

Each request runs a real turn, with the agent's memory. The agent keeps the conversation
itself, in Postgres, so only the request's last message, which must be the user's, is new:
the earlier messages a client resends are not stored again, and system messages do not
replace the character. A conversation is a room, named, in order of precedence, by a `room`
field (extra body) or `metadata.room` (the same room key as `/v1/agents/{id}/rooms/{room}`),
else `openai:<user>` where the user is an end-user token's subject, else OpenAI's `user`
field, else `user`: callers with an API key and no `user` share one conversation per
agent. The sender is that same user. An end user always speaks as their token's subject
(whatever `user` says), and the rooms they name are their own, as in REST.

The request waits for the turn, up to `chat_completion_timeout_s`; a turn still running
then answers 504 `turn_timeout` naming the turn, which goes on: poll `/v1/turns/{id}`.
Every answer given once the message is in carries `x-should-retry: false`: the OpenAI SDKs
would otherwise retry a 5xx by posting the message again, as a new message. (A gateway's
own 503 or 504, when the function outlives its timeout, is still retried by the SDK; the
wait stays well under that timeout.)

Streaming sends one chunk per reply as the turn stores it (the agent's replies are whole
messages, not tokens). Behind Lambda the stream arrives all at once, at the turn's end.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from carrier_core.api.deps import Caller, RuntimeDep, services
from carrier_core.api.errors import ApiError, ErrorBody
from carrier_core.api.http_errors import error_response
from carrier_core.api.posting import MessagePost, agent_of, post
from carrier_core.api.rooms import CONFLICT_RESPONSE
from carrier_core.api.turns import Usage, turn_view
from carrier_core.attachments import check_attachments
from carrier_core.auth import Forbidden, Principal
from carrier_core.memory import MemoryKind
from carrier_core.runtime import Runtime
from carrier_core.store.agents import AgentRecord
from carrier_core.store.base import NotFound
from carrier_core.store.database import DatabaseUnavailable
from carrier_core.store.turns import TurnRecord

router = APIRouter(prefix="/v1", tags=["openai"])

#: Room keys made from a user are namespaced, apart from rooms clients name themselves.
ROOM_PREFIX = "openai:"
#: The sender (and room) of an API key's request that names no `user`.
DEFAULT_USER = "user"
#: Polling the turn: the first wait, doubled up to the longest.
FIRST_POLL_S = 0.02
LONGEST_POLL_S = 0.25
_ENDED = ("done", "failed")
#: On every answer given once the message is in: the OpenAI SDKs retry 5xx by posting the
#: message again, which would be a second message and a second turn.
NO_RETRY = {"x-should-retry": "false"}

log = logging.getLogger(__name__)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None
    #: A user message's `name` becomes the sender's display name.
    name: str | None = Field(default=None, max_length=200)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request body. Sampling and tool options are taken and ignored: the agent's
    character and the runtime's models decide how it answers."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="the agent's id")
    messages: list[ChatMessage] = Field(
        min_length=1, description="only the last, the user's, is new to the agent"
    )
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="one choice only")
    user: str | None = Field(
        default=None,
        min_length=1,
        max_length=200 - len(ROOM_PREFIX),
        description="the sender; their conversation is room `openai:<user>`",
    )
    metadata: dict[str, str] | None = Field(
        default=None, description="`room`: the room key to talk in"
    )
    room: str | None = Field(
        default=None, min_length=1, max_length=200, description="the room key to talk in"
    )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    #: The turn's replies, joined by blank lines; empty when the agent chose silence.
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    #: `chatcmpl-` and the turn's id in hex.
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage


class ModelView(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "carrier"
    #: The agent's name (not in OpenAI's schema; its SDKs keep unknown fields).
    name: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelView]


_TURN_ERRORS: dict[int | str, dict[str, Any]] = {
    502: {"model": ErrorBody, "description": "the turn failed (`turn_failed`)"},
    504: {"model": ErrorBody, "description": "the turn is still running (`turn_timeout`)"},
}


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}, **CONFLICT_RESPONSE, **_TURN_ERRORS},
)
def create_chat_completion(
    runtime: RuntimeDep,
    request: Request,
    principal: Caller,
    body: ChatCompletionRequest,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ChatCompletion | JSONResponse | StreamingResponse:
    """Send the last message to the agent named by `model` and answer with its replies."""
    agent = _agent(runtime, principal, body.model)
    new = _new_message(body.messages)
    # An end user is always the sender (a chat UI's `user` field does not change that); the
    # room they name is one of their own (`rooms.post` scopes it to them).
    user = principal.user or body.user or DEFAULT_USER
    room = body.room or (body.metadata or {}).get("room") or f"{ROOM_PREFIX}{user}"
    message = MessagePost(
        text=new.text, sender=user, sender_name=new.sender_name, attachments=new.attachments
    )
    submit = services(request).submit
    try:
        accepted = post(runtime, submit, principal, agent.id, room, message, idempotency_key)
    except ApiError as exc:
        if exc.status != 409:
            raise  # answered 4xx: nothing was taken
        # The Idempotency-Key was used for another message: the SDKs retry a 409 (to OpenAI,
        # a lock timeout), and would only be refused again.
        return _no_retry(error_response(exc.status, exc.code, exc.message))
    except (NotFound, Forbidden, DatabaseUnavailable):
        raise  # answered 4xx, or 503 with the database away: nothing was taken
    except Exception:
        # The message may be in (stored, then queueing failed): a retry would post it again.
        log.exception("chat completion failed while its message was being taken")
        return _no_retry(
            error_response(500, "internal", "internal error; the message may have been taken")
        )
    completion = _Completion(
        turn_id=accepted.turn_id,
        model=str(agent.id),
        created=int(time.time()),
        timeout_s=runtime.settings.chat_completion_timeout_s,
    )
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(
            _chunks(runtime, completion, include_usage=include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **NO_RETRY},
        )
    try:
        return _answer(runtime, completion)
    except Exception:
        # The message is in: an SDK retrying this answer would send it again, as a new turn.
        log.exception(
            "chat completion for turn %s failed after its message was taken", accepted.turn_id
        )
        return _no_retry(
            error_response(
                500,
                "internal",
                f"internal error; the message was taken: read /v1/turns/{accepted.turn_id}",
            )
        )


def _no_retry(response: JSONResponse) -> JSONResponse:
    response.headers.update(NO_RETRY)
    return response


def _answer(runtime: Runtime, completion: _Completion) -> ChatCompletion | JSONResponse:
    turn = _finished(runtime, completion)
    if turn.status != "done":
        return _no_retry(error_response(*_unfinished(turn, completion)))
    view = turn_view(runtime, turn)
    return ChatCompletion(
        id=completion.id,
        created=completion.created,
        model=completion.model,
        choices=[
            Choice(message=AssistantMessage(content="\n\n".join(r.text for r in view.replies)))
        ],
        usage=_usage(view.usage),
    )


@router.get("/models", response_model=ModelList)
def list_models(runtime: RuntimeDep, principal: Caller) -> ModelList:
    """The caller's agents, as models. End users may list them too: they may talk to any
    agent of their tenant, and chat clients ask for the list before they talk."""
    agents: list[AgentRecord] = []
    while True:
        page = runtime.store.tenant_agents(
            principal.tenant_id,
            limit=100,
            after=agents[-1].id if agents else None,
            only=principal.agent_ids,
        )
        agents.extend(page)
        if len(page) < 100:
            return ModelList(data=[_model_view(a) for a in agents])


@router.get("/models/{model}", response_model=ModelView)
def get_model(runtime: RuntimeDep, principal: Caller, model: str) -> ModelView:
    return _model_view(_agent(runtime, principal, model))


def _model_view(agent: AgentRecord) -> ModelView:
    return ModelView(id=agent.handle, created=int(agent.created_at.timestamp()), name=agent.name)


def _agent(runtime: Runtime, principal: Principal, model: str) -> AgentRecord:
    """The agent a model name means (its handle, or its id); OpenAI's `model_not_found`
    for anything else."""
    try:
        return agent_of(runtime, principal, model)
    except NotFound:
        raise ApiError(
            404,
            "model_not_found",
            f"no model {model!r}: a model is an agent's handle or id (GET /v1/models)",
        ) from None


@dataclass(frozen=True)
class _NewMessage:
    text: str
    sender_name: str | None
    #: The message's `image_url` parts, as attachments (ElizaOS's Media shape).
    attachments: list[dict[str, Any]]


def _new_message(messages: list[ChatMessage]) -> _NewMessage:
    """The last message's text, sender name and images; it must be the user's. Its parts
    may be text and `image_url` (a URL or a data: URL): images become attachments."""
    index = len(messages) - 1
    last = messages[index]
    where = f"body.messages.{index}"
    if last.role != "user":
        raise ApiError(422, "invalid_request", f"{where}.role: the last message must be the user's")
    attachments: list[dict[str, Any]] = []
    if isinstance(last.content, list):
        texts = []
        for n, part in enumerate(last.content):
            if part.type == "text":
                if part.text is None:
                    raise ApiError(
                        422, "invalid_request", f"{where}.content.{n}.text: a text part needs it"
                    )
                texts.append(part.text)
            elif part.type == "image_url":
                attachments.append(
                    _image_attachment(part, f"{where}.content.{n}", len(attachments))
                )
            else:
                raise ApiError(
                    422,
                    "invalid_request",
                    f"{where}.content.{n}: only text and image_url parts are supported,"
                    f" not {part.type!r}",
                )
        text = "\n".join(texts)
    else:
        text = last.content or ""
    if not text.strip() and not attachments:
        raise ApiError(422, "invalid_request", f"{where}.content: must not be empty")
    # A message of images only still says something a conversation can show.
    return _NewMessage(text if text.strip() else "(an image)", last.name, attachments)


def _image_attachment(part: ContentPart, where: str, number: int) -> dict[str, Any]:
    image = (part.model_extra or {}).get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url.strip():
        raise ApiError(422, "invalid_request", f"{where}.image_url.url: a URL is required")
    url = url.strip()
    if not url.startswith(("https://", "http://", "data:")):
        raise ApiError(
            422, "invalid_request", f"{where}.image_url.url: must be an http(s) or data: URL"
        )
    attachment = {"id": f"image-{number + 1}", "url": url, "contentType": "image"}
    try:
        check_attachments([attachment])
    except ValueError as exc:  # "0.url: why"
        why = str(exc).partition(": ")[2]
        raise ApiError(422, "invalid_request", f"{where}.image_url.url: {why}") from None
    return attachment


@dataclass(frozen=True)
class _Completion:
    turn_id: uuid.UUID
    model: str
    created: int
    timeout_s: float

    @property
    def id(self) -> str:
        return f"chatcmpl-{self.turn_id.hex}"


class _Backoff:
    """Waits between looks at a turn: short at first, when most turns end, then longer."""

    def __init__(self, timeout_s: float):
        self._deadline = time.monotonic() + timeout_s
        self._delay = FIRST_POLL_S

    def wait(self) -> bool:
        """Sleep before the next look (the last one at the deadline); False once it passed."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(self._delay, remaining))
        self._delay = min(self._delay * 2, LONGEST_POLL_S)
        return True


def _finished(runtime: Runtime, completion: _Completion) -> TurnRecord:
    """The answering turn once it is done or failed, or as it stands at the deadline."""
    backoff = _Backoff(completion.timeout_s)
    while True:
        turn = runtime.store.answering(runtime.store.turn(completion.turn_id))
        if turn.status in _ENDED or not backoff.wait():
            return turn


def _unfinished(turn: TurnRecord, completion: _Completion) -> tuple[int, str, str]:
    """The status, code and message for a turn that did not end done."""
    if turn.status == "failed":
        return 502, "turn_failed", f"turn {turn.id} failed: {turn.error}"
    return (
        504,
        "turn_timeout",
        f"turn {turn.id} is still {turn.status} after {completion.timeout_s:g} s; it goes on:"
        f" poll GET /v1/turns/{turn.id} for its replies",
    )


def _usage(usage: Usage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
    )


def _chunks(runtime: Runtime, completion: _Completion, *, include_usage: bool) -> Iterator[str]:
    """Server-sent events in OpenAI's chunk format: the role, each reply as it is stored
    (after the first, prefixed by the blank line that joins them), the stop, `[DONE]`.
    A failed or late turn ends the stream with an error event, which the SDKs raise."""

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return _event(_chunk_body(completion, choices=[choice]))

    yield chunk({"role": "assistant", "content": ""})
    sent = 0
    backoff = _Backoff(completion.timeout_s)
    while True:
        # The status first: once it reads done, every reply is already stored.
        turn = runtime.store.answering(runtime.store.turn(completion.turn_id))
        replies = runtime.store.turn_memories(turn.id, MemoryKind.MESSAGE)
        for reply in replies[sent:]:
            yield chunk({"content": ("\n\n" if sent else "") + reply.content.text})
            sent += 1
        if turn.status in _ENDED or not backoff.wait():
            break
    if turn.status != "done":
        _, code, message = _unfinished(turn, completion)
        yield _event({"error": {"code": code, "message": message, "type": code}})
        return
    yield chunk({}, "stop")
    if include_usage:
        usage = _usage(turn_view(runtime, turn).usage)
        yield _event(_chunk_body(completion, choices=[], usage=usage.model_dump()))
    yield "data: [DONE]\n\n"


def _chunk_body(completion: _Completion, **fields: Any) -> dict[str, Any]:
    return {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
        **fields,
    }


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
