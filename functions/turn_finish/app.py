"""Finish function: mark a turn done, or failed with the reason a Catch passed on."""

import uuid

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.runtime import runtime
from carrier_aws.turns import failure_reason
from carrier_core.turn import finish_turn

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    turn_id = uuid.UUID(event["turn_id"])
    failure = event.get("error")
    error = None
    if failure:
        logger.error("turn failed", extra={"turn_id": str(turn_id), "failure": failure})
        error = failure_reason(failure)
    finish_turn(runtime(), turn_id, error=error)
    metrics.add_metric(name="TurnsFailed" if error else "TurnsDone", unit=MetricUnit.Count, value=1)
    return {"turn_id": str(turn_id), "status": "failed" if error else "done"}
