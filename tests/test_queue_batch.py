"""A queue's batch answered record by record (`carrier_aws.queue_batch`): only the records
that failed come back, a FIFO batch never lets a later record pass a failed one, and every
failure is in the logs.

Real parts: Powertools' Logger, formatted as in Lambda; SQS records shaped as Lambda
delivers them (the `events/` samples).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from carrier_aws.queue_batch import BatchFailed, QueueRecord, answer_batch
from tests.conftest import ROOT, json_lines


class Retry(Exception):
    """How a handler asks for a record to come back later."""


def batch(*bodies: str, groups: str = "") -> dict[str, Any]:
    """An SQS event of these bodies, its records shaped like the sample event's, in one
    message group, or record n in group `groups[n]`."""
    sample = json.loads((ROOT / "events" / "ingest_sqs.json").read_text())["Records"][0]
    return {
        "Records": [
            {
                **sample,
                "messageId": f"m{n}",
                "receiptHandle": f"r{n}",
                "body": body,
                "attributes": {
                    **sample["attributes"],
                    "MessageGroupId": groups[n] if groups else "room",
                },
            }
            for n, body in enumerate(bodies)
        ]
    }


def handler_failing_on(*bad: str, error: type[Exception] = ValueError) -> tuple[Any, list[str]]:
    handled: list[str] = []

    def handle(record: QueueRecord) -> None:
        handled.append(record.body)
        if record.body in bad:
            raise error(f"cannot take {record.body}")

    return handle, handled


def test_only_the_records_that_failed_come_back_and_each_failure_is_logged(
    log_lines: io.StringIO,
) -> None:
    handle, handled = handler_failing_on("b")
    answer = answer_batch(batch("a", "b", "c"), handle)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert handled == ["a", "b", "c"]
    [line] = [
        line for line in json_lines(log_lines.getvalue()) if line.get("sqs_message_id") == "m1"
    ]
    assert line["level"] == "WARNING"
    assert "ValueError: cannot take b" in line["exception"]


def test_in_a_fifo_batch_no_record_passes_a_failed_one_of_its_group() -> None:
    handle, handled = handler_failing_on("b")
    answer = answer_batch(batch("a", "b", "c", "d"), handle, in_order=True)
    assert handled == ["a", "b"]
    assert answer == {"batchItemFailures": [{"itemIdentifier": f"m{n}"} for n in (1, 2, 3)]}
    # Other groups (other rooms) go on: one room's bad message holds back that room only.
    handle, handled = handler_failing_on("b")
    answer = answer_batch(batch("a", "b", "c", "d", groups="xxyx"), handle, in_order=True)
    assert handled == ["a", "b", "c"]
    assert answer == {"batchItemFailures": [{"itemIdentifier": f"m{n}"} for n in (1, 3)]}


def test_a_retry_the_handler_asked_for_is_logged_without_a_traceback(
    log_lines: io.StringIO,
) -> None:
    handle, _ = handler_failing_on("a", error=Retry)
    answer = answer_batch(batch("a", "b"), handle, expected=(Retry,))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    [line] = [
        line for line in json_lines(log_lines.getvalue()) if line.get("sqs_message_id") == "m0"
    ]
    assert line["level"] == "INFO"
    assert "exception" not in line
    assert "cannot take a" in line["reason"]


def test_a_batch_whose_every_record_failed_fails_the_invocation_unless_told_otherwise() -> None:
    handle, _ = handler_failing_on("a", "b")
    with pytest.raises(BatchFailed, match="all 2 records"):
        answer_batch(batch("a", "b"), handle)
    # A FIFO batch whose first record failed failed whole, too.
    handle, handled = handler_failing_on("a")
    with pytest.raises(BatchFailed):
        answer_batch(batch("a", "b"), handle, in_order=True)
    assert handled == ["a"]
    # Webhook deliveries that all wait for a retry are not an error of the function.
    handle, _ = handler_failing_on("a", "b", error=Retry)
    answer = answer_batch(batch("a", "b"), handle, expected=(Retry,), raise_if_all_fail=False)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}


def test_a_record_s_body_is_read_as_json_and_an_empty_batch_is_answered() -> None:
    bodies: list[Any] = []
    answer = answer_batch(batch('{"text": "hi"}'), lambda record: bodies.append(record.json_body()))
    assert bodies == [{"text": "hi"}]
    assert answer == {"batchItemFailures": []}
    assert answer_batch({"Records": []}, lambda record: None) == {"batchItemFailures": []}
    with pytest.raises(ValueError, match="not an SQS event"):
        answer_batch({"detail-type": "Scheduled Event"}, lambda record: None)
