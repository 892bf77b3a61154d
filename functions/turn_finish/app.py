"""Finish function: mark a turn done, or failed with the reason a Catch passed on."""

import uuid

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.push import push_turn
from carrier_aws.runtime import runtime
from carrier_aws.turns import failure_reason
from carrier_aws.webhooks import (
    finish_turn_and_plan_deliveries,
    queue_deliveries,
    webhook_queue_url,
)
from carrier_core.frames import finished_frames

logger = Logger()
metrics = Metrics()
sqs = boto3.client("sqs")


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    turn_id = uuid.UUID(event["turn_id"])
    failure = event.get("error")
    error = None
    if failure:
        logger.error("turn failed", extra={"turn_id": str(turn_id), "failure": failure})
        error = failure_reason(failure)
    delivery_ids = finish_turn_and_plan_deliveries(runtime(), turn_id, error)
    push_turn(runtime(), turn_id, lambda: finished_frames(runtime(), turn_id))
    queue_url = webhook_queue_url()
    if delivery_ids and queue_url:
        try:
            queue_deliveries(sqs, queue_url, delivery_ids)
        except Exception:  # raising would fail the turn; the sweep queues what was planned
            logger.exception("webhook deliveries not queued", extra={"turn_id": str(turn_id)})
            metrics.add_metric(name="WebhooksNotQueued", unit=MetricUnit.Count, value=1)
        else:
            metrics.add_metric(
                name="WebhooksQueued", unit=MetricUnit.Count, value=len(delivery_ids)
            )
    metrics.add_metric(name="TurnsFailed" if error else "TurnsDone", unit=MetricUnit.Count, value=1)
    return {"turn_id": str(turn_id), "status": "failed" if error else "done"}
