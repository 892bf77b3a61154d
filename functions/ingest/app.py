"""Ingest function: take in each queued message and start its room's runner if it is idle.

Nothing waits for a turn here: once a record's message is stored (and the record
consumed), the room's runner answers it (`carrier_aws.runners`), and the sweep drives
the room again if that runner stops.
"""

from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.clients import AwsClient
from carrier_aws.observability import accepted, function_handler, logger, send_metrics
from carrier_aws.queue_batch import QueueRecord, answer_batch
from carrier_aws.runners import start_claimed, state_machine_arn
from carrier_aws.runtime import runtime
from carrier_core.store.base import NotFound
from carrier_core.turn.ingest import InvalidMessage, ingest

sfn = AwsClient("stepfunctions")


def record_handler(record: QueueRecord) -> None:
    try:
        ingested = ingest(runtime(), record.json_body())
    except (InvalidMessage, NotFound, ValueError) as exc:  # ValueError: the body is not JSON
        # Retrying cannot fix the message: say why and let the queue move on.
        logger.error(
            "message refused", extra={"reason": str(exc), "sqs_message_id": record.message_id}
        )
        send_metrics({"MessagesRefused": (MetricUnit.Count, 1)})
        return
    accepted(ingested)
    start_claimed(sfn, state_machine_arn(), ingested.runner)


@function_handler
def handler(event: dict, context: object) -> dict:
    # The queue is FIFO per room: a room's later message must not pass a failed one.
    return answer_batch(event, record_handler, in_order=True)
