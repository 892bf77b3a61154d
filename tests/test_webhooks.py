"""Webhooks: registered through the API, each reply POSTed to a real local receiver, signed
the Standard Webhooks way (checked with the `standardwebhooks` package and by hand),
retried with backoff, and kept when every attempt failed."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import itertools
import json
import random
import re
import socket
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook as StandardWebhook

from carrier_aws.local.emulator import Emulator, Function
from carrier_aws.local.template import STACK, load_yaml
from carrier_aws.webhooks import queue_deliveries
from carrier_core import Character, Runtime
from carrier_core.api.app import create_app
from carrier_core.models import offline_models
from carrier_core.secrets import FileSecretStore
from carrier_core.store.store import Store
from carrier_core.webhooks import (
    InvalidWebhookUrl,
    Outcome,
    backoff_delay,
    check_url,
    create_webhook,
    deliver,
    new_secret,
    plan_deliveries,
    signed_headers,
    stale_deliveries,
)
from carrier_core.webhooks.delivery import MAX_BACKOFF_S
from carrier_core.webhooks.registry import SIGNING_SECRET, move_row_secrets
from carrier_core.webhooks.targets import refused_target, resolve_target
from tests.certificates import throwaway_tls
from tests.conftest import ROOT, TenantKey, make_runtime, run_inline
from tests.dev_server import carrier_dev, offline_environment

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


@contextmanager
def serving(found: Receiver, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """Run `found` as an HTTP server on 127.0.0.1 (HTTPS with `tls`) until the block ends."""

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
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    found.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving(Receiver()) as found:
        yield found


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
        "event": "MESSAGE_SENT",
        "agent_id": str(agent),
        "room": "lobby",
        "turn_id": str(turn_id),
        "message_id": turn["message_id"],
        "reply": {
            "id": reply["id"],
            "text": reply["text"],
            "actions": reply["actions"],
            "attachments": [],
        },
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
    # Only the status: what a receiver answers is not shown back through the API.
    assert outcomes[0].error == "HTTP 500"
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
    assert failed["last_error"] == "HTTP 503"
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


# -- the signing secret --------------------------------------------------------------------


def row_secret(store: Store, webhook_id: uuid.UUID) -> str | None:
    """What the webhook's row keeps in its `secret` column."""
    with store.connection() as conn:
        row = conn.execute("SELECT secret FROM webhooks WHERE id = %s", (webhook_id,)).fetchone()
    assert row is not None
    secret: str | None = row["secret"]
    return secret


def keep_in_row(store: Store, runtime: Runtime, webhook_id: uuid.UUID) -> str:
    """Make the webhook as one made before migration 0016 is: its secret in its row only."""
    secret = new_secret()
    runtime.secrets.delete(webhook_id, owner="webhook")
    with store.connection() as conn:
        conn.execute("UPDATE webhooks SET secret = %s WHERE id = %s", (secret, webhook_id))
    return secret


def test_the_signing_secret_is_kept_in_the_secret_store_and_goes_with_its_webhook_or_agent(
    client: TestClient, hooks_runtime: Runtime, store: Store, agent: uuid.UUID, receiver: Receiver
) -> None:
    made = register(client, agent, receiver.url())
    webhook_id = uuid.UUID(made["id"])
    with store.connection() as conn:
        [row] = conn.execute("SELECT row_to_json(w)::text AS row FROM webhooks w").fetchall()
    assert made["secret"] not in row["row"] and row_secret(store, webhook_id) is None
    secrets = hooks_runtime.secrets
    assert isinstance(secrets, FileSecretStore)
    assert secrets.get(webhook_id, owner="webhook") == {SIGNING_SECRET: made["secret"]}
    file = secrets.file(webhook_id, owner="webhook")
    assert file.parent == secrets.directory / "webhooks"  # apart from agents' secrets
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    # Deliveries are signed with it.
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))
    assert deliver(hooks_runtime, delivery_id).status == "delivered"
    assert_signed(made["secret"], receiver.wait_for(1)[0])

    assert client.delete(f"/v1/agents/{agent}/webhooks/{made['id']}").status_code == 204
    assert not file.exists()
    other = uuid.UUID(register(client, agent, receiver.url(), room="lobby")["id"])
    assert secrets.file(other, owner="webhook").exists()
    assert client.delete(f"/v1/agents/{agent}").status_code == 204
    assert not secrets.file(other, owner="webhook").exists()


def test_a_webhook_whose_secret_cannot_be_kept_is_not_made(
    hooks_runtime: Runtime, acme: TenantKey, agent: uuid.UUID, tmp_path: Path
) -> None:
    blocked = tmp_path / "secrets"
    blocked.write_text("a file where the store's folder should be")
    hooks_runtime.secrets = FileSecretStore(blocked)
    app = create_app(lambda: hooks_runtime, run_inline(hooks_runtime))
    client = TestClient(app, headers=acme.headers, raise_server_exceptions=False)

    response = client.post(f"/v1/agents/{agent}/webhooks", json={"url": "http://127.0.0.1:9/"})

    assert response.status_code == 500
    assert client.get(f"/v1/agents/{agent}/webhooks").json() == []


def test_a_webhook_made_with_its_secret_in_its_row_is_signed_with_it_until_it_is_moved(
    client: TestClient,
    hooks_runtime: Runtime,
    store: Store,
    agent: uuid.UUID,
    receiver: Receiver,
    database_url: str,
) -> None:
    webhook_id = uuid.UUID(register(client, agent, receiver.url())["id"])
    secret = keep_in_row(store, hooks_runtime, webhook_id)
    [first] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))
    assert deliver(hooks_runtime, first).status == "delivered"
    assert_signed(secret, receiver.wait_for(1)[0])

    assert move_row_secrets(database_url, hooks_runtime.secrets) == 1

    assert row_secret(store, webhook_id) is None
    assert hooks_runtime.secrets.get(webhook_id, owner="webhook") == {SIGNING_SECRET: secret}
    assert move_row_secrets(database_url, hooks_runtime.secrets) == 0  # moved once
    # Deliveries read it from the store now, and sign with the same secret.
    [second] = plan_deliveries(hooks_runtime, say(client, agent, "Hello again"))
    assert deliver(hooks_runtime, second).status == "delivered"
    assert_signed(secret, receiver.wait_for(2)[1])


class PausingStore:
    """A secret store that waits at `put` until told to go on: where the migrations are
    when they hold a webhook's row while keeping its secret."""

    def __init__(self, inner: FileSecretStore):
        self.inner = inner
        self.putting, self.go_on = threading.Event(), threading.Event()

    def put(self, owner_id: uuid.UUID, secrets: Any, *, owner: Any = "agent") -> None:
        self.putting.set()
        assert self.go_on.wait(10)
        self.inner.put(owner_id, secrets, owner=owner)

    def get(self, owner_id: uuid.UUID, *, owner: Any = "agent") -> Any:
        return self.inner.get(owner_id, owner=owner)

    def delete(self, owner_id: uuid.UUID, *, owner: Any = "agent") -> None:
        self.inner.delete(owner_id, owner=owner)


def test_a_webhook_deleted_while_its_secret_is_moved_takes_the_moved_secret_with_it(
    client: TestClient,
    hooks_runtime: Runtime,
    store: Store,
    agent: uuid.UUID,
    receiver: Receiver,
    database_url: str,
) -> None:
    made = register(client, agent, receiver.url())
    webhook_id = uuid.UUID(made["id"])
    keep_in_row(store, hooks_runtime, webhook_id)
    secrets = hooks_runtime.secrets
    assert isinstance(secrets, FileSecretStore)
    pausing = PausingStore(secrets)
    moving = threading.Thread(target=move_row_secrets, args=(database_url, pausing))
    moving.start()
    assert pausing.putting.wait(10)

    # The delete waits for the row the migration holds, then deletes the moved secret too.
    deleting = threading.Thread(
        target=client.delete, args=(f"/v1/agents/{agent}/webhooks/{made['id']}",)
    )
    deleting.start()
    time.sleep(0.3)
    assert deleting.is_alive()
    pausing.go_on.set()
    moving.join(10)
    deleting.join(10)

    assert client.get(f"/v1/agents/{agent}/webhooks").json() == []
    assert not secrets.file(webhook_id, owner="webhook").exists()


def test_a_webhook_made_while_its_agent_is_deleted_leaves_no_secret(
    hooks_runtime: Runtime, store: Store, agent: uuid.UUID, receiver: Receiver
) -> None:
    """Deleting an agent locks its row before reading its webhooks: a webhook made
    meanwhile waits, finds the agent gone, and takes its secret back."""
    made: list[BaseException] = []
    secrets = hooks_runtime.secrets
    assert isinstance(secrets, FileSecretStore)
    before = set((secrets.directory / "webhooks").glob("*.json"))

    def make() -> None:
        try:
            create_webhook(hooks_runtime, agent, receiver.url())
        except BaseException as exc:
            made.append(exc)

    maker = threading.Thread(target=make)
    with store.atomic():
        assert store.lock_agent_webhooks(agent) == []
        maker.start()
        time.sleep(0.3)
        assert maker.is_alive()  # waiting for the agent's row
        assert store.delete_agent(agent)
    maker.join(10)

    assert [type(exc).__name__ for exc in made] == ["NotFound"]
    assert set((secrets.directory / "webhooks").glob("*.json")) == before


def test_a_webhook_secret_that_cannot_be_deleted_is_left_and_the_deletion_goes_on(
    client: TestClient,
    hooks_runtime: Runtime,
    agent: uuid.UUID,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = (uuid.UUID(register(client, agent, receiver.url())["id"]) for _ in "ab")
    secrets = hooks_runtime.secrets
    assert isinstance(secrets, FileSecretStore)
    stuck = secrets.file(first, owner="webhook")
    stuck.unlink()
    stuck.mkdir()  # a directory cannot be unlinked as a file: the delete fails

    assert client.delete(f"/v1/agents/{agent}/webhooks/{first}").status_code == 204
    assert client.get(f"/v1/agents/{agent}/webhooks").json()[0]["id"] == str(second)
    assert f"the signing secret of gone webhook {first} is left" in caplog.text
    # The other webhook still delivers, signed: nothing of it was taken.
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))
    assert deliver(hooks_runtime, delivery_id).status == "delivered"
    assert client.delete(f"/v1/agents/{agent}").status_code == 204
    assert not secrets.file(second, owner="webhook").exists()


def test_a_webhook_without_its_secret_is_never_sent_to_unsigned_and_is_tried_again(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, receiver: Receiver
) -> None:
    made = register(client, agent, receiver.url())
    webhook_id = uuid.UUID(made["id"])
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))
    kept = hooks_runtime.secrets.get(webhook_id, owner="webhook")
    hooks_runtime.secrets.delete(webhook_id, owner="webhook")  # a store emptied by mistake

    outcome = deliver(hooks_runtime, delivery_id)

    assert (outcome.status, outcome.error) == (
        "pending",
        "the webhook has no signing secret in the secret store",
    )
    assert outcome.retry_in is not None and receiver.requests == []
    hooks_runtime.secrets.put(webhook_id, kept, owner="webhook")  # put right
    time.sleep(outcome.retry_in)
    assert deliver(hooks_runtime, delivery_id).status == "delivered"
    assert_signed(made["secret"], receiver.wait_for(1)[0])


def test_a_delivery_whose_secret_cannot_be_read_is_tried_again_and_never_sent_unsigned(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, receiver: Receiver
) -> None:
    made = register(client, agent, receiver.url())
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))
    secrets = hooks_runtime.secrets
    assert isinstance(secrets, FileSecretStore)
    file = secrets.file(uuid.UUID(made["id"]), owner="webhook")
    kept = file.read_bytes()
    file.write_bytes(b"\xff not a secrets document")  # the store cannot read it

    outcome = deliver(hooks_runtime, delivery_id)

    assert (outcome.status, outcome.error) == ("pending", "the secret store could not be read")
    assert outcome.retry_in is not None and receiver.requests == []
    file.write_bytes(kept)
    time.sleep(outcome.retry_in)
    assert deliver(hooks_runtime, delivery_id).status == "delivered"
    assert_signed(made["secret"], receiver.wait_for(1)[0])


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
        # IPv6 addresses that carry a private IPv4 one: NAT64 (well-known and local-use),
        # 6to4, Teredo, IPv4-compatible.
        "http://[64:ff9b::a00:1]/",
        "http://[64:ff9b::7f00:1]/hook",
        "http://[64:ff9b:1::a00:1]/hook",
        "http://[::ffff:0:7f00:1]/hook",  # IPv4-translated 127.0.0.1
        "http://[fec0::1]/hook",  # site-local
        "http://[2002:a00:1::1]/hook",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
        "http://[::a00:1]/hook",
        # IPv4 addresses in the other forms the resolver (inet_aton) reads: one number,
        # hex, octal, parts left out.
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://0251.0376.0251.0376/",
        "http://169.254.43518/",
        "http://0x7f.1/hook",
        "http://127.1/",
        "http://127.1./",
        "http://0/",
        # What urlsplit takes and sending refuses: every attempt would have failed.
        "https://exa mple.com/",
        "https://example.com/a b",
        "https://example.com/hook\r\nX-Injected: 1",
        "https://example.com:0/",
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
    # A public IPv4 address behind NAT64 or 6to4 is public.
    assert check_url("http://[64:ff9b::5db8:d70e]/hook", allow_private=False)
    assert check_url("http://[2002:5db8:d70e::1]/hook", allow_private=False)
    with pytest.raises(InvalidWebhookUrl):
        check_url("ftp://127.0.0.1/", allow_private=True)


def test_a_public_address_in_a_numeric_form_is_taken_and_a_delivery_goes_to_it() -> None:
    # 1572394766 is 93.184.215.14 written as one number (and 08 is no number at all).
    assert check_url("http://1572394766/hook", allow_private=False)
    assert refused_target("http://1572394766/hook") is None
    assert check_url("http://08/hook", allow_private=False)
    target = resolve_target("http://0x5db8d70e:8080/hook", allow_private=False, timeout=1)
    assert (target.host, target.port, target.addresses) == ("0x5db8d70e", 8080, ("93.184.215.14",))


def test_a_name_for_a_private_address_is_refused_before_sending(
    dns: dict[str, list[list[str]]],
) -> None:
    # A name is not an address to the URL check, but what it resolves to is checked
    # before each delivery.
    dns["private.example.test"] = [["10.0.0.7"]]
    assert check_url("http://private.example.test/hook", allow_private=False)
    assert refused_target("http://private.example.test/hook") == (
        "private.example.test resolves to 10.0.0.7, which is not a public address"
    )
    assert refused_target("http://2130706433/hook") == (
        "2130706433 is 127.0.0.1, which is not a public address"
    )
    assert refused_target("http://93.184.215.14/hook") is None


def test_the_api_refuses_a_bad_url(client: TestClient, store: Store, agent: uuid.UUID) -> None:
    response = client.post(f"/v1/agents/{agent}/webhooks", json={"url": "ftp://example.com"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_webhook_url"


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2852039166", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("127.1", "127.0.0.1"),
        ("0", "0.0.0.0"),
    ],
)
def test_the_api_refuses_a_private_address_in_a_numeric_form_as_it_refuses_a_dotted_one(
    store: Store, acme: TenantKey, ada: Character, host: str, address: str
) -> None:
    strict = make_runtime(store, offline_models())
    agent = strict.register_agent(ada, acme.tenant_id)
    hooks = f"/v1/agents/{agent}/webhooks"
    with TestClient(
        create_app(lambda: strict, run_inline(strict)), headers=acme.headers
    ) as strict_client:
        dotted = strict_client.post(hooks, json={"url": f"http://{address}/hook"})
        numeric = strict_client.post(hooks, json={"url": f"http://{host}/hook"})
        assert strict_client.get(hooks).json() == []
    assert (dotted.status_code, numeric.status_code) == (422, 422)
    assert dotted.json()["error"]["code"] == numeric.json()["error"]["code"]
    assert numeric.json()["error"] == {
        "code": "invalid_webhook_url",
        "message": f"body.url: a webhook URL must point at a public address ({host} is {address},"
        " which is not a public address)",
    }


def test_the_api_takes_a_numeric_private_address_when_private_urls_are_allowed(
    client: TestClient, agent: uuid.UUID
) -> None:
    assert register(client, agent, "http://127.1:9/hook")["url"] == "http://127.1:9/hook"


def test_backoff_grows_until_its_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 10, rng) for n in range(1, 12)]
    assert all(b > a for a, b in itertools.pairwise(delays[:8]))
    assert 7.5 <= delays[0] <= 10 and max(delays) <= MAX_BACKOFF_S
    assert delays[-1] >= 0.75 * MAX_BACKOFF_S


# -- on the emulated bundle ------------------------------------------------------------------


def in_secrets_manager(webhook_id: uuid.UUID | str) -> str:
    """The emulated Secrets Manager's secret of the webhook (the template's prefix)."""
    secret = boto3.client("secretsmanager").get_secret_value(
        SecretId=f"carrier/{STACK}/webhooks/{webhook_id}"
    )
    return str(secret["SecretString"])


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
        # Its secret is a Secrets Manager secret of the webhooks' prefix, not in its row.
        assert made["secret"] in in_secrets_manager(made["id"])
        assert row_secret(store, uuid.UUID(made["id"])) is None
        assert emulator.api_calls["ApiFunction", "secretsmanager", "CreateSecret"] == 1
        # Read once by the webhook function, then from its cache for the retry.
        assert emulator.api_calls["WebhookDeliverFunction", "secretsmanager", "GetSecretValue"] == 1

    # The first answer was 500: the message came back after the delay its function set.
    assert second.at - first.at >= 1.0
    payload = assert_signed(made["secret"], second)
    assert payload["turn_id"] == str(turn_id) and payload["type"] == "reply"
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert len(receiver.requests) == 2
    with store.connection() as conn:
        [row] = conn.execute("SELECT status, attempts FROM webhook_deliveries").fetchall()
    assert (row["status"], row["attempts"]) == ("delivered", 2)


def test_a_deploy_moves_signing_secrets_out_of_their_rows_into_secrets_manager(
    database_url: str,
    store: Store,
    runtime: Runtime,
    ada: Character,
    acme: TenantKey,
    receiver: Receiver,
) -> None:
    """The migrate function (the stack's DatabaseMigrations, run as the emulator starts)
    moves a webhook's secret from its row to Secrets Manager; deliveries sign with it."""
    agent = runtime.register_agent(ada, acme.tenant_id)
    webhook_id, secret = uuid.uuid4(), new_secret()
    with store.connection() as conn:  # a webhook as made before migration 0016
        conn.execute(
            "INSERT INTO webhooks (id, tenant_id, agent_id, url, secret)"
            " VALUES (%s, %s, %s, %s, %s)",
            (webhook_id, acme.tenant_id, agent, receiver.url(), secret),
        )
    environment = {"CARRIER_WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
    with Emulator(database_url, environment=environment) as emulator:
        assert row_secret(store, webhook_id) is None
        assert secret in in_secrets_manager(webhook_id)
        say(TestClient(emulator.app, headers=acme.headers), agent, "Hello")
        [received] = receiver.wait_for(1, timeout=15)
        emulator.drain()
    assert_signed(secret, received)


def secrets_manager_grants(function: str) -> dict[str, set[str]]:
    """What the template lets a function do to the secrets of each prefix (`agents`,
    `webhooks`): the Secrets Manager actions of its policies, by the prefix they name."""
    policies = load_yaml(ROOT / "template.yaml")["Resources"][function]["Properties"]["Policies"]
    grants: dict[str, set[str]] = {}

    def grant(actions: list[str], resources: Any) -> None:
        for resource in resources if isinstance(resources, list) else [resources]:
            found = re.search(r"secret:carrier/\$\{AWS::StackName\}/(\w+)/\*", str(resource))
            if found:
                grants.setdefault(found[1], set()).update(actions)

    for policy in policies:
        if "AWSSecretsManagerGetSecretValuePolicy" in policy:
            arn = policy["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"]
            grant(["secretsmanager:GetSecretValue"], arn)
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = statement["Action"]
            grant(actions if isinstance(actions, list) else [actions], statement["Resource"])
    return grants


def test_only_api_and_migrate_write_webhook_secrets_and_only_delivery_reads_them() -> None:
    write = {"secretsmanager:CreateSecret", "secretsmanager:PutSecretValue"}
    assert secrets_manager_grants("WebhookDeliverFunction") == {
        "webhooks": {"secretsmanager:GetSecretValue"}
    }
    api = secrets_manager_grants("ApiFunction")
    assert write | {"secretsmanager:DeleteSecret"} <= api["webhooks"]
    assert write <= secrets_manager_grants("MigrateFunction")["webhooks"]
    # The turn functions read agents' secrets (a plugin's keys), never a webhook's.
    for function in ("LlmStepFunction", "ActionExecFunction"):
        assert secrets_manager_grants(function) == {"agents": {"secretsmanager:GetSecretValue"}}


NOT_LOOPBACK_NOTICE = (
    "carrier: serving on 0.0.0.0, which is not a loopback address:"
    " webhook URLs on private addresses are refused"
)


@pytest.mark.parametrize(
    ("args", "status", "notice"),
    [
        ((), 201, False),
        (("--no-private-webhooks",), 422, False),
        (("--host", "0.0.0.0"), 422, True),
    ],
)
def test_carrier_dev_takes_private_webhooks_only_on_a_loopback_host_unless_told_not_to(
    database_url: str,
    store: Store,
    tmp_path: Path,
    args: tuple[str, ...],
    status: int,
    notice: bool,
) -> None:
    """Even with the developer's shell allowing private URLs: the flag and the host decide."""
    env = offline_environment(
        DATABASE_URL=database_url,
        CARRIER_HOME=str(tmp_path),
        CARRIER_WEBHOOK_ALLOW_PRIVATE_URLS="true",
    )
    ada = str(ROOT / "characters" / "ada.json")
    with carrier_dev(env, tmp_path / "dev.log", "--character", ada, *args) as dev:
        found = re.search(r"agent ada \(Ada\): (\S+)", dev.log.read_text())
        assert found is not None, dev.log.read_text()
        response = httpx.post(
            f"{dev.base}/v1/agents/{found[1]}/webhooks",
            json={"url": "http://127.0.0.1:9/hook"},
            headers={"Authorization": f"Bearer {(tmp_path / 'dev-api-key').read_text().strip()}"},
        )
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["error"]["code"] == "invalid_webhook_url"
    lines = dev.log.read_text().splitlines()
    assert (NOT_LOOPBACK_NOTICE in lines) is notice


def test_carrier_dev_keeps_webhook_secrets_across_a_restart(
    database_url: str, store: Store, tmp_path: Path, receiver: Receiver
) -> None:
    """The database keeps the webhook; its secret must outlive the process too (moto's
    Secrets Manager would not): the file store under CARRIER_HOME keeps it."""
    env = offline_environment(DATABASE_URL=database_url, CARRIER_HOME=str(tmp_path))
    ada = str(ROOT / "characters" / "ada.json")
    with carrier_dev(env, tmp_path / "first.log", "--character", ada) as dev:
        found = re.search(r"agent ada \(Ada\): (\S+)", dev.log.read_text())
        assert found is not None, dev.log.read_text()
        agent = found[1]
        key = {"Authorization": f"Bearer {(tmp_path / 'dev-api-key').read_text().strip()}"}
        made = httpx.post(
            f"{dev.base}/v1/agents/{agent}/webhooks", json={"url": receiver.url()}, headers=key
        ).json()
    kept = FileSecretStore(tmp_path / "secrets").get(uuid.UUID(made["id"]), owner="webhook")
    assert kept == {SIGNING_SECRET: made["secret"]}

    with carrier_dev(env, tmp_path / "second.log") as dev:
        posted = httpx.post(
            f"{dev.base}/v1/agents/{agent}/rooms/lobby/messages",
            json={"text": "Hello again", "sender": "grace"},
            headers=key,
        )
        assert posted.status_code == 202, posted.text
        [received] = receiver.wait_for(1, timeout=30)
    assert_signed(made["secret"], received)


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ('{"url": "https://example.com/ho\\u0000ok"}', "body.url"),
        ('{"url": "https://example.com/\\ud800"}', "body.url"),
        ('{"url": "https://example.com/hook", "room": "lo\\u0000bby"}', "body.room"),
        ('{"url": "https://example.com/hook", "room": "lo\\udfffbby"}', "body.room"),
    ],
)
def test_text_postgres_cannot_store_is_a_422_naming_its_field(
    client: TestClient, agent: uuid.UUID, body: str, field_name: str
) -> None:
    response = client.post(
        f"/v1/agents/{agent}/webhooks",
        content=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["message"].startswith(field_name)
    assert client.get(f"/v1/agents/{agent}/webhooks").json() == []


# -- where a request goes: the address checked, and no longer than the deadline -------------


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """A resolver for the names a test gives: each lookup of a name answers the next list of
    addresses (the last list again once they run out); other names resolve as usual."""
    answers: dict[str, list[list[str]]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        queue = answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [found for a in addresses for found in real(a, port, *args, **kwargs)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def internet(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """No test reaches the internet: a connection to a public address is refused (and the
    address kept); any other connection is made as usual."""
    tried: list[tuple[str, int]] = []
    real = socket.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        try:
            public = ipaddress.ip_address(address[0]).is_global
        except ValueError:
            public = False
        if public:
            tried.append((address[0], address[1]))
            raise ConnectionRefusedError(111, "Connection refused")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return tried


def test_a_name_that_rebinds_to_a_private_address_after_the_check_is_not_followed(
    client: TestClient,
    store: Store,
    agent: uuid.UUID,
    receiver: Receiver,
    dns: dict[str, list[list[str]]],
    internet: list[tuple[str, int]],
) -> None:
    strict = make_runtime(store, offline_models(), webhook_timeout_s=2)
    register(client, agent, f"http://rebind.test:{receiver.port}/hook")
    # Public when checked, loopback for whoever asks again.
    dns["rebind.test"] = [["93.184.215.14"], ["127.0.0.1"]]
    [delivery_id] = plan_deliveries(strict, say(client, agent, "Hello"))

    outcome = deliver(strict, delivery_id)

    assert receiver.requests == []
    assert internet == [("93.184.215.14", receiver.port)]
    assert (outcome.status, outcome.last_status) == ("pending", None)
    assert outcome.error is not None and "refused" in outcome.error.lower()


def test_a_delivery_tries_the_next_address_and_names_its_host(
    client: TestClient,
    hooks_runtime: Runtime,
    agent: uuid.UUID,
    receiver: Receiver,
    dns: dict[str, list[list[str]]],
) -> None:
    register(client, agent, f"http://hook.example.test:{receiver.port}/hook")
    # Nothing listens on 127.0.0.2: refused, then 127.0.0.1 answers.
    dns["hook.example.test"] = [["127.0.0.2", "127.0.0.1"]]
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))

    assert deliver(hooks_runtime, delivery_id).status == "delivered"

    [received] = receiver.requests
    assert received.headers["host"] == f"hook.example.test:{receiver.port}"


def tls_context_for(tmp_path: Path, host: str) -> tuple[ssl.SSLContext, Path]:
    """A server context whose certificate names `host`, and the file of the CA that signed it."""
    tls = throwaway_tls(tmp_path, host)
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(tls.certificate)
    key_file.write_bytes(tls.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, tls.ca_file


def test_https_is_sent_to_the_checked_address_and_verified_against_the_hosts_name(
    client: TestClient,
    hooks_runtime: Runtime,
    agent: uuid.UUID,
    dns: dict[str, list[list[str]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls, ca_file = tls_context_for(tmp_path, "hook.example.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # what the default context trusts
    dns["hook.example.test"] = dns["other.example.test"] = [["127.0.0.1"]]
    with serving(Receiver(), tls) as found:
        good = register(client, agent, f"https://hook.example.test:{found.port}/hook")
        register(client, agent, f"https://other.example.test:{found.port}/other")
        planned = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))
        outcomes = [deliver(hooks_runtime, delivery_id) for delivery_id in planned]

    statuses = sorted((o.status, o.error or "") for o in outcomes)
    assert statuses[0] == ("delivered", "")
    # The certificate names hook.example.test, not other.example.test (nor 127.0.0.1).
    assert statuses[1][0] == "pending" and "certificate" in statuses[1][1].lower()
    [received] = found.requests
    assert received.path == "/hook"
    assert received.headers["host"] == f"hook.example.test:{found.port}"
    assert_signed(good["secret"], received)


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 whose every connection is given to `answer` after the request
    has been read: for receivers no HTTP server library would write."""

    answer: Callable[[socket.socket], None] = lambda conn: None
    port: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    found = RawServer()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    found.port = listener.getsockname()[1]

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                found.answer(conn)
            except OSError:
                pass

    def serve() -> None:
        while not found.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield found
    found.stop.set()
    thread.join()
    listener.close()


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_attempts_deadline(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, raw_server: RawServer
) -> None:
    def drip(conn: socket.socket) -> None:
        # Always a byte within the socket timeout; the headers never end (for 10 s).
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(200):
            if raw_server.stop.wait(0.05):
                return
            conn.sendall(b"a")
        conn.sendall(b"\r\n\r\n")

    raw_server.answer = drip
    register(client, agent, raw_server.url())
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))

    started = time.monotonic()
    outcome = deliver(hooks_runtime, delivery_id, timeout=1.0)

    assert time.monotonic() - started < 2.5
    assert (outcome.status, outcome.last_status, outcome.error) == ("pending", None, "timed out")


def test_what_a_receiver_says_is_not_kept_in_last_error(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, raw_server: RawServer
) -> None:
    # Not HTTP at all: an internal service's banner must not come back through the API.
    raw_server.answer = lambda conn: conn.sendall(b"+OK redis-secret-banner 7.2\r\n")
    register(client, agent, raw_server.url())
    [delivery_id] = plan_deliveries(hooks_runtime, say(client, agent, "Hello"))

    outcome = deliver(hooks_runtime, delivery_id)

    assert outcome.status == "pending" and outcome.error
    assert "secret" not in outcome.error and "redis" not in outcome.error
    found = hooks_runtime.store.delivery(delivery_id)
    assert found is not None and found.last_error == outcome.error


# -- the sweep: deliveries whose message was lost -----------------------------------------------


def backdate(store: Store, delivery_id: uuid.UUID, minutes: float) -> None:
    """Move every time of a delivery back, as if it had all happened that long ago."""
    with store.connection() as conn:
        conn.execute(
            "UPDATE webhook_deliveries SET created_at = created_at - %(d)s,"
            " updated_at = updated_at - %(d)s, next_attempt_at = next_attempt_at - %(d)s,"
            " swept_at = swept_at - %(d)s WHERE id = %(id)s",
            {"d": dt.timedelta(minutes=minutes), "id": delivery_id},
        )


def test_the_sweep_finds_deliveries_never_queued_or_long_overdue_and_each_once_a_while(
    client: TestClient, hooks_runtime: Runtime, agent: uuid.UUID, receiver: Receiver, store: Store
) -> None:
    register(client, agent, receiver.url())
    never, overdue, done, fresh = (
        plan_deliveries(hooks_runtime, say(client, agent, f"Hello {n}"))[0] for n in range(4)
    )
    receiver.failures = 1
    assert deliver(hooks_runtime, overdue).status == "pending"  # and its message lost since
    assert deliver(hooks_runtime, done).status == "delivered"
    assert stale_deliveries(hooks_runtime) == []  # all too recent: their messages may be queued

    for delivery_id in (never, overdue, done):
        backdate(store, delivery_id, minutes=30)

    assert stale_deliveries(hooks_runtime) == [never, overdue]
    # Queued again: left alone while that message has time to be handled ...
    assert stale_deliveries(hooks_runtime) == []
    # ... and found again if it is lost too.
    backdate(store, never, minutes=30)
    assert stale_deliveries(hooks_runtime) == [never]
    assert fresh not in stale_deliveries(hooks_runtime)


def test_the_sweep_schedule_queues_again_a_delivery_whose_message_was_lost(
    database_url: str,
    store: Store,
    runtime: Runtime,
    ada: Character,
    acme: TenantKey,
    receiver: Receiver,
) -> None:
    agent = runtime.register_agent(ada, acme.tenant_id)
    sweep = json.loads((ROOT / "events" / "webhook_sweep_schedule.json").read_text())
    environment = {"CARRIER_WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
    with Emulator(database_url, retry_interval_scale=0.01, environment=environment) as emulator:
        client = TestClient(emulator.app, headers=acme.headers)
        turn_id = say(client, agent, "My name is Grace")
        emulator.drain()
        made = register(client, agent, receiver.url())
        # What a finish step planned before SQS refused its message.
        [delivery_id] = plan_deliveries(runtime, turn_id)
        function = emulator.functions["WebhookDeliverFunction"]

        assert emulator.call(function, sweep) == {"queued": 0}  # its message may be on the way
        backdate(store, delivery_id, minutes=10)
        assert emulator.call(function, sweep) == {"queued": 1}

        [received] = receiver.wait_for(1, timeout=15)
        emulator.drain()

    assert received.headers["webhook-id"] == str(delivery_id)
    assert_signed(made["secret"], received)
    found = store.delivery(delivery_id)
    assert found is not None and (found.status, found.attempts) == ("delivered", 1)


def finish_event(store: Store, turn_id: uuid.UUID, **extra: Any) -> dict[str, Any]:
    """What the state machine sends the finish step for this turn."""
    room_id = store.turn(turn_id).room_id
    event = {"op": "finish", "turn_id": str(turn_id), "room_id": str(room_id), "generation": 1}
    return event | extra


def test_a_turn_that_failed_after_storing_a_reply_still_sends_it(
    database_url: str,
    store: Store,
    runtime: Runtime,
    ada: Character,
    acme: TenantKey,
    receiver: Receiver,
) -> None:
    agent = runtime.register_agent(ada, acme.tenant_id)
    environment = {"CARRIER_WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
    with Emulator(database_url, retry_interval_scale=0.01, environment=environment) as emulator:
        client = TestClient(emulator.app, headers=acme.headers)
        turn_id = say(client, agent, "My name is Grace")
        emulator.drain()
        made = register(client, agent, receiver.url())
        # As if a step after the reply had failed, before the turn could end: the Catch
        # hands its error to the finish step.
        with store.connection() as conn:
            conn.execute("UPDATE turns SET status = 'running' WHERE id = %s", (turn_id,))
        failure = {"Error": "States.Timeout", "Cause": "the evaluate step timed out"}
        finished = emulator.call(
            emulator.functions["TurnFinishFunction"],
            finish_event(store, turn_id, error=failure),
        )
        assert finished["turn_id"] is None  # nothing else to answer in the room
        assert store.turn(turn_id).status == "failed"

        [received] = receiver.wait_for(1, timeout=15)
        emulator.drain()

    payload = assert_signed(made["secret"], received)
    assert payload["turn_id"] == str(turn_id) and payload["type"] == "reply"


def test_a_turn_ends_only_with_its_deliveries_planned(
    database_url: str,
    store: Store,
    runtime: Runtime,
    ada: Character,
    acme: TenantKey,
    receiver: Receiver,
) -> None:
    """If planning fails, the finish step fails whole (the state machine retries it): a turn
    never ends with its replies' deliveries unplanned, which no sweep could find."""
    agent = runtime.register_agent(ada, acme.tenant_id)
    environment = {"CARRIER_WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
    with Emulator(database_url, retry_interval_scale=0.01, environment=environment) as emulator:
        client = TestClient(emulator.app, headers=acme.headers)
        turn_id = say(client, agent, "My name is Grace")
        emulator.drain()
        register(client, agent, receiver.url())
        with store.connection() as conn:
            conn.execute("UPDATE turns SET status = 'running' WHERE id = %s", (turn_id,))
            conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'deliveries refused'; END $$;"
                " CREATE TRIGGER refuse BEFORE INSERT ON webhook_deliveries"
                " FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        finish = emulator.functions["TurnFinishFunction"]
        try:
            with pytest.raises(Exception, match="deliveries refused"):
                emulator.call(finish, finish_event(store, turn_id))
            assert store.turn(turn_id).status == "running"  # not finished without its plan
        finally:
            with store.connection() as conn:
                conn.execute("DROP TRIGGER refuse ON webhook_deliveries; DROP FUNCTION refuse()")
        emulator.call(finish, finish_event(store, turn_id))
        assert store.turn(turn_id).status == "done"
        assert len(receiver.wait_for(1, timeout=15)) == 1
        emulator.drain()


# -- the function's time --------------------------------------------------------------------


def test_the_function_leaves_records_for_later_when_its_time_runs_low(
    database_url: str,
    client: TestClient,
    hooks_runtime: Runtime,
    agent: uuid.UUID,
    receiver: Receiver,
) -> None:
    register(client, agent, receiver.url())
    planned = [plan_deliveries(hooks_runtime, say(client, agent, f"Hi {n}"))[0] for n in range(2)]
    with Emulator(database_url, poll=False) as emulator:
        queue_url = emulator.queue_url("WebhookQueue")
        queue_deliveries(emulator.sqs, queue_url, planned)
        messages = emulator.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600
        )["Messages"]
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:WebhookQueue",
                    "awsRegion": "us-east-1",
                }
                for m in messages
            ]
        }
        function = emulator.functions["WebhookDeliverFunction"]
        # Less time left than one attempt may take (CARRIER_WEBHOOK_TIMEOUT_S).
        short = Function(dataclasses.replace(function.spec, timeout_s=5), function.module)

        result = short.call(event)

        assert result == {
            "batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]
        }
        assert receiver.requests == []
        # Not tried, and back on the queue at once for another invocation.
        again = emulator.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        assert len(again.get("Messages", [])) == 2
    for delivery_id in planned:
        found = hooks_runtime.store.delivery(delivery_id)
        assert found is not None and (found.status, found.attempts) == ("pending", 0)


def test_the_webhook_function_can_try_a_whole_batch_well_within_its_timeout_and_sweeps() -> None:
    function = load_yaml(ROOT / "template.yaml")["Resources"]["WebhookDeliverFunction"]
    props = function["Properties"]
    per_attempt = float(props["Environment"]["Variables"]["CARRIER_WEBHOOK_TIMEOUT_S"])
    events = list(props["Events"].values())
    [queue] = [e["Properties"] for e in events if e["Type"] == "SQS"]
    assert queue["BatchSize"] * per_attempt <= props["Timeout"] / 2
    [schedule] = [e["Properties"] for e in events if e["Type"] == "Schedule"]
    assert str(schedule["Schedule"]).startswith("rate(")
