"""Webhook function: one attempt at each queued delivery; a record due again later is
reported failed with its message delayed to then, and one it has no time left for is
handed back at once (see carrier_aws.webhooks). On its schedule (an EventBridge
"Scheduled Event") it sweeps instead: deliveries whose message was lost are queued again."""

import json
import os

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from carrier_aws.clients import AwsClient
from carrier_aws.observability import correlated, function_handler, send_metrics
from carrier_aws.queue_batch import QueueRecord, answer_batch
from carrier_aws.runtime import runtime
from carrier_aws.webhooks import (
    NoTimeLeft,
    RetryLater,
    deliver_message,
    is_scheduled,
    sweep_deliveries,
)

sqs = AwsClient("sqs")

METRICS = {"delivered": "WebhooksDelivered", "failed": "WebhooksFailed"}


def record_handler(record: QueueRecord, lambda_context: LambdaContext) -> None:
    with correlated(*turn_of(record.body)) as ids:
        try:
            outcome = deliver_message(
                runtime(),
                sqs,
                os.environ["WEBHOOK_QUEUE_URL"],
                record.receipt_handle,
                record.body,
                remaining_ms=lambda_context.get_remaining_time_in_millis(),
            )
        except RetryLater:
            send_metrics({"WebhookRetries": (MetricUnit.Count, 1)}, ids)
            raise
        except NoTimeLeft:
            send_metrics({"WebhooksHandedBack": (MetricUnit.Count, 1)}, ids)
            raise
        if outcome is not None and outcome.status in METRICS:
            send_metrics({METRICS[outcome.status]: (MetricUnit.Count, 1)}, ids)


def turn_of(body: str) -> tuple[str | None, str | None]:
    """The turn and message ids a delivery's message carries (none if it is not JSON:
    `deliver_message` says what is wrong with it)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    return data.get("turn_id"), data.get("message_id")


@function_handler
def handler(event: dict, context: LambdaContext) -> dict:
    if is_scheduled(event):
        queued = sweep_deliveries(runtime(), sqs, os.environ["WEBHOOK_QUEUE_URL"])
        send_metrics({"WebhooksRequeued": (MetricUnit.Count, queued)})
        return {"queued": queued}
    # A batch whose every record waits for a retry is not an error of the function.
    return answer_batch(
        event,
        lambda record: record_handler(record, context),
        expected=(RetryLater, NoTimeLeft),
        raise_if_all_fail=False,
    )
