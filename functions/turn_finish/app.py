"""Finish function: end a turn (done, or failed with the reason a Catch passed on), then
give the room's runner its next turn.

The state machine is a room's runner: it starts here with `{"op": "next"}` and comes back
after every turn with `{"op": "finish", "turn_id", "error"?}`; both answer the state of the
next turn, whose `turn_id` is null when the runner is done.
"""

import os
import uuid

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.push import push_turn
from carrier_aws.runners import (
    TURN_LIMIT,
    failure_reason,
    next_state,
    start_runner,
    state_machine_arn,
)
from carrier_aws.runtime import runtime
from carrier_aws.webhooks import (
    finish_turn_and_plan_deliveries,
    queue_deliveries,
    webhook_queue_url,
)
from carrier_core.frames import finished_frames
from carrier_core.turn import Runner

logger = Logger()
metrics = Metrics()
sqs = boto3.client("sqs")
sfn = boto3.client("stepfunctions")


def finish(turn_id: uuid.UUID, failure: dict | None) -> None:
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


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    runner = Runner(uuid.UUID(event["room_id"]), int(event["generation"]))
    turns = int(event.get("turns", 0))
    if event.get("op") == "finish":
        finish(uuid.UUID(event["turn_id"]), event.get("error"))
        turns += 1
    return next_state(
        runtime(),
        runner,
        turns,
        lambda successor: start_runner(sfn, state_machine_arn(), successor),
        limit=int(os.environ.get("CARRIER_RUNNER_TURN_LIMIT", TURN_LIMIT)),
    )
