"""Finish function: mark a turn done, or failed with the reason a Catch passed on."""

import os
import uuid

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.push import push_turn
from carrier_aws.runtime import runtime
from carrier_aws.turns import failure_reason
from carrier_aws.webhooks import queue_deliveries
from carrier_core.api.frames import finished_frames
from carrier_core.turn import finish_turn
from carrier_core.webhooks import plan_deliveries

logger = Logger()
metrics = Metrics()
sqs = boto3.client("sqs")


def queue_webhooks(turn_id: uuid.UUID) -> None:
    """Queue the done turn's webhook deliveries (WEBHOOK_QUEUE_URL unset: none). A failure
    is logged, not raised: the reply is given, and raising would mark the turn failed.
    What was planned stays pending, and a retried finish queues it again."""
    queue_url = os.environ.get("WEBHOOK_QUEUE_URL")
    if not queue_url:
        return
    try:
        delivery_ids = plan_deliveries(runtime(), turn_id)
        queue_deliveries(sqs, queue_url, delivery_ids)
    except Exception:
        logger.exception("webhook deliveries not queued", extra={"turn_id": str(turn_id)})
        metrics.add_metric(name="WebhooksNotQueued", unit=MetricUnit.Count, value=1)
        return
    if delivery_ids:
        metrics.add_metric(name="WebhooksQueued", unit=MetricUnit.Count, value=len(delivery_ids))


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    turn_id = uuid.UUID(event["turn_id"])
    failure = event.get("error")
    error = None
    if failure:
        logger.error("turn failed", extra={"turn_id": str(turn_id), "failure": failure})
        error = failure_reason(failure)
    finish_turn(runtime(), turn_id, error=error)
    push_turn(runtime(), turn_id, lambda: finished_frames(runtime(), turn_id))
    if not error:
        queue_webhooks(turn_id)
    metrics.add_metric(name="TurnsFailed" if error else "TurnsDone", unit=MetricUnit.Count, value=1)
    return {"turn_id": str(turn_id), "status": "failed" if error else "done"}
