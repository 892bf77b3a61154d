"""Delivering replies to webhooks: planned once per reply and webhook, tried until sent.

`plan_deliveries` runs when a turn is done: one `pending` delivery per reply and
matching webhook, with the request body fixed then. `deliver` makes one attempt and
says when to try again; whoever calls it does the waiting (an SQS message's
visibility timeout in the cloud), so no process sleeps through a backoff.

An attempt is claimed in the database before the request is sent: the delivery must
be pending and due, and the claim moves its due time past the attempt's timeout. A
delivery queued twice (a retried finish step, an SQS duplicate) is therefore tried
by one message at a time, and the other finds it not due and is dropped. Receivers
may still see a request twice (at-least-once): `webhook-id` tells them it is one.

A 2xx answer delivers. Anything else (another status, a timeout, a refused
connection) is tried again after `backoff_delay`, until `webhook_max_attempts`
attempts; then the delivery is `failed` and kept, with its last status and error,
for the client to inspect through the API. Only the status, or a short reason, is
kept: never what the receiver said, which the API would show to the tenant.

An attempt connects to the addresses `targets.resolve_target` checked (not to the
name again), and all of it (resolving, connecting, TLS, sending, the answer's status
line and headers) has `webhook_timeout_s` in all: the answer's body is not read.

A delivery whose message was lost (the finish step could not queue it, or a function
died holding it) stays pending; `stale_deliveries` finds those, for a periodic sweep
to queue again.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from psycopg.rows import DictRow

from carrier_core.events import EventType
from carrier_core.memory import Content
from carrier_core.secrets import SecretStoreError

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime
    from carrier_core.store.store import Store
    from carrier_core.store.webhooks import DeliveryStatus
    from carrier_core.turn.approval import Approval
from carrier_core.webhooks.registry import signing_secret
from carrier_core.webhooks.signature import signed_headers
from carrier_core.webhooks.targets import RefusedTarget, Target, resolve_target

log = logging.getLogger(__name__)

#: The longest wait between two attempts.
MAX_BACKOFF_S = 15 * 60.0
#: A message this early for its attempt is taken as on time (the queue's clock and the
#: database's are not the same clock).
_CLOCK_SLACK_S = 1.0
#: The longest reason kept in `last_error`.
_REASON_CHARS = 200
#: A delivery never attempted this long after it was planned has lost its message (the
#: finish step queues it within seconds).
UNQUEUED_AFTER_S = 120.0
#: A pending delivery whose attempt has been due this long has lost its message: a retry's
#: message comes back when due, and one held by a function that died comes back after the
#: queue's visibility timeout (720 s in template.yaml), so keep this above that.
OVERDUE_AFTER_S = 900.0
#: The most deliveries one sweep queues again (the rest wait for the next sweep).
SWEEP_LIMIT = 500
USER_AGENT = "Carrier-Webhooks/1"


@dataclass(frozen=True)
class Outcome:
    """What one call of `deliver` did, and whether the caller should call again."""

    delivery_id: uuid.UUID
    #: The delivery's status after the call; "gone" when it (or its webhook) was deleted.
    status: DeliveryStatus | Literal["gone"]
    #: False when no request was sent: the delivery was not pending, or not due yet.
    attempted: bool
    attempts: int = 0
    last_status: int | None = None
    error: str | None = None
    #: Seconds until the next attempt is due; None when no more attempts are to be made.
    retry_in: float | None = None


def backoff_delay(attempt: int, base_s: float, rng: random.Random | None = None) -> float:
    """The wait after failed attempt number `attempt` (1 = the first): base * 2^(attempt-1),
    at most `MAX_BACKOFF_S`, less up to a quarter at random so that receivers that come
    back at once are not hit by every delivery together. Before the cap each wait is
    longer than the one before, whatever the jitter."""
    exponent = min(max(attempt, 1) - 1, 32)
    delay = min(MAX_BACKOFF_S, base_s * 2.0**exponent)
    return delay * (rng or random).uniform(0.75, 1.0)


# -- planning ----------------------------------------------------------------------------


def _payload(row: DictRow) -> dict[str, Any]:
    content = Content.model_validate(row["content"])
    return {
        "type": "reply",
        # ElizaOS's name for what happened (`carrier_core.events`), as WebSocket frames say.
        "event": EventType.MESSAGE_SENT,
        "agent_id": str(row["agent_id"]),
        "room": row["room"],
        "turn_id": str(row["turn_id"]),
        "message_id": str(row["message_id"]),
        "reply": {
            "id": str(row["id"]),
            "text": content.text,
            "actions": content.actions,
            "attachments": content.attachments,
        },
        "created_at": row["created_at"].isoformat(),
    }


def plan_deliveries(runtime: Runtime, turn_id: uuid.UUID) -> list[uuid.UUID]:
    """Plan a delivery of each message the turn's agent said in it to each of the agent's
    webhooks that covers the message's room: the turn's room for its replies, another room
    for what an action sent there (SEND_MESSAGE). Safe to call again: what is planned
    stays, and the ids of the deliveries not yet attempted are returned every time, for
    the caller to queue."""
    return runtime.store.plan_reply_deliveries(turn_id, _payload)


def plan_approval_deliveries(runtime: Runtime, approval: Approval) -> list[uuid.UUID]:
    """Plan a delivery of an approval request (`type: approval.requested`) to each webhook
    of its agent that covers the turn's room; safe to call again, like `plan_deliveries`."""
    payload = {
        "type": "approval.requested",
        "agent_id": str(approval.agent_id),
        "turn_id": str(approval.turn_id),
        "approval": approval.as_json(),
    }
    return runtime.store.plan_approval_deliveries(approval.id, approval.turn_id, payload)


def stale_deliveries(
    runtime: Runtime,
    *,
    unqueued_after_s: float = UNQUEUED_AFTER_S,
    overdue_after_s: float = OVERDUE_AFTER_S,
    limit: int = SWEEP_LIMIT,
) -> list[uuid.UUID]:
    """Pending deliveries that have most likely lost their message, oldest first, for the
    caller to queue again: never attempted `unqueued_after_s` after they were planned, or
    due (a retry, or the lease of an attempt that never finished) `overdue_after_s` ago.

    Each is marked swept, and not returned again for `overdue_after_s`: a message queued
    now has that long to be handled before it is taken for lost too. A second message
    for a delivery still queued is harmless: an attempt is claimed before it is made."""
    return runtime.store.sweep_deliveries(
        unqueued_after_s=unqueued_after_s, overdue_after_s=overdue_after_s, limit=limit
    )


# -- delivering --------------------------------------------------------------------------


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP to one address checked beforehand: the host name is only the Host header, so
    no second lookup can lead the request elsewhere. Redirects are never followed (an
    answer is an answer), and `http.client` follows none."""

    def __init__(self, target: Target, address: str, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedTlsConnection(_PinnedConnection):
    """HTTPS to one checked address: the certificate is verified against the URL's host
    name (sent as SNI), as for any HTTPS request to that name."""

    default_port = 443

    def connect(self) -> None:
        super().connect()
        # The default context: system CAs, certificate and host name checked. The socket's
        # timeout bounds the whole handshake (not each read of it).
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)


def _reason(exc: BaseException) -> str:
    """What went wrong, short, in our words: never bytes the receiver sent."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate: {exc.verify_message}"[:_REASON_CHARS]
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or type(exc).__name__}"[:_REASON_CHARS]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:_REASON_CHARS]
    if isinstance(exc, OSError) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0][:_REASON_CHARS]  # our own (resolving), never the receiver's
    # An HTTPException's message quotes what the receiver sent: its name only.
    return type(exc).__name__


def _cut(sock: socket.socket, cut: threading.Event) -> None:
    """End a socket's reads and writes from another thread (the attempt's deadline). A read
    then sees the end of the stream, which could pass for a complete answer: `cut` says it
    is not one."""
    cut.set()
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _exchange(
    connection: _PinnedConnection, target: Target, body: bytes, headers: dict[str, str]
) -> int:
    connection.request(
        "POST",
        target.path,
        body=body,
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
    )
    # The status line and headers only: the body is not read.
    return int(connection.getresponse().status)


def _send(
    target: Target, body: bytes, headers: dict[str, str], deadline: float
) -> tuple[int | None, str]:
    """POST the body to the target's first address that takes the connection, all before
    `deadline` (time.monotonic): (HTTP status or None, what went wrong or "")."""
    kind = _PinnedTlsConnection if target.scheme == "https" else _PinnedConnection
    reason = "no address"
    for address in target.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, "timed out"
        connection = kind(target, address, timeout=remaining)
        try:
            try:
                connection.connect()
            except OSError as exc:
                reason = _reason(exc)
                continue  # the next address, if there is one
            sock = connection.sock
            assert sock is not None
            # Each socket operation has the time left; the watchdog ends a receiver that
            # sends a byte now and then, which no per-operation timeout would.
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            cut = threading.Event()
            watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), _cut, (sock, cut))
            watchdog.daemon = True
            watchdog.start()
            try:
                status = _exchange(connection, target, body, headers)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                return None, "timed out" if cut.is_set() else _reason(exc)
            finally:
                watchdog.cancel()
            if cut.is_set():
                return None, "timed out"
            return status, "" if 200 <= status < 300 else f"HTTP {status}"
        finally:
            connection.close()
    return None, reason


def _unclaimed(store: Store, delivery_id: uuid.UUID) -> Outcome:
    found = store.delivery(delivery_id)
    if found is None:
        return Outcome(delivery_id, "gone", attempted=False)
    return Outcome(
        delivery_id,
        found.status,
        attempted=False,
        attempts=found.attempts,
        last_status=found.last_status,
        error=found.last_error,
    )


def deliver(runtime: Runtime, delivery_id: uuid.UUID, *, timeout: float | None = None) -> Outcome:
    """Make one attempt at a delivery, if it is pending and due, and record it."""
    settings = runtime.settings
    timeout = timeout or settings.webhook_timeout_s
    claimed = runtime.store.claim_delivery(
        delivery_id, lease_s=timeout + 30, slack_s=_CLOCK_SLACK_S
    )
    if claimed is None:
        return _unclaimed(runtime.store, delivery_id)
    attempts: int = claimed["attempts"]
    deadline = time.monotonic() + timeout
    status: int | None = None
    error: str | None
    final = attempts >= settings.webhook_max_attempts
    webhook_id: uuid.UUID = claimed["webhook_id"]
    try:
        secret = claimed["secret"] or signing_secret(runtime, webhook_id)
        target = resolve_target(
            claimed["url"], allow_private=settings.webhook_allow_private_urls, timeout=timeout
        )
    except SecretStoreError as exc:
        log.warning("webhook %s: its signing secret cannot be read: %s", webhook_id, exc)
        error = "the secret store could not be read"
    except RefusedTarget as exc:
        # Not a passing fault: the URL's host must change before a delivery can be made.
        error, final = f"refused: {exc}", True
    except OSError as exc:
        error = _reason(exc)
    else:
        if secret is None:
            # Never sent unsigned. A webhook deleted since the claim takes this record with
            # it; one still here has lost its secret (a store emptied, or another store than
            # the one it was kept in): tried again, in case the store is put right.
            log.warning("webhook %s: no signing secret in the secret store", webhook_id)
            error = "the webhook has no signing secret in the secret store"
        else:
            body = json.dumps(
                claimed["payload"], separators=(",", ":"), ensure_ascii=False
            ).encode()
            headers = signed_headers(secret, str(delivery_id), int(time.time()), body)
            status, error = _send(target, body, headers, deadline)
    retry_in = None
    new_status: DeliveryStatus
    if status is not None and 200 <= status < 300:
        new_status, error = "delivered", None
    elif final:
        new_status = "failed"
    else:
        new_status = "pending"
        retry_in = backoff_delay(attempts, settings.webhook_backoff_s)
    runtime.store.record_attempt(delivery_id, new_status, status, error, retry_in)
    # The URL and secret stay out of the log: a URL may carry a token of the receiver's.
    log.info(
        "webhook delivery %s to webhook %s: attempt %d, %s (%s)",
        delivery_id,
        webhook_id,
        attempts,
        new_status,
        error or status,
    )
    return Outcome(delivery_id, new_status, True, attempts, status, error, retry_in)
