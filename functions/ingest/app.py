"""Ingest function: take in each queued message and start its room's runner if it is idle.

Nothing waits for a turn here: once a record's message is stored (and the record
consumed), the room's runner answers it (`carrier_aws.runners`), and the sweep drives
the room again if that runner stops. A record no retry can fix (not JSON, not a message,
an unknown agent) is not stored: it goes to the dead-letter queue at once, with the reason,
where its alarm shows it. A record without its sender's message id is made idempotent by
its SQS message id, so a delivery that comes again is the same message.
"""

import os

from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.clients import AwsClient
from carrier_aws.observability import accepted, function_handler, logger, send_metrics
from carrier_aws.queue_batch import QueueRecord, answer_batch, dead_letter
from carrier_aws.runners import start_claimed, state_machine_arn
from carrier_aws.runtime import runtime
from carrier_core.store.base import NotFound
from carrier_core.turn.ingest import InvalidMessage, ingest

#: The queue's dead-letter queue (the template's IngestDLQ).
DEAD_LETTER_VARIABLE = "CARRIER_INGEST_DLQ_URL"

sfn = AwsClient("stepfunctions")
sqs = AwsClient("sqs")


class Refused(ValueError):
    """A record no retry can fix, with no dead-letter queue to put it on: it fails, and
    the queue's redrive policy moves it there after its tries."""


def record_handler(record: QueueRecord) -> None:
    try:
        body = record.json_body()
        if isinstance(body, dict) and not body.get("client_message_id"):
            body["client_message_id"] = f"sqs:{record.message_id}"
        ingested = ingest(runtime(), body)
    except (InvalidMessage, NotFound, ValueError, RecursionError) as exc:
        # ValueError: the body is not JSON; RecursionError: it nests too deep to read.
        refuse(record, str(exc) or type(exc).__name__)
        return
    accepted(ingested)
    start_claimed(sfn, state_machine_arn(), ingested.runner)


def refuse(record: QueueRecord, reason: str) -> None:
    logger.error("message refused", extra={"reason": reason, "sqs_message_id": record.message_id})
    send_metrics({"MessagesRefused": (MetricUnit.Count, 1)})
    queue_url = os.environ.get(DEAD_LETTER_VARIABLE)
    if not queue_url:
        raise Refused(reason)
    dead_letter(sqs, queue_url, record, reason)


@function_handler
def handler(event: dict, context: object) -> dict:
    # The queue is FIFO per room: a room's later message must not pass a failed one.
    return answer_batch(event, record_handler, in_order=True)
