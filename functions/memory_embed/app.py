"""Embed function: embed the memories an agent has left unembedded, in batches."""

import uuid

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from carrier_aws.observability import correlated, function_handler, send_metrics
from carrier_aws.runtime import runtime
from carrier_core.turn import embed_pending

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    # {"agent_id", "turn_id", "message_id"}: the turn whose end asked for it.
    body = record.json_body
    with correlated(body.get("turn_id"), body.get("message_id")) as ids:
        embedded = embed_pending(runtime(), uuid.UUID(body["agent_id"]))
        send_metrics({"MemoriesEmbedded": (MetricUnit.Count, embedded)}, ids)


@function_handler
def handler(event: dict, context: object) -> dict:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
