"""Webhook deliveries on SQS: one message `{"delivery_id"}` per delivery (with the turn's
`turn_id` and `message_id`, for the logs, when the finish step queued it).

The queue does the waiting between attempts. When an attempt fails and another is
due later, the message's visibility timeout is set to the backoff and the record is
reported failed: SQS hands it out again once the delay is over, and no function
waits. A delivered or finally failed delivery's message is let go (deleted).

A function whose time runs low takes no new record: it hands the rest back at once
(`NoTimeLeft`), rather than being stopped mid-attempt. A message lost on the way (the
finish step could not queue it, a function died holding it) is found by the sweep: the
same function, on a schedule, queues again what `stale_deliveries` finds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from carrier_core.events import run_ended
from carrier_core.turn.schedule import end_turn
from carrier_core.webhooks import Outcome, deliver, plan_deliveries, stale_deliveries

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime
    from carrier_core.store.runners import NextTurn, Runner
    from carrier_core.store.turns import TurnEnd

log = logging.getLogger(__name__)

#: SQS's longest visibility timeout (12 hours).
MAX_VISIBILITY_S = 43200
#: Time kept beyond an attempt's own (`webhook_timeout_s`) for its database calls and the
#: batch's answer: with less left, a record is handed back untried.
TIME_MARGIN_S = 5.0


class RetryLater(Exception):
    """Raised for a record to report it failed: its message comes back after `delay_s`."""

    def __init__(self, outcome: Outcome, delay_s: int):
        super().__init__(
            f"delivery {outcome.delivery_id}: attempt {outcome.attempts} failed"
            f" ({outcome.error}); next in {delay_s}s"
        )
        self.outcome = outcome
        self.delay_s = delay_s


class NoTimeLeft(Exception):
    """Raised for a record the function has no time left to try: it comes back at once."""


def is_scheduled(event: Any) -> bool:
    """Whether an event is EventBridge's, from a schedule (the sweep) rather than SQS's."""
    return (
        isinstance(event, dict)
        and event.get("source") == "aws.events"
        and event.get("detail-type") == "Scheduled Event"
    )


def queue_deliveries(
    sqs: Any,
    queue_url: str,
    delivery_ids: Sequence[uuid.UUID],
    ids: Mapping[str, str] | None = None,
) -> None:
    """Queue each delivery (ten to a request); raises if SQS refuses any of them. `ids`,
    the turn's correlation ids, ride along for the delivering function's log lines."""
    for start in range(0, len(delivery_ids), 10):
        chunk = delivery_ids[start : start + 10]
        sent = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": str(n),
                    "MessageBody": json.dumps({"delivery_id": str(delivery_id), **(ids or {})}),
                }
                for n, delivery_id in enumerate(chunk)
            ],
        )
        failed = sent.get("Failed") or []
        if failed:
            raise RuntimeError(f"SQS refused {len(failed)} webhook deliveries: {failed[0]}")


def finish_turn_and_plan_deliveries(
    runtime: Runtime,
    turn_id: uuid.UUID,
    error: str | None,
    *,
    timed_out: bool = False,
    runner: Runner | None = None,
) -> tuple[TurnEnd | None, list[uuid.UUID], NextTurn | None]:
    """Finish the turn and plan its replies' webhook deliveries in one transaction, so no
    delivery is ever left unplanned: the sweep can find a planned delivery whose message
    was lost, never one that was not planned. None are planned where `WEBHOOK_QUEUE_URL`
    is unset. Failed or not, the replies a turn stored were said, so they are sent.
    The end's plugin events fire once that is committed (`timed_out`: RUN_TIMEOUT too).
    With the room's `runner`, the room's next turn is taken in the end's own statement.
    Returns the turn's end (None if it had ended already), the deliveries planned, and the
    next turn taken (None: none, or no runner given)."""
    with runtime.store.atomic():
        end, after = end_turn(runtime, turn_id, error, runner)
        planned = plan_deliveries(runtime, turn_id) if webhook_queue_url() else []
    run_ended(runtime, turn_id, end, error, timed_out=timed_out)
    return end, planned, after


def webhook_queue_url() -> str | None:
    return os.environ.get("WEBHOOK_QUEUE_URL") or None


def sweep_deliveries(runtime: Runtime, sqs: Any, queue_url: str) -> int:
    """Queue again the pending deliveries whose message was most likely lost."""
    delivery_ids = stale_deliveries(runtime)
    if delivery_ids:
        log.warning(
            "queueing %d webhook deliveries again (their messages were lost)", len(delivery_ids)
        )
    queue_deliveries(sqs, queue_url, delivery_ids)
    return len(delivery_ids)


def _delay(sqs: Any, queue_url: str, receipt_handle: str, delay_s: int) -> None:
    try:
        sqs.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay_s
        )
    except Exception:
        # The message still comes back, after the queue's own visibility timeout.
        log.warning("could not set a webhook message's visibility to %ds", delay_s, exc_info=True)


def deliver_message(
    runtime: Runtime,
    sqs: Any,
    queue_url: str,
    receipt_handle: str,
    body: str,
    *,
    remaining_ms: int | None = None,
) -> Outcome | None:
    """Attempt the delivery a message names. Returns what became of it, None for a body
    that names no delivery (nothing to retry); raises `RetryLater` when another attempt is
    due, having set the message to come back then, and `NoTimeLeft`, having made the
    message visible again at once, when `remaining_ms` (the function's) cannot hold an
    attempt."""
    try:
        delivery_id = uuid.UUID(str(json.loads(body)["delivery_id"]))
    except (ValueError, KeyError, TypeError):
        log.error('webhook message refused: its body is not {"delivery_id": <uuid>}')
        return None
    needed_s = runtime.settings.webhook_timeout_s + TIME_MARGIN_S
    if remaining_ms is not None and remaining_ms < needed_s * 1000:
        _delay(sqs, queue_url, receipt_handle, 0)
        raise NoTimeLeft(f"delivery {delivery_id}: {remaining_ms} ms left, handed back untried")
    outcome = deliver(runtime, delivery_id)
    if outcome.retry_in is None:
        return outcome
    delay_s = min(MAX_VISIBILITY_S, max(1, math.ceil(outcome.retry_in)))
    _delay(sqs, queue_url, receipt_handle, delay_s)
    raise RetryLater(outcome, delay_s)
