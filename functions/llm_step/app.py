"""LLM step function: a turn's decide step, or its evaluators, for the state machine."""

import uuid

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.push import push_turn
from carrier_aws.runtime import runtime
from carrier_core.frames import decided_frames
from carrier_core.turn import decide, evaluate

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    turn_id = uuid.UUID(event["turn_id"])
    if event["op"] == "decide":
        decided = decide(runtime(), turn_id, int(event["step"]))
        push_turn(runtime(), turn_id, lambda: decided_frames(turn_id, decided))
        metrics.add_metric(name="Decisions", unit=MetricUnit.Count, value=1)
        actions = decided.decision.actions if decided.respond else []
        return {
            "respond": decided.respond,
            "step": decided.step,
            "actions": [{"turn_id": str(turn_id), "index": i} for i in range(len(actions))],
        }
    if event["op"] == "evaluate":
        return {"ran": evaluate(runtime(), turn_id)}
    raise ValueError(f"llm_step: unknown op {event['op']!r}; expected 'decide' or 'evaluate'")
