"""Action function: run one chosen action of a turn (one Map iteration)."""

import uuid

from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.observability import correlated, function_handler, send_metrics
from carrier_aws.push import push_sent, push_turn
from carrier_aws.runtime import runtime
from carrier_core.frames import acted_frames
from carrier_core.turn import act


@function_handler
def handler(event: dict, context: object) -> dict:
    turn_id = uuid.UUID(event["turn_id"])
    with correlated(turn_id, event.get("message_id")) as ids:
        acted = act(runtime(), turn_id, int(event["index"]))
        push_turn(runtime(), turn_id, lambda: acted_frames(runtime(), turn_id, acted))
        push_sent(runtime(), turn_id, acted)
        send_metrics({"Actions": (MetricUnit.Count, 1)}, ids)
        return {"action": acted.action, "continue_turn": acted.continue_turn, "error": acted.error}
