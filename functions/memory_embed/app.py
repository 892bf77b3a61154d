"""Embed function: embed the memories an agent has left unembedded, in batches; a knowledge
document becomes ready once its fragments are embedded. An agent with more left than one
invocation embeds (a long document) gets a request of its own queued for the rest."""

import uuid

from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.clients import AwsClient
from carrier_aws.embedding import queue_embedding
from carrier_aws.observability import correlated, function_handler, send_metrics
from carrier_aws.queue_batch import QueueRecord, answer_batch
from carrier_aws.runtime import runtime
from carrier_core.embed import embed_pending

sqs = AwsClient("sqs")


def record_handler(record: QueueRecord) -> None:
    # {"agent_id", "turn_id", "message_id"}: the turn whose end asked for it; {"agent_id"}:
    # an upload, or this function for what it left.
    body = record.json_body()
    agent_id = uuid.UUID(body["agent_id"])
    with correlated(body.get("turn_id"), body.get("message_id")) as ids:
        embedded = embed_pending(runtime(), agent_id)
        send_metrics({"MemoriesEmbedded": (MetricUnit.Count, embedded)}, ids)
        if embedded and runtime().store.unembedded(agent_id, 1):
            queue_embedding(sqs, agent_id)


@function_handler
def handler(event: dict, context: object) -> dict:
    return answer_batch(event, record_handler)
