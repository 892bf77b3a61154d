"""Ingest function: take in each queued message and start its room's runner if it is idle.

Nothing waits for a turn here: once a record's message is stored (and the record
consumed), the room's runner answers it (`carrier_aws.runners`), and the sweep drives
the room again if that runner stops.
"""

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from carrier_aws.runners import start_claimed, state_machine_arn
from carrier_aws.runtime import runtime
from carrier_core.store import NotFound
from carrier_core.turn import InvalidMessage, ingest

logger = Logger()
metrics = Metrics()
processor = SqsFifoPartialProcessor()
sfn = boto3.client("stepfunctions")


def record_handler(record: SQSRecord) -> None:
    try:
        ingested = ingest(runtime(), record.json_body)
    except (InvalidMessage, NotFound, ValueError) as exc:  # ValueError: the body is not JSON
        # Retrying cannot fix the message: say why and let the queue move on.
        logger.error("message refused", extra={"reason": str(exc), "message_id": record.message_id})
        metrics.add_metric(name="MessagesRefused", unit=MetricUnit.Count, value=1)
        return
    start_claimed(sfn, state_machine_arn(), ingested.runner)
    metrics.add_metric(name="MessagesAccepted", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
