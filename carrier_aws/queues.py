"""Queue messages for the rest of a turn, and for the embed step."""

from __future__ import annotations

import hashlib
from typing import Any

from carrier_core.store import TurnRecord
from carrier_core.turn import IncomingMessage


def room_group(message: IncomingMessage) -> str:
    """The FIFO group of a message: its room, so turns in one room run one at a time."""
    return hashlib.sha256(
        f"{message.agent_id}:{message.source}:{message.room}".encode()
    ).hexdigest()


def send_message(sqs: Any, queue_url: str, message: IncomingMessage, turn: TurnRecord) -> None:
    """Queue a message for ingest. The same client message id is queued once (FIFO dedup),
    unless its turn failed: then each retry is a delivery of its own."""
    assert message.client_message_id, "queued messages carry a client message id"
    dedup = f"{message.agent_id}:{message.source}:{message.sender}:{message.client_message_id}"
    if turn.status == "failed":
        dedup += f":retry:{turn.updated_at.isoformat()}"
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=message.model_dump_json(),
        MessageGroupId=room_group(message),
        MessageDeduplicationId=hashlib.sha256(dedup.encode()).hexdigest(),
    )
