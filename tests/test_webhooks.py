"""Webhooks: registered through the API, each reply POSTed to a real local receiver, signed
the Standard Webhooks way (checked with the `standardwebhooks` package and by hand),
retried with backoff, and kept when every attempt failed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook as StandardWebhook

from carrier_aws.local.emulator import Emulator
from carrier_core import Character, Runtime
from carrier_core.api import create_app
from carrier_core.models import offline_models
from carrier_core.store import Store
from carrier_core.webhooks import (
    InvalidWebhookUrl,
    Outcome,
    backoff_delay,
    check_url,
    deliver,
    new_secret,
    plan_deliveries,
    signed_headers,
)
from carrier_core.webhooks.delivery import MAX_BACKOFF_S
from carrier_core.webhooks.targets import refused_target
from tests.conftest import TenantKey, make_runtime, run_inline

MAX_ATTEMPTS = 4


# -- a real receiver ---------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """An HTTP server in a thread that keeps every request and answers `status`, after
    answering 500 to the first `failures` requests."""

    status: int = 200
    failures: int = 0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    port: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, received: Received) -> int:
        with self.lock:
            self.requests.append(received)
            self.lock.notify_all()
            if self.failures > 0:
                self.failures -= 1
                return 500
            return self.status

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.requests) >= count, timeout), (
                f"{len(self.requests)} request(s) after {timeout}s"
            )
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = found.answer(Received(self.path, headers, body, time.time()))
            self.send_response(status)
            if status in (301, 302):
                self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()
            self.wfile.write(b"ok" if status < 300 else b"receiver says no")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


def signed_by_hand(secret: str, received: Received) -> bool:
    """The Standard Webhooks check, written out: HMAC-SHA256 of `id.timestamp.body`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    headers = received.headers
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(f"v1,{expected}", given)
        for given in headers["webhook-signature"].split(" ")
    )


def assert_signed(secret: str, received: Received) -> dict[str, Any]:
    payload: dict[str, Any] = StandardWebhook(secret).verify(received.body, received.headers)
    assert signed_by_hand(secret, received)
    assert abs(int(received.headers["webhook-timestamp"]) - received.at) <= 5
    return payload


# -- the API over a runtime that allows local URLs ------------------------------------------


@pytest.fixture
def hooks_runtime(store: Store) -> Runtime:
    return make_runtime(
        store,
        offline_models(),
        webhook_allow_private_urls=True,
        webhook_backoff_s=0.02,
        webhook_max_attempts=MAX_ATTEMPTS,
        webhook_timeout_s=2,
    )


@pytest.fixture
def acme(make_tenant: Callable[[str], TenantKey]) -> TenantKey:
    return make_tenant("acme")


@pytest.fixture
def client(hooks_runtime: Runtime, acme: TenantKey) -> Iterator[TestClient]:
    app = create_app(lambda: hooks_runtime, run_inline(hooks_runtime))
    with TestClient(app, headers=acme.headers) as test_client:
        yield test_client


@pytest.fixture
def agent(hooks_runtime: Runtime, ada: Character, acme: TenantKey) -> uuid.UUID:
    return hooks_runtime.register_agent(ada, acme.tenant_id)


def register(
    client: TestClient, agent: uuid.UUID, url: str, room: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url} | ({"room": room} if room else {})
    response = client.post(f"/v1/agents/{agent}/webhooks", json=body)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


def say(client: TestClient, agent: uuid.UUID, text: str, room: str = "lobby") -> uuid.UUID:
    response = client.post(
        f"/v1/agents/{agent}/rooms/{room}/messages", json={"text": text, "sender": "grace"}
    )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["turn_id"])


def deliver_until_settled(runtime: Runtime, delivery_id: uuid.UUID) -> list[Outcome]:
    """Attempt a delivery until no attempt is due any more, waiting out each backoff."""
    outcomes = [deliver(runtime, delivery_id)]
    while outcomes[-1].retry_in is not None:
        time.sleep(outcomes[-1].retry_in)
        outcomes.append(deliver(runtime, delivery_id))
    return outcomes


# -- signing -------------------------------------------------------------------------------


def test_our_signature_is_what_standard_webhooks_and_a_hand_check_expect() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    body = json.dumps({"type": "reply", "text": "héllo"}, ensure_ascii=False).encode()
    now = int(time.time())
    headers = signed_headers(secret, "msg_1", now, body)
    assert StandardWebhook(secret).verify(body, headers) == {"type": "reply", "text": "héllo"}
    assert signed_by_hand(secret, Received("/", headers, body, now))
    # Another secret, or another body, does not verify.
    assert not signed_by_hand(new_secret(), Received("/", headers, body, now))
    assert not signed_by_hand(secret, Received("/", headers, body + b" ", now))


# -- delivering ----------------------------------------------------------------------------


def test_a_reply_is_posted_signed_with_its_turn_and_the_secret_is_shown_once(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, receiver: Receiver
) -> None:
    made = register(client, agent, receiver.url())
    assert made["secret"].startswith("whsec_") and made["room"] is None
    listed = client.get(f"/v1/agents/{agent}/webhooks").json()
    assert [h["id"] for h in listed] == [made["id"]]
    one = client.get(f"/v1/agents/{agent}/webhooks/{made['id']}").json()
    assert "secret" not in listed[0] and "secret" not in one and made["secret"] not in str(listed)

    turn_id = say(client, agent, "My name is Grace")
    turn = client.get(f"/v1/turns/{turn_id}").json()
    [reply] = turn["replies"]
    [delivery_id] = plan_deliveries(hooks_runtime, turn_id)
    assert plan_deliveries(hooks_runtime, turn_id) == [delivery_id]  # planned once

    outcome = deliver(hooks_runtime, delivery_id)
    assert (outcome.status, outcome.attempts, outcome.last_status) == ("delivered", 1, 200)
    [received] = receiver.wait_for(1)
    assert received.headers["webhook-id"] == str(delivery_id)
    assert received.headers["content-type"] == "application/json"
    payload = assert_signed(made["secret"], received)
    assert payload == {
        "type": "reply",
        "agent_id": str(agent),
        "room": "lobby",
        "turn_id": str(turn_id),
        "message_id": turn["message_id"],
        "reply": {"id": reply["id"], "text": reply["text"], "actions": reply["actions"]},
        "created_at": payload["created_at"],
    }
    # Delivered: a repeat of its message sends nothing, and a finish run again queues nothing.
    assert deliver(hooks_runtime, delivery_id).attempted is False
    assert plan_deliveries(hooks_runtime, turn_id) == []
    assert len(receiver.requests) == 1


def test_a_failing_receiver_is_tried_again_after_growing_delays_then_delivered(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, receiver: Receiver
) -> None:
    made = register(client, agent, receiver.url())
    receiver.failures = 2
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))

    outcomes = deliver_until_settled(hooks_runtime, delivery_id)

    assert [(o.status, o.last_status) for o in outcomes] == [
        ("pending", 500),
        ("pending", 500),
        ("delivered", 200),
    ]
    assert outcomes[0].error == "HTTP 500: receiver says no"
    delays = [o.retry_in for o in outcomes[:2]]
    assert delays[0] is not None and delays[1] is not None and delays[1] > delays[0] > 0
    requests = receiver.wait_for(3)
    # Every attempt is the same delivery (one webhook-id), each signed afresh.
    assert {r.headers["webhook-id"] for r in requests} == {str(delivery_id)}
    assert len({r.body for r in requests}) == 1
    for received in requests:
        assert_signed(made["secret"], received)
    # The attempts came no sooner than the backoff allowed.
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=True))


def test_a_repeat_message_for_a_delivery_not_yet_due_sends_nothing(
    client: TestClient, store: Store, agent: uuid.UUID, receiver: Receiver
) -> None:
    runtime = make_runtime(store, offline_models(), webhook_allow_private_urls=True)
    register(client, agent, receiver.url())
    receiver.failures = 1
    [delivery_id] = plan_deliveries(runtime, say(client, agent, "Hello"))

    first = deliver(runtime, delivery_id)
    again = deliver(runtime, delivery_id)  # an SQS duplicate, long before the backoff ends

    assert first.attempted and first.retry_in is not None and first.retry_in >= 7.5
    assert (again.attempted, again.status, again.attempts) == (False, "pending", 1)
    assert len(receiver.requests) == 1


def test_a_receiver_that_always_fails_ends_failed_and_is_listed_with_its_last_answer(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, receiver: Receiver
) -> None:
    made = register(client, agent, receiver.url())
    receiver.status = 503
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))

    outcomes = deliver_until_settled(hooks_runtime, delivery_id)

    assert len(outcomes) == MAX_ATTEMPTS == len(receiver.requests)
    assert (outcomes[-1].status, outcomes[-1].attempts) == ("failed", MAX_ATTEMPTS)
    base = f"/v1/agents/{agent}/webhooks/{made['id']}/deliveries"
    page = client.get(base, params={"status": "failed"}).json()
    [failed] = page["data"]
    assert failed["id"] == str(delivery_id) and page["next_cursor"] is None
    assert (failed["status"], failed["attempts"], failed["last_status"]) == (
        "failed",
        MAX_ATTEMPTS,
        503,
    )
    assert failed["last_error"] == "HTTP 503: receiver says no"
    assert failed["next_attempt_at"] is None and failed["payload"]["type"] == "reply"
    assert client.get(base, params={"status": "delivered"}).json()["data"] == []
    # Given up on: a late message for it sends nothing more.
    assert deliver(hooks_runtime, delivery_id).attempted is False


def test_a_redirect_is_not_followed(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, receiver: Receiver
) -> None:
    register(client, agent, receiver.url())
    receiver.status = 302
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))

    outcome = deliver(hooks_runtime, delivery_id)

    assert (outcome.status, outcome.last_status) == ("pending", 302)
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_deliveries_page_newest_first(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, receiver: Receiver
) -> None:
    made = register(client, agent, receiver.url())
    planned = [
        plan_deliveries(hooks_runtime, say(client, agent, f"Hello {n}"))[0] for n in range(3)
    ]
    base = f"/v1/agents/{agent}/webhooks/{made['id']}/deliveries"

    first = client.get(base, params={"limit": 2}).json()
    rest = client.get(base, params={"limit": 2, "cursor": first["next_cursor"]}).json()

    ids = [d["id"] for d in first["data"] + rest["data"]]
    assert ids == [str(d) for d in reversed(planned)] and rest["next_cursor"] is None
    assert {d["status"] for d in first["data"]} == {"pending"}


def test_a_room_webhook_gets_only_its_rooms_replies(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, receiver: Receiver
) -> None:
    lobby = register(client, agent, receiver.url("/lobby"), room="lobby")
    everywhere = register(client, agent, receiver.url("/all"))
    assert lobby["room"] == "lobby"

    for room in ("lobby", "kitchen"):
        for delivery_id in plan_deliveries(hooks_runtime, say(client, agent, "Hi", room=room)):
            assert deliver(hooks_runtime, delivery_id).status == "delivered"

    requests = receiver.wait_for(3)
    rooms = sorted((r.path, json.loads(r.body)["room"]) for r in requests)
    assert rooms == [("/all", "kitchen"), ("/all", "lobby"), ("/lobby", "lobby")]
    secrets = {"/lobby": lobby["secret"], "/all": everywhere["secret"]}
    for received in requests:
        assert_signed(secrets[received.path], received)


def test_a_deleted_webhook_takes_its_deliveries_with_it(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, receiver: Receiver
) -> None:
    made = register(client, agent, receiver.url())
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))

    response = client.delete(f"/v1/agents/{agent}/webhooks/{made['id']}")

    assert response.status_code == 204
    assert client.get(f"/v1/agents/{agent}/webhooks").json() == []
    assert deliver(hooks_runtime, delivery_id).status == "gone"
    assert receiver.requests == []
    assert client.delete(f"/v1/agents/{agent}/webhooks/{made['id']}").status_code == 404


# -- who may -------------------------------------------------------------------------------


def test_another_tenant_sees_no_webhook_of_ours(
    client: TestClient,
    hooks_runtime: Runtime,
    ada: Character,
    agent: uuid.UUID,
    receiver: Receiver,
    make_tenant: Callable[[str], TenantKey],
) -> None:
    made = register(client, agent, receiver.url())
    other = make_tenant("globex")
    theirs = hooks_runtime.register_agent(
        ada.model_copy(update={"id": uuid.uuid4()}), other.tenant_id
    )
    ours = f"/v1/agents/{agent}/webhooks"

    assert client.get(ours, headers=other.headers).status_code == 404
    assert client.post(ours, json={"url": receiver.url()}, headers=other.headers).status_code == 404
    for path in (f"{ours}/{made['id']}", f"{ours}/{made['id']}/deliveries"):
        assert client.get(path, headers=other.headers).status_code == 404
    assert client.delete(f"{ours}/{made['id']}", headers=other.headers).status_code == 404
    # Nor through an agent of their own.
    theirs_path = f"/v1/agents/{theirs}/webhooks/{made['id']}"
    assert client.get(theirs_path, headers=other.headers).status_code == 404
    assert client.delete(theirs_path, headers=other.headers).status_code == 404
    assert [h["id"] for h in client.get(ours).json()] == [made["id"]]


# -- which URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "https://",
        "https://user:pw@example.com/hook",
        "https://example.com:port/",
        "https://example.com/" + "x" * 2048,
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://db.ec2.internal/hook",
    ],
)
def test_urls_that_are_refused(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        check_url(url, allow_private=False)


def test_urls_that_are_taken() -> None:
    assert check_url(" https://example.com/hook?x=1 ", allow_private=False) == (
        "https://example.com/hook?x=1"
    )
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True)
    with pytest.raises(InvalidWebhookUrl):
        check_url("ftp://127.0.0.1/", allow_private=True)


def test_a_name_for_a_private_address_is_refused_before_sending() -> None:
    # 2130706433 is 127.0.0.1 written as one number: not an address to the URL check,
    # but what the resolver makes of it is checked before each delivery.
    assert check_url("http://2130706433/hook", allow_private=False)
    assert refused_target("http://2130706433/hook") is not None
    assert refused_target("http://93.184.215.14/hook") is None


def test_the_api_refuses_a_bad_url(client: TestClient, store: Store, agent: uuid.UUID) -> None:
    response = client.post(f"/v1/agents/{agent}/webhooks", json={"url": "ftp://example.com"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_webhook_url"


def test_backoff_grows_until_its_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 10, rng) for n in range(1, 12)]
    assert all(b > a for a, b in itertools.pairwise(delays[:8]))
    assert 7.5 <= delays[0] <= 10 and max(delays) <= MAX_BACKOFF_S
    assert delays[-1] >= 0.75 * MAX_BACKOFF_S


# -- on the emulated bundle ------------------------------------------------------------------


def test_the_bundle_delivers_a_signed_reply_through_its_queue_and_retries_by_visibility(
    database_url: str,
    store: Store,
    runtime: Runtime,
    ada: Character,
    acme: TenantKey,
    receiver: Receiver,
) -> None:
    """API → ingest → state machine → finish (plans, queues) → webhook queue → function."""
    agent = runtime.register_agent(ada, acme.tenant_id)
    receiver.failures = 1
    environment = {
        "CARRIER_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        "CARRIER_WEBHOOK_BACKOFF_S": "0.05",
    }
    with Emulator(database_url, retry_interval_scale=0.01, environment=environment) as emulator:
        client = TestClient(emulator.app, headers=acme.headers)
        made = register(client, agent, receiver.url())
        turn_id = say(client, agent, "My name is Grace")

        first, second = receiver.wait_for(2, timeout=15)
        emulator.drain()

    # The first answer was 500: the message came back after the delay its function set.
    assert second.at - first.at >= 1.0
    payload = assert_signed(made["secret"], second)
    assert payload["turn_id"] == str(turn_id) and payload["type"] == "reply"
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert emulator.invocations["WebhookDeliverFunction"] == 2
    with store.connection() as conn:
        [row] = conn.execute("SELECT status, attempts FROM webhook_deliveries").fetchall()
    assert (row["status"], row["attempts"]) == ("delivered", 2)
