"""Action function: run one chosen action of a turn (one Map iteration)."""

import uuid

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.push import push_turn
from carrier_aws.runtime import runtime
from carrier_core.frames import acted_frames
from carrier_core.turn import act

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    turn_id = uuid.UUID(event["turn_id"])
    acted = act(runtime(), turn_id, int(event["index"]))
    push_turn(runtime(), turn_id, lambda: acted_frames(runtime(), turn_id, acted))
    metrics.add_metric(name="Actions", unit=MetricUnit.Count, value=1)
    return {"action": acted.action, "continue_turn": acted.continue_turn, "error": acted.error}
