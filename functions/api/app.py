"""HTTP API function: FastAPI behind Mangum. A post stores the message and its turn, starts
the room's runner if the room is idle, and answers 202. A document upload stores the
document and its fragments, and queues their embedding for the embed function. An
approval's answer wakes the turn's waiting execution. It also
serves the web console at `/`, which it tells where the WebSocket API is."""

from mangum import Mangum

from carrier_aws.approvals import wake
from carrier_aws.clients import AwsClient
from carrier_aws.embedding import embedding_requester
from carrier_aws.observability import accepted, function_handler
from carrier_aws.push import client_url
from carrier_aws.runners import start_claimed, state_machine_arn
from carrier_aws.runtime import runtime
from carrier_core.api.app import create_app
from carrier_core.turn.approval import Approval
from carrier_core.turn.ingest import Ingested

sfn = AwsClient("stepfunctions")
sqs = AwsClient("sqs")


def submit(ingested: Ingested) -> None:
    accepted(ingested)
    start_claimed(sfn, state_machine_arn(), ingested.runner)


def resume(settled: Approval, token: str | None) -> None:
    """Wake the turn's execution; with no token yet, its approval step wakes it."""
    wake(runtime(), sfn, settled, token)


app = create_app(
    runtime, submit, embedding_requester(sqs), websocket_url=client_url(), resume=resume
)
_mangum = Mangum(app, lifespan="off")


@function_handler
def handler(event: dict, context: object) -> dict:
    return _mangum(event, context)
