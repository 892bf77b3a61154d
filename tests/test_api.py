"""The HTTP API over the core, with the rest of the turn run directly instead of queued."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from carrier_core import Character, Runtime
from carrier_core.api.app import create_app
from carrier_core.turn.ingest import Ingested
from tests.conftest import TenantKey, run_inline


@pytest.fixture
def submitted() -> list[Ingested]:
    return []


@pytest.fixture
def acme(make_tenant: Callable[[str], TenantKey]) -> TenantKey:
    return make_tenant("acme")


@pytest.fixture
def client(runtime: Runtime, submitted: list[Ingested], acme: TenantKey) -> Iterator[TestClient]:
    inline = run_inline(runtime)

    def submit(ingested: Ingested) -> None:
        submitted.append(ingested)
        inline(ingested)

    with TestClient(create_app(lambda: runtime, submit), headers=acme.headers) as test_client:
        yield test_client


@pytest.fixture
def agent(runtime: Runtime, ada: Character, acme: TenantKey) -> uuid.UUID:
    return runtime.register_agent(ada, acme.tenant_id)


def post(client: TestClient, agent: uuid.UUID, body: dict[str, object], **headers: str):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/agents/{agent}/rooms/lobby/messages", json=body, headers=headers)


def test_post_answers_202_with_ids_and_the_turn_can_be_read(
    client: TestClient, agent: uuid.UUID, submitted: list[Ingested], runtime: Runtime
) -> None:
    response = post(client, agent, {"text": "Hello", "sender": "u1", "sender_name": "Sam"})
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "queued"
    [ingested] = submitted
    assert ingested.runner is not None  # the room was free: this post starts its runner
    message = runtime.store.memory(ingested.message_id)
    assert message.dedupe_key and ":carrier-" in message.dedupe_key
    turn = client.get(f"/v1/turns/{accepted['turn_id']}").json()
    assert turn["status"] == "done" and turn["error"] is None
    assert [r["text"] for r in turn["replies"]] == ["Hello, Sam. How are you today?"]
    steps = client.get(f"/v1/turns/{accepted['turn_id']}/steps").json()
    assert [s["step"] for s in steps][:2] == ["ingest", "decide"]
    assert all(s["status"] == "ok" for s in steps)
    assert steps[1]["model_calls"] == 1 and steps[1]["input_tokens"] > 0
    agent_view = client.get(f"/v1/agents/{agent}").json()
    assert (agent_view["id"], agent_view["name"]) == (str(agent), "Ada")


def test_a_client_message_id_makes_the_post_idempotent(
    client: TestClient, agent: uuid.UUID, submitted: list[Ingested]
) -> None:
    body = {"text": "Hello", "sender": "u1"}
    first = post(client, agent, body, **{"Idempotency-Key": "abc"}).json()
    again = post(client, agent, body, **{"Idempotency-Key": "abc"}).json()
    assert (again["message_id"], again["turn_id"]) == (first["message_id"], first["turn_id"])
    assert again["status"] == "done"
    # A finished turn is not run again: the repeat claims no runner.
    assert [i.runner is not None for i in submitted] == [True, False]
    field = post(client, agent, {**body, "client_message_id": "abc"}).json()
    assert field["turn_id"] == first["turn_id"]


def test_a_key_used_again_for_another_message_is_409_and_takes_nothing(
    client: TestClient, agent: uuid.UUID, runtime: Runtime, submitted: list[Ingested]
) -> None:
    body = {"text": "Hello", "sender": "u1"}
    first = post(client, agent, body, **{"Idempotency-Key": "abc"})
    assert first.status_code == 202

    other_text = post(client, agent, {**body, "text": "Goodbye"}, **{"Idempotency-Key": "abc"})
    assert other_text.status_code == 409
    assert other_text.json()["error"] == {
        "code": "conflict",
        "message": "Idempotency-Key 'abc' was already used for a message from this sender"
        " that differs in its text; a new message needs a new one",
    }
    in_body = post(client, agent, {**body, "text": "Bye", "client_message_id": "abc"})
    assert in_body.status_code == 409
    assert in_body.json()["error"]["message"].startswith("body.client_message_id 'abc' ")
    attached = {**body, "attachments": [{"url": "https://example.com/a.png"}]}
    other_attachments = post(client, agent, attached, **{"Idempotency-Key": "abc"})
    assert other_attachments.status_code == 409
    assert "differs in its attachments" in other_attachments.json()["error"]["message"]
    assert len(submitted) == 1  # nothing was taken, no turn was started

    # The same body again is still the first message.
    again = post(client, agent, body, **{"Idempotency-Key": "abc"})
    assert again.status_code == 202
    assert again.json()["message_id"] == first.json()["message_id"]
    assert again.json()["turn_id"] == first.json()["turn_id"]
    # Another sender's key is their own: the same key is another message, not a conflict.
    theirs = post(client, agent, {"text": "Goodbye", "sender": "u2"}, **{"Idempotency-Key": "abc"})
    assert theirs.status_code == 202
    assert theirs.json()["message_id"] != first.json()["message_id"]
    texts = [
        m["text"] for m in client.get(f"/v1/agents/{agent}/rooms/lobby/messages").json()["data"]
    ]
    assert texts.count("Hello") == 1 and texts.count("Goodbye") == 1 and "Bye" not in texts


def nested(depth: int) -> list[object]:
    """A list inside a list, `depth` levels deep."""
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"sender": "u1"}, 422, "invalid_request", "body.text: Field required"),
        ({"text": "hi", "sender": "u1", "colour": "red"}, 422, "invalid_request", "body.colour"),
        (
            {"text": "  ", "sender": "u1"},
            422,
            "invalid_message",
            "text: Value error, must not be empty",
        ),
        ({"text": "x" * 9000, "sender": "u1"}, 422, "invalid_message", "9000 characters"),
        (
            # Deeper than the serializer that stores it goes: named, not a 500.
            {"text": "hi", "sender": "u1", "attachments": [{"a": nested(300)}]},
            422,
            "invalid_message",
            "attachments: Value error, nested more than 64 levels deep",
        ),
    ],
)
def test_bad_posts_name_the_field(
    client: TestClient,
    agent: uuid.UUID,
    body: dict[str, object],
    status: int,
    code: str,
    words: str,
) -> None:
    response = post(client, agent, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]


def test_an_oversized_body_is_refused_with_413(client: TestClient, agent: uuid.UUID) -> None:
    response = post(client, agent, {"text": "x" * 70_000, "sender": "u1"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


def test_unknown_agents_and_turns_are_404(client: TestClient) -> None:
    response = post(client, uuid.uuid4(), {"text": "hi", "sender": "u1"})
    assert response.status_code == 404
    assert "no agent with id" in response.json()["error"]["message"]
    assert client.get(f"/v1/turns/{uuid.uuid4()}").status_code == 404
    assert client.get("/v1/turns/not-a-uuid").status_code == 422
    # A handle Postgres could not hold names no agent either (it was a 500).
    for path in ("/v1/agents/a%00b", "/v1/agents/a%00b/rooms/lobby/messages"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_a_room_key_is_one_segment_of_a_url_path(client: TestClient, agent: uuid.UUID) -> None:
    # Clients resolve `rooms/..` to the agent's own URL: a DELETE of the room would
    # delete the agent. Percent-encoded, the server sees the dots.
    for room in ("%2E%2E", "%2E"):
        response = client.post(
            f"/v1/agents/{agent}/rooms/{room}/messages", json={"text": "hi", "sender": "u1"}
        )
        assert response.status_code == 422, room
        assert "one segment of a URL path" in response.json()["error"]["message"]
    assert client.get(f"/v1/agents/{agent}/rooms").json()["data"] == []


def test_text_postgres_cannot_store_and_foreign_digits_are_422_not_500(
    client: TestClient, agent: uuid.UUID
) -> None:
    # JSON may escape a lone surrogate, and Python's JSON reads NaN: Postgres's jsonb holds
    # neither.
    for value, words in ((b'"\\ud800"', "surrogate"), (b"NaN", "no JSON number")):
        response = client.post(
            f"/v1/agents/{agent}/rooms/lobby/messages",
            content=b'{"text": "hi", "sender": "u1", "attachments": [{"a": ' + value + b"}]}",
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422
        assert words in response.json()["error"]["message"]
    for path in (f"/v1/agents/{agent}/memories", f"/v1/agents/{agent}/rooms/lobby/messages"):
        post(client, agent, {"text": "hi", "sender": "u1"})
        response = client.get(path, params={"cursor": "\u00b2"})  # "²".isdigit() is true
        assert response.status_code == 422, path
        assert response.json()["error"]["code"] == "invalid_cursor"


def test_a_body_that_cannot_be_read_says_why(client: TestClient, agent: uuid.UUID) -> None:
    url = f"/v1/agents/{agent}/rooms/lobby/messages"
    deep = b"[" * 3000 + b"]" * 3000
    for body, words in (
        (b'{"text": "\xff\xfe", "sender": "u1"}', "body: not valid UTF-8 (byte 10)"),
        (b'{"text": "hi", "sender": "u1", "attachments": [' + deep + b"]}", "nested too deep"),
        (b'{"text": "hi", "sender": "u1", "n": ' + b"1" * 5000 + b"}", "(4300 digits)"),
    ):
        response = client.post(url, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert words in response.json()["error"]["message"]
