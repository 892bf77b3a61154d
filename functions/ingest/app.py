"""Ingest function: for each queued message, run ingest and its turn's state machine.

The queue is FIFO by room, and each record waits for its turn to end, so the
turns of one room run one at a time, in order. The execution is named after
the message: a redelivered record finds the same execution.
"""

import os

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from carrier_aws.runtime import runtime
from carrier_aws.turns import start_turn, wait_for_turn
from carrier_aws.webhooks import (
    finish_turn_and_plan_deliveries,
    queue_deliveries,
    webhook_queue_url,
)
from carrier_core.store import NotFound
from carrier_core.turn import InvalidMessage, ingest

logger = Logger()
metrics = Metrics()
processor = SqsFifoPartialProcessor()
sfn = boto3.client("stepfunctions")
sqs = boto3.client("sqs")


def record_handler(record: SQSRecord) -> None:
    rt = runtime()
    try:
        ingested = ingest(rt, record.json_body)
    except (InvalidMessage, NotFound, ValueError) as exc:  # ValueError: the body is not JSON
        # Retrying cannot fix the message: say why and let the queue move on.
        logger.error("message refused", extra={"reason": str(exc), "message_id": record.message_id})
        metrics.add_metric(name="MessagesRefused", unit=MetricUnit.Count, value=1)
        return
    if rt.store.turn(ingested.turn_id).status == "failed":
        # The message came again for a failed turn: a new attempt starts, clients see it.
        rt.store.update_turn(ingested.turn_id, status="received")
    execution = start_turn(
        sfn,
        os.environ["TURN_STATE_MACHINE_ARN"],
        turn_id=ingested.turn_id,
        agent_id=ingested.agent_id,
        message_id=ingested.message_id,
        max_steps=rt.settings.max_steps,
    )
    status = wait_for_turn(
        sfn,
        execution,
        timeout_s=float(os.environ.get("TURN_WAIT_S", "600")),
        poll_s=float(os.environ.get("TURN_POLL_S", "0.2")),
    )
    logger.info("turn ended", extra={"turn_id": str(ingested.turn_id), "status": status})
    if status != "SUCCEEDED" and rt.store.turn(ingested.turn_id).status not in ("done", "failed"):
        # An execution can end without reaching MarkFailed (e.g. States.Runtime): say so,
        # and send the replies it had stored to the webhooks, as the finish step would.
        error = f"turn execution ended {status}"
        delivery_ids = finish_turn_and_plan_deliveries(rt, ingested.turn_id, error)
        queue_url = webhook_queue_url()
        if delivery_ids and queue_url:
            try:
                queue_deliveries(sqs, queue_url, delivery_ids)
            except Exception:  # planned and pending: the sweep queues them
                logger.exception("webhook deliveries not queued")
    metrics.add_metric(name="TurnsEnded", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
