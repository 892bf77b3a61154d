"""Embed function: embed the memories an agent has left unembedded, in batches."""

import uuid

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from carrier_aws.runtime import runtime
from carrier_core.turn import embed_pending

logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    embedded = embed_pending(runtime(), uuid.UUID(record.json_body["agent_id"]))
    metrics.add_metric(name="MemoriesEmbedded", unit=MetricUnit.Count, value=embedded)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
