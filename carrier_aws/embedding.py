"""Embedding requests on the embed queue: `{"agent_id"}`, handled by functions/memory_embed.

The state machine sends one at the end of each turn; the API sends one when a document is
uploaded (or an agent made with knowledge), so its fragments are embedded outside the
request; the embed function sends the next itself when an agent has more left than one
invocation embeds (a long document), so no document waits for the agent's next turn.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carrier_core.embed import RequestEmbedding

QUEUE_VARIABLE = "EMBED_QUEUE_URL"


def embed_queue_url() -> str:
    url = os.environ.get(QUEUE_VARIABLE)
    if not url:
        raise RuntimeError(f"{QUEUE_VARIABLE} is not set: the function cannot queue embedding")
    return url


def queue_embedding(sqs: Any, agent_id: uuid.UUID) -> None:
    """Ask the embed function to embed the agent's unembedded memories."""
    sqs.send_message(
        QueueUrl=embed_queue_url(), MessageBody=json.dumps({"agent_id": str(agent_id)})
    )


def embedding_requester(sqs: Any) -> RequestEmbedding:
    """`queue_embedding` on this client: the API's `request_embedding`."""
    return lambda agent_id: queue_embedding(sqs, agent_id)
