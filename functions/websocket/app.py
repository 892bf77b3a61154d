"""WebSocket function: every route of the WebSocket API ($connect, $disconnect, sendMessage,
$default), as `carrier_core.api.websocket` defines the protocol.

$connect checks the query's token and agent and stores the connection (any answer but
200 refuses the handshake); $disconnect forgets it. A message is ingested and its turn
queued, as a REST post is; the answer (accepted, or an error frame) is pushed to the
connection, and the turn's own frames are pushed by the steps that run it.
"""

from functools import cache

from carrier_aws.clients import AwsClient
from carrier_aws.observability import accepted, function_handler, logger
from carrier_aws.push import pusher, websocket_request
from carrier_aws.runners import start_claimed, state_machine_arn
from carrier_aws.runtime import runtime
from carrier_core.api import websocket
from carrier_core.auth import Authenticator
from carrier_core.frames import Frame
from carrier_core.turn.ingest import Ingested

sfn = AwsClient("stepfunctions")


@cache
def authenticator() -> Authenticator:
    """One per container, so end-user tokens' signing keys are fetched once."""
    rt = runtime()
    return Authenticator(rt.store, rt.settings)


def submit(ingested: Ingested) -> None:
    accepted(ingested)
    start_claimed(sfn, state_machine_arn(), ingested.runner)


@function_handler
def handler(event: dict, context: object) -> dict:
    route, connection_id, endpoint = websocket_request(event)
    rt = runtime()
    if route == "$connect":
        try:
            websocket.connect(
                rt,
                authenticator(),
                connection_id=connection_id,
                endpoint=endpoint,
                query=event.get("queryStringParameters") or {},
            )
        except websocket.Refused as refused:
            logger.info("connection refused", extra={"status": refused.status, "why": refused.code})
            return {"statusCode": refused.status, "body": refused.body}
        return {"statusCode": 200}
    if route == "$disconnect":
        rt.store.remove_connection(connection_id)
        return {"statusCode": 200}

    def send(frame: Frame) -> None:
        pusher.send(rt.store, connection_id, endpoint, [frame])

    websocket.receive(rt, submit, connection_id, event.get("body"), send)
    return {"statusCode": 200}
