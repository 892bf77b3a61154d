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
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from carrier_core.events import EventType
from carrier_core.memory import Content
from carrier_core.runtime import Runtime
from carrier_core.store import Store, where

if TYPE_CHECKING:
    from carrier_core.turn.approval import Approval
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

DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True)
class Delivery:
    id: uuid.UUID
    webhook_id: uuid.UUID
    #: The reply delivered; None for an approval request (`approval_id`).
    memory_id: uuid.UUID | None
    turn_id: uuid.UUID
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    #: The HTTP status of the last attempt; None if it got no answer.
    last_status: int | None
    last_error: str | None
    #: When a pending delivery is tried next (None before its first attempt).
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    seq: int


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
    with runtime.store.transaction() as conn:
        planned = conn.execute(
            "SELECT w.id AS webhook_id, m.id, m.content, m.created_at, t.id AS turn_id,"
            " t.agent_id, t.message_id, r.name AS room FROM turns t"
            " JOIN memories m ON m.turn_id = t.id AND m.kind = 'message'"
            " AND m.entity_id = t.agent_id"
            " JOIN rooms r ON r.id = m.room_id"
            " JOIN webhooks w ON w.agent_id = t.agent_id"
            " AND (w.room_id IS NULL OR w.room_id = m.room_id)"
            " WHERE t.id = %s ORDER BY w.created_at, w.id, m.seq",
            (turn_id,),
        ).fetchall()
        if planned:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO webhook_deliveries (id, webhook_id, memory_id, turn_id, payload)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (webhook_id, memory_id) DO NOTHING",
                    [
                        (uuid.uuid4(), row["webhook_id"], row["id"], turn_id, Jsonb(_payload(row)))
                        for row in planned
                    ],
                )
        pending = conn.execute(
            "SELECT id FROM webhook_deliveries WHERE turn_id = %s AND status = 'pending'"
            " AND attempts = 0 ORDER BY seq",
            (turn_id,),
        ).fetchall()
    return [row["id"] for row in pending]


def plan_approval_deliveries(runtime: Runtime, approval: Approval) -> list[uuid.UUID]:
    """Plan a delivery of an approval request (`type: approval.requested`) to each webhook
    of its agent that covers the turn's room; safe to call again, like `plan_deliveries`."""
    payload = {
        "type": "approval.requested",
        "agent_id": str(approval.agent_id),
        "turn_id": str(approval.turn_id),
        "approval": approval.as_json(),
    }
    with runtime.store.transaction() as conn:
        conn.execute(
            "INSERT INTO webhook_deliveries (id, webhook_id, approval_id, turn_id, payload)"
            " SELECT gen_random_uuid(), w.id, %s, t.id, %s FROM webhooks w"
            " JOIN turns t ON t.agent_id = w.agent_id"
            " WHERE t.id = %s AND (w.room_id IS NULL OR w.room_id = t.room_id)"
            " ON CONFLICT (webhook_id, approval_id) WHERE approval_id IS NOT NULL DO NOTHING",
            (approval.id, Jsonb(payload), approval.turn_id),
        )
        pending = conn.execute(
            "SELECT id FROM webhook_deliveries WHERE approval_id = %s AND status = 'pending'"
            " AND attempts = 0 ORDER BY seq",
            (approval.id,),
        ).fetchall()
    return [row["id"] for row in pending]


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
    with runtime.store.connection() as conn:
        rows = conn.execute(
            "UPDATE webhook_deliveries SET swept_at = now() WHERE id IN ("
            " SELECT id FROM webhook_deliveries WHERE status = 'pending'"
            " AND (swept_at IS NULL OR swept_at < now() - make_interval(secs => %(overdue)s))"
            " AND ((attempts = 0 AND created_at < now() - make_interval(secs => %(unqueued)s))"
            " OR next_attempt_at < now() - make_interval(secs => %(overdue)s))"
            " ORDER BY created_at, seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " RETURNING id, created_at, seq",
            {"overdue": overdue_after_s, "unqueued": unqueued_after_s, "limit": limit},
        ).fetchall()
    return [row["id"] for row in sorted(rows, key=lambda row: (row["created_at"], row["seq"]))]


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


def _claim(store: Store, delivery_id: uuid.UUID, lease_s: float) -> DictRow | None:
    with store.connection() as conn:
        return conn.execute(
            "UPDATE webhook_deliveries d SET attempts = d.attempts + 1, updated_at = now(),"
            " next_attempt_at = now() + make_interval(secs => %s)"
            " FROM webhooks w WHERE d.id = %s AND w.id = d.webhook_id AND d.status = 'pending'"
            " AND (d.next_attempt_at IS NULL"
            " OR d.next_attempt_at <= now() + make_interval(secs => %s))"
            " RETURNING d.attempts, d.payload, d.webhook_id, w.url, w.secret",
            (lease_s, delivery_id, _CLOCK_SLACK_S),
        ).fetchone()


def _unclaimed(store: Store, delivery_id: uuid.UUID) -> Outcome:
    with store.connection() as conn:
        row = conn.execute(
            "SELECT status, attempts, last_status, last_error FROM webhook_deliveries"
            " WHERE id = %s",
            (delivery_id,),
        ).fetchone()
    if row is None:
        return Outcome(delivery_id, "gone", attempted=False)
    return Outcome(
        delivery_id,
        row["status"],
        attempted=False,
        attempts=row["attempts"],
        last_status=row["last_status"],
        error=row["last_error"],
    )


def _record(
    store: Store,
    delivery_id: uuid.UUID,
    status: DeliveryStatus,
    last_status: int | None,
    error: str | None,
    retry_in: float | None,
) -> None:
    with store.connection() as conn:
        conn.execute(
            "UPDATE webhook_deliveries SET status = %s, last_status = %s, last_error = %s,"
            " next_attempt_at = CASE WHEN %s::float8 IS NULL THEN NULL"
            " ELSE now() + make_interval(secs => %s::float8) END, updated_at = now()"
            " WHERE id = %s",
            (status, last_status, error, retry_in, retry_in, delivery_id),
        )


def deliver(runtime: Runtime, delivery_id: uuid.UUID, *, timeout: float | None = None) -> Outcome:
    """Make one attempt at a delivery, if it is pending and due, and record it."""
    settings = runtime.settings
    timeout = timeout or settings.webhook_timeout_s
    claimed = _claim(runtime.store, delivery_id, lease_s=timeout + 30)
    if claimed is None:
        return _unclaimed(runtime.store, delivery_id)
    attempts: int = claimed["attempts"]
    deadline = time.monotonic() + timeout
    status: int | None = None
    error: str | None
    final = attempts >= settings.webhook_max_attempts
    try:
        target = resolve_target(
            claimed["url"], allow_private=settings.webhook_allow_private_urls, timeout=timeout
        )
    except RefusedTarget as exc:
        # Not a passing fault: the URL's host must change before a delivery can be made.
        error, final = f"refused: {exc}", True
    except OSError as exc:
        error = _reason(exc)
    else:
        body = json.dumps(claimed["payload"], separators=(",", ":"), ensure_ascii=False).encode()
        headers = signed_headers(claimed["secret"], str(delivery_id), int(time.time()), body)
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
    _record(runtime.store, delivery_id, new_status, status, error, retry_in)
    # The URL and secret stay out of the log: a URL may carry a token of the receiver's.
    log.info(
        "webhook delivery %s to webhook %s: attempt %d, %s (%s)",
        delivery_id,
        claimed["webhook_id"],
        attempts,
        new_status,
        error or status,
    )
    return Outcome(delivery_id, new_status, True, attempts, status, error, retry_in)


# -- inspecting ----------------------------------------------------------------------------

_DELIVERY_COLUMNS = (
    "id, webhook_id, memory_id, turn_id, payload, status, attempts, last_status, last_error,"
    " next_attempt_at, created_at, updated_at, seq"
)


def webhook_deliveries(
    store: Store,
    webhook_id: uuid.UUID,
    *,
    limit: int,
    status: DeliveryStatus | None = None,
    before_seq: int | None = None,
) -> list[Delivery]:
    """A page of a webhook's deliveries, newest first (keyset: `before_seq` the last seq)."""
    filters, params = where(
        ("webhook_id = %s", webhook_id), ("status = %s", status), ("seq < %s", before_seq)
    )
    with store.connection() as conn:
        rows = conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries"
            f" WHERE {filters} ORDER BY seq DESC LIMIT %s".encode(),
            [*params, limit],
        ).fetchall()
    return [Delivery(**row) for row in rows]


def delivery(store: Store, delivery_id: uuid.UUID) -> Delivery | None:
    with store.connection() as conn:
        row = conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = %s", (delivery_id,)
        ).fetchone()
    return None if row is None else Delivery(**row)
