"""The OpenAI-compatible endpoint, driven by the real `openai` SDK over real HTTP.

The API is served by uvicorn on a free port in a thread; turns run in a thread of their
own, as the queue's consumer would run them, so the endpoint really waits for them.
"""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
import uvicorn
from fastapi import FastAPI

from carrier_core import Character, Runtime
from carrier_core.api.app import create_app
from carrier_core.api.posting import Submit
from carrier_core.memory import MemoryKind
from carrier_core.models import offline_models
from carrier_core.store.store import Store
from carrier_core.turn.ingest import Ingested, ingest
from carrier_core.turn.run import finish_turn, run_room
from tests.conftest import ROOT, TenantKey, make_runtime, run_inline
from tests.jwks import AUDIENCE, ISSUER, Issuer

GREETING = "Nice to meet you, Grace. What would you like to talk about?"


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app under uvicorn on a free local port, until the block ends."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def in_background(runtime: Runtime) -> Iterator[Submit]:
    """A `submit` that runs the turn in a thread, as the queue's consumer would."""
    inline = run_inline(runtime)
    threads: list[threading.Thread] = []

    def submit(ingested: Ingested) -> None:
        thread = threading.Thread(target=inline, args=(ingested,), daemon=True)
        thread.start()
        threads.append(thread)

    yield submit
    for thread in threads:  # the next test truncates the tables under them
        thread.join(timeout=10)


@pytest.fixture
def acme(make_tenant: Callable[[str], TenantKey]) -> TenantKey:
    return make_tenant("acme")


@pytest.fixture
def agent(runtime: Runtime, ada: Character, acme: TenantKey) -> uuid.UUID:
    return runtime.register_agent(ada, acme.tenant_id)


@pytest.fixture
def app(runtime: Runtime, in_background: Submit) -> FastAPI:
    return create_app(lambda: runtime, in_background)


@pytest.fixture
def server(app: FastAPI) -> Iterator[str]:
    with serving(app) as url:
        yield url


def sdk(server: str, key: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=key, **options)


@pytest.fixture
def client(server: str, acme: TenantKey) -> openai.OpenAI:
    return sdk(server, acme.key)


def say(client: openai.OpenAI, agent: uuid.UUID, text: str, **options: Any) -> str:
    completion = client.chat.completions.create(
        model=str(agent), messages=[{"role": "user", "content": text}], **options
    )
    content: str | None = completion.choices[0].message.content
    assert content is not None
    return content


def room_messages(store: Store, agent: uuid.UUID, room: str) -> list[str]:
    from carrier_core.world import room_id_for

    memories = store.memories_page(
        agent, kinds=[MemoryKind.MESSAGE], room_id=room_id_for(agent, "api", room), limit=100
    )
    return [m.content.text for m in reversed(memories)]


def test_a_completion_is_a_real_turn_with_its_reply_and_usage(
    client: openai.OpenAI, agent: uuid.UUID, store: Store
) -> None:
    completion = client.chat.completions.create(
        model=str(agent),
        messages=[{"role": "user", "content": "My name is Grace"}],
        user="grace",
        temperature=0.2,  # sampling options are taken and ignored
    )

    assert completion.object == "chat.completion" and completion.model == str(agent)
    [choice] = completion.choices
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == GREETING
    turn_id = uuid.UUID(completion.id.removeprefix("chatcmpl-"))
    calls = store.model_calls(turn_id)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == sum(c.input_tokens for c in calls) > 0
    assert completion.usage.completion_tokens == sum(c.output_tokens for c in calls) > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert room_messages(store, agent, "openai:grace") == ["My name is Grace", GREETING]


def test_the_agent_remembers_a_user_across_requests_and_only_the_last_message_is_new(
    client: openai.OpenAI, agent: uuid.UUID, store: Store
) -> None:
    history: list[Any] = [{"role": "system", "content": "You are a pirate."}]
    for text in ["Hello", "My name is Grace", "I like sailing"]:
        history.append({"role": "user", "content": text})
        completion = client.chat.completions.create(
            model=str(agent), messages=history, user="grace"
        )
        history.append({"role": "assistant", "content": completion.choices[0].message.content})

    recalled = say(client, agent, "What do you remember about me?", user="grace")

    assert recalled.startswith("Here is what I remember: ")
    assert "grace's name is Grace" in recalled and "grace likes sailing" in recalled
    # The resent history was not stored again: four messages and four replies.
    assert len(room_messages(store, agent, "openai:grace")) == 8
    # Another user is another conversation, with nothing remembered.
    assert "don't know much about you" in say(client, agent, "Who am I?", user="bo")


def test_an_api_key_without_a_user_talks_in_one_default_room_or_in_a_room_it_names(
    client: openai.OpenAI, agent: uuid.UUID, store: Store
) -> None:
    assert say(client, agent, "Hello") == "Hello, user. How are you today?"
    say(client, agent, "My name is Grace", extra_body={"room": "lobby"})
    say(client, agent, "I like tea", metadata={"room": "lobby"}, user="grace")

    assert room_messages(store, agent, "openai:user")[0] == "Hello"
    assert room_messages(store, agent, "lobby")[::2] == ["My name is Grace", "I like tea"]


def test_streaming_sends_the_role_then_each_reply_then_stop_and_usage(
    client: openai.OpenAI, agent: uuid.UUID, store: Store
) -> None:
    stream = client.chat.completions.create(
        model=str(agent),
        messages=[{"role": "user", "content": "My name is Grace"}],
        user="grace",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert all(c.object == "chat.completion.chunk" and c.model == str(agent) for c in chunks)
    assert len({c.id for c in chunks}) == 1
    *choices, last = chunks
    assert choices[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in choices)
    assert text == GREETING
    assert [c.choices[0].finish_reason for c in choices][-1] == "stop"
    assert last.choices == [] and last.usage is not None and last.usage.total_tokens > 0
    turn_id = uuid.UUID(last.id.removeprefix("chatcmpl-"))
    replies = store.turn_memories(turn_id, MemoryKind.MESSAGE)
    assert text == "\n\n".join(r.content.text for r in replies)


def test_a_stream_starts_at_once_and_its_reply_comes_as_the_turn_stores_it(
    store: Store, agent: uuid.UUID, acme: TenantKey
) -> None:
    turns: list[threading.Thread] = []

    def slow(runtime: Runtime) -> Submit:
        """A consumer that takes its time before it runs the turn."""
        inline = run_inline(runtime)

        def submit(ingested: Ingested) -> None:
            later = threading.Timer(0.3, inline, args=(ingested,))
            later.start()
            turns.append(later)

        return submit

    with server_with(store, slow) as url:
        stream = sdk(url, acme.key).chat.completions.create(
            model=str(agent), messages=[{"role": "user", "content": "Hello"}], stream=True
        )
        arrivals = [(time.monotonic(), chunk.choices[0]) for chunk in stream]
    [turn] = turns
    turn.join(timeout=10)
    (began, role), (replied, reply), (_, stop) = arrivals
    assert role.delta.role == "assistant"
    assert reply.delta.content == "Hello, user. How are you today?"
    assert stop.finish_reason == "stop"
    assert replied - began > 0.2


def test_models_are_the_callers_agents(
    client: openai.OpenAI,
    server: str,
    agent: uuid.UUID,
    runtime: Runtime,
    ada: Character,
    make_tenant: Callable[[str], TenantKey],
) -> None:
    other = make_tenant("other")
    theirs = runtime.register_agent(ada.model_copy(update={"id": uuid.uuid4()}), other.tenant_id)

    # A model is an agent's handle; its id names it too. Each tenant has its own "ada".
    assert [(m.id, m.owned_by) for m in client.models.list()] == [("ada", "carrier")]
    assert client.models.retrieve("ada").model_extra == {"name": "Ada"}
    assert client.models.retrieve(str(agent)).id == "ada"
    assert [m.id for m in sdk(server, other.key).models.list()] == ["ada"]
    for model in (str(theirs), "gpt-4o"):
        with pytest.raises(openai.NotFoundError) as found:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hello"}]
            )
        assert found.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve(model)


def test_a_bad_key_is_refused(server: str, agent: uuid.UUID) -> None:
    client = sdk(server, "carrier_not-a-key")
    with pytest.raises(openai.AuthenticationError) as refused:
        say(client, agent, "Hello")
    assert refused.value.code == "unauthorized"
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([], "body.messages: List should have at least 1 item"),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "body.messages.1.role: the last message must be the user's",
        ),
        ([{"role": "user", "content": "  "}], "body.messages.0.content: must not be empty"),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            "body.messages.0.content.0: only text and image_url parts are supported",
        ),
        (
            [{"role": "user", "content": [{"type": "text"}]}],
            "body.messages.0.content.0.text: a text part needs it",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "body.messages.0.content.0.image_url.url: must be an http(s) or data: URL",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png"}}],
                }
            ],
            "body.messages.0.content.0.image_url.url:",
        ),
        ([{"content": "hi"}], "body.messages.0.role: Field required"),
    ],
)
def test_a_malformed_body_is_422_naming_the_field(
    client: openai.OpenAI, agent: uuid.UUID, messages: list[Any], words: str
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model=str(agent), messages=messages)
    assert refused.value.code == "invalid_request"
    assert words in refused.value.message


def test_an_idempotency_key_is_one_message_and_refused_for_another_text(
    client: openai.OpenAI, agent: uuid.UUID, store: Store
) -> None:
    key = {"Idempotency-Key": "chat-1"}
    first = client.chat.completions.create(
        model=str(agent), messages=[{"role": "user", "content": "Hello"}], extra_headers=key
    )
    again = client.chat.completions.create(
        model=str(agent), messages=[{"role": "user", "content": "Hello"}], extra_headers=key
    )
    assert again.id == first.id  # the same turn
    assert again.choices[0].message.content == first.choices[0].message.content
    with pytest.raises(openai.ConflictError) as refused:
        client.chat.completions.create(
            model=str(agent), messages=[{"role": "user", "content": "Goodbye"}], extra_headers=key
        )
    assert refused.value.code == "conflict"
    assert "Idempotency-Key 'chat-1' was already used" in refused.value.message
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert room_messages(store, agent, "openai:user")[::2] == ["Hello"]


def test_text_parts_are_joined_by_lines_and_the_name_is_the_senders(
    client: openai.OpenAI, agent: uuid.UUID, store: Store
) -> None:
    completion = client.chat.completions.create(
        model=str(agent),
        messages=[
            {
                "role": "user",
                "name": "Grace",
                "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "again"}],
            }
        ],
    )
    assert completion.choices[0].message.content == "Hello, Grace. How are you today?"
    assert room_messages(store, agent, "openai:user")[0] == "Hello\nagain"


def test_image_parts_become_attachments_that_the_agent_sees(
    client: openai.OpenAI, agent: uuid.UUID, store: Store
) -> None:
    pixel = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n-tiny").decode()
    completion = client.chat.completions.create(
        model=str(agent),
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look at this"},
                    {"type": "image_url", "image_url": {"url": pixel}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/boat.jpg"}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content
    with store._pool.connection() as conn:
        row = conn.execute(
            "SELECT content FROM memories WHERE agent_id = %s AND kind = 'message'"
            " AND content->>'text' = 'Look at this'",
            (agent,),
        ).fetchone()
    assert row is not None
    attachments = row["content"]["attachments"]
    assert [a["url"] for a in attachments] == [pixel, "https://example.com/boat.jpg"]
    # The offline model described both, once, when the turn was decided.
    assert all(a.get("description") for a in attachments)


@contextmanager
def server_with(
    store: Store, submit: Callable[[Runtime], Submit], **settings: Any
) -> Iterator[str]:
    runtime = make_runtime(store, offline_models(), **settings)
    with serving(create_app(lambda: runtime, submit(runtime))) as url:
        yield url


def never(runtime: Runtime) -> Submit:
    """A queue whose consumer never comes."""
    return lambda ingested: None


def failing(runtime: Runtime) -> Submit:
    def submit(ingested: Ingested) -> None:
        finish_turn(runtime, ingested.turn_id, error="decide: ModelUnavailable: no model today")

    return submit


def test_a_turn_not_done_in_time_is_504_naming_it_and_not_retried(
    store: Store, agent: uuid.UUID, acme: TenantKey
) -> None:
    with server_with(store, never, chat_completion_timeout_s=0.2) as url:
        client = sdk(url, acme.key)  # the SDK's default retries: none may happen
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as late:
            say(client, agent, "Hello", user="grace")
        assert time.monotonic() - started < 2
        with pytest.raises(openai.APIError) as late_stream:
            list(
                client.chat.completions.create(
                    model=str(agent), messages=[{"role": "user", "content": "Hi"}], stream=True
                )
            )
    assert late.value.status_code == 504 and late.value.code == "turn_timeout"
    named = re.search(r"poll GET /v1/turns/([0-9a-f-]{36})", late.value.message)
    assert named is not None
    turns = store_turns(store)
    assert len(turns) == 2  # one per request: the 504 was not retried
    assert {"id": uuid.UUID(named[1]), "status": "queued"} in turns
    assert late_stream.value.code == "turn_timeout"


def store_turns(store: Store) -> list[dict[str, Any]]:
    with store._pool.connection() as conn:
        return list(conn.execute("SELECT id, status FROM turns ORDER BY id").fetchall())


def test_a_failed_turn_is_502_with_its_error(
    store: Store, agent: uuid.UUID, acme: TenantKey
) -> None:
    with server_with(store, failing) as url:
        client = sdk(url, acme.key)
        with pytest.raises(openai.InternalServerError) as failed:
            say(client, agent, "Hello")
        with pytest.raises(openai.APIError) as failed_stream:
            list(
                client.chat.completions.create(
                    model=str(agent), messages=[{"role": "user", "content": "Hi"}], stream=True
                )
            )
    assert failed.value.status_code == 502 and failed.value.code == "turn_failed"
    assert "ModelUnavailable: no model today" in failed.value.message
    assert failed_stream.value.code == "turn_failed"
    assert len(store_turns(store)) == 2


def unqueueable(runtime: Runtime) -> Submit:
    """A queue that refuses the message after ingest has stored it."""

    def submit(ingested: Ingested) -> None:
        raise ConnectionError("the queue is down")

    return submit


def test_a_failure_after_the_message_is_stored_is_not_retried_by_the_sdk(
    store: Store, agent: uuid.UUID, acme: TenantKey
) -> None:
    with server_with(store, unqueueable) as url:
        client = sdk(url, acme.key, max_retries=2)
        with pytest.raises(openai.InternalServerError) as failed:
            say(client, agent, "Hello")
        with pytest.raises(openai.InternalServerError):  # streaming takes the same path
            client.chat.completions.create(
                model=str(agent), messages=[{"role": "user", "content": "Hi"}], stream=True
            )
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert len(store_turns(store)) == 2  # one a request: the SDK posted neither again


def test_a_room_named_in_the_body_is_one_url_segment_of_at_most_200_characters(
    client: openai.OpenAI, agent: uuid.UUID
) -> None:
    # `..` would be a room whose URL clients resolve to the agent's own (DELETE included).
    rooms = ("r" * 201, "..", ".", "team/support")
    for extra in (*({"room": r} for r in rooms), {"metadata": {"room": "r" * 900}}):
        with pytest.raises(openai.UnprocessableEntityError, match="room"):
            say(client, agent, "Hello", extra_body=extra)


def test_an_end_user_speaks_as_their_subject_in_their_own_room(
    store: Store, agent: uuid.UUID, acme: TenantKey, issuer: Issuer, in_background: Submit
) -> None:
    runtime = make_runtime(
        store, offline_models(), jwt_jwks_url=issuer.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    token = issuer.token({"sub": "grace", "tenant_id": str(acme.tenant_id)})
    with serving(create_app(lambda: runtime, in_background)) as url:
        client = sdk(url, token)
        assert say(client, agent, "Hello") == "Hello, grace. How are you today?"
        assert [m.id for m in client.models.list()] == ["ada"]
        # A chat UI's `user` field changes neither the sender nor the room.
        assert say(client, agent, "I like tea", user="bo") == "What do you like most about tea?"
        # A room she names is hers: not the tenant's room of that key.
        say(client, agent, "Hi there", extra_body={"room": "lobby"})
    assert room_messages(store, agent, "user:grace:openai:grace") == [
        "Hello",
        "Hello, grace. How are you today?",
        "I like tea",
        "What do you like most about tea?",
    ]
    assert room_messages(store, agent, "user:grace:lobby")[0] == "Hi there"
    assert room_messages(store, agent, "lobby") == []


@pytest.mark.skipif(not (ROOT / "template.yaml").is_file(), reason="no template.yaml")
def test_the_sdk_talks_to_an_agent_through_the_emulated_aws_bundle(
    database_url: str,
    store: Store,
    agent: uuid.UUID,
    acme: TenantKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `carrier dev` serves: the api function's app, its turns run by the room's
    runner on Step Functions and the handlers."""
    from carrier_aws.local.emulator import Emulator

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with (
        Emulator(database_url, retry_interval_scale=0.01) as emulator,
        serving(emulator.app) as url,
    ):
        client = sdk(url, acme.key)
        assert say(client, agent, "My name is Grace", user="grace") == GREETING
        stream = client.chat.completions.create(
            model=str(agent),
            messages=[{"role": "user", "content": "I like sailing"}],
            user="grace",
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "What do you like most about sailing?"
    # Each message found the room idle: each started a runner, which ran its turn.
    assert emulator.invocations["TurnFinishFunction"] == 4


def test_a_coalesced_message_is_answered_with_the_reply_of_the_turn_that_answered_it(
    store: Store, runtime: Runtime, acme: TenantKey
) -> None:
    agent = runtime.register_agent(
        Character(name="Coalescing Ada", settings={"double_texting": "coalesce"}),
        acme.tenant_id,
    )
    claimed: list[Ingested] = []

    def held(runtime: Runtime) -> Submit:
        """The room's runner is claimed by the completion's post, and started later."""
        return claimed.append

    with server_with(store, held) as url:
        client = sdk(url, acme.key)
        answer: list[str] = []
        asking = threading.Thread(target=lambda: answer.append(say(client, agent, "Hello")))
        asking.start()
        deadline = time.monotonic() + 10
        while not claimed:
            assert time.monotonic() < deadline, "the completion's message was never taken"
            time.sleep(0.01)
        [first] = claimed
        assert first.runner is not None
        # A second message queues behind; then the runner answers both in one turn.
        later = ingest(
            runtime,
            {
                "agent_id": agent,
                "room": "openai:user",
                "sender": "user",
                "text": "My name is Grace",
                "source": "api",
            },
        )
        run_room(runtime, first.runner)
        asking.join(timeout=20)
    assert store.turn(first.turn_id).answered_by == later.turn_id
    assert answer == [GREETING]
