"""HTTP API function: FastAPI behind Mangum. Posts run ingest and queue the turn (202)."""

import os

import boto3
from aws_lambda_powertools import Logger
from mangum import Mangum

from carrier_aws.queues import send_message
from carrier_aws.runtime import runtime
from carrier_core.api import create_app
from carrier_core.store import TurnRecord
from carrier_core.turn import IncomingMessage

logger = Logger()
sqs = boto3.client("sqs")


def submit(message: IncomingMessage, turn: TurnRecord) -> None:
    send_message(sqs, os.environ["INGEST_QUEUE_URL"], message, turn)


app = create_app(runtime, submit)
_mangum = Mangum(app, lifespan="off")


@logger.inject_lambda_context
def handler(event: dict, context: object) -> dict:
    return _mangum(event, context)
