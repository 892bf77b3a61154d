"""A batch of SQS records, handled one record at a time: the answer names the records that
failed (Lambda's partial batch response, `ReportBatchItemFailures`), so the queue deletes
the others and only the failed ones come back.

This is the SQS part of Powertools' batch utility, which the functions used before.
Importing that utility loads every Powertools event class and asyncio, about a tenth of
a function's cold start, for a loop of a dozen lines. Unlike it, a failed record is
logged at warning level with its traceback. Powertools logged it only at debug level,
so a message the queue kept retrying left no trace in the logs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from carrier_aws.observability import logger


@dataclass(frozen=True)
class QueueRecord:
    """The parts of an SQS record that the functions read."""

    message_id: str
    receipt_handle: str
    body: str
    #: A FIFO queue's message group (a room, for the ingest queue); None on other queues.
    group: str | None = None

    def json_body(self) -> Any:
        """The body as JSON (ValueError if it is not JSON)."""
        return json.loads(self.body)


class BatchFailed(RuntimeError):
    """Every record of the batch failed: the invocation fails, so the whole batch comes
    back after its visibility timeout (and Lambda's error metrics and alarms see it)."""


def answer_batch(
    event: Mapping[str, Any],
    handle: Callable[[QueueRecord], None],
    *,
    in_order: bool = False,
    expected: tuple[type[Exception], ...] = (),
    raise_if_all_fail: bool = True,
) -> dict[str, list[dict[str, str]]]:
    """Hand each record of `event` to `handle`; a record whose handling raises is failed.

    in_order: a FIFO queue's batch, where a later record of a message group must not pass
    a failed one of the same group: after a failure, the group's later records are failed
    without being handled (other groups' records go on, as Powertools' FIFO processor does
    with `skip_group_on_error`: one room's bad message holds back that room only).
    expected: exceptions that are how `handle` asks for a retry (a delivery due later),
    logged without their traceback.
    raise_if_all_fail: raise `BatchFailed` when no record succeeded.
    """
    raws = event.get("Records")
    if not isinstance(raws, list) or not all(isinstance(raw, dict) for raw in raws):
        raise ValueError("not an SQS event: it has no list of Records")
    records = [
        QueueRecord(
            raw["messageId"],
            raw.get("receiptHandle", ""),
            raw.get("body", ""),
            (raw.get("attributes") or {}).get("MessageGroupId"),
        )
        for raw in raws
    ]
    failed: list[str] = []
    held: set[str | None] = set()  # the message groups with a failed record
    for record in records:
        if in_order and record.group in held:
            failed.append(record.message_id)
            continue
        try:
            handle(record)
        except expected as exc:
            logger.info(
                "record to be retried",
                extra={"sqs_message_id": record.message_id, "reason": repr(exc)},
            )
            failed.append(record.message_id)
            held.add(record.group)
        except Exception:
            logger.warning(
                "record failed; the queue will deliver it again",
                extra={"sqs_message_id": record.message_id},
                exc_info=True,
            )
            failed.append(record.message_id)
            held.add(record.group)
    if failed and len(failed) == len(records) and raise_if_all_fail:
        raise BatchFailed(f"all {len(records)} records of the batch failed (logged above)")
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def dead_letter(sqs: Any, queue_url: str, record: QueueRecord, reason: str) -> None:
    """Put a record no retry can fix on the dead-letter queue now, with why (the
    `carrier_refused` attribute), rather than let it come back until the queue's redrive
    policy moves it there: meanwhile a FIFO queue would hold back its group (its room)."""
    message: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MessageBody": record.body or "(empty)",  # SQS takes no empty body
        "MessageAttributes": {
            "carrier_refused": {"DataType": "String", "StringValue": reason[:1000] or "refused"}
        },
    }
    if record.group is not None:
        message.update(MessageGroupId=record.group, MessageDeduplicationId=record.message_id)
    sqs.send_message(**message)
