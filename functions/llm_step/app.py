"""LLM step function: a turn's decide step, or its evaluators, for the state machine."""

import uuid

from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.observability import correlated, function_handler, send_metrics
from carrier_aws.push import push_turn
from carrier_aws.runtime import runtime
from carrier_core.frames import acted_frames, decided_frames
from carrier_core.turn.decide import decide
from carrier_core.turn.evaluate import evaluate


@function_handler
def handler(event: dict, context: object) -> dict:
    turn_id = uuid.UUID(event["turn_id"])
    with correlated(turn_id, event.get("message_id")) as ids:
        if event["op"] == "decide":
            decided = decide(runtime(), turn_id, int(event["step"]))
            push_turn(runtime(), turn_id, lambda: decided_frames(turn_id, decided))
            metrics = {"Decisions": (MetricUnit.Count, 1)}
            if decided.acted is not None:  # a simple reply, run and stored with the decision
                acted = decided.acted
                push_turn(runtime(), turn_id, lambda: acted_frames(runtime(), turn_id, acted))
                metrics["Actions"] = (MetricUnit.Count, 1)
            send_metrics(metrics, ids)
            return {
                # Act steps follow only for actions left to run.
                "respond": bool(decided.to_run),
                "step": decided.step,
                "again": decided.again,
                "actions": [{**ids, "index": i} for i in range(len(decided.to_run))],
            }
        if event["op"] == "evaluate":
            return {"ran": evaluate(runtime(), turn_id)}
    raise ValueError(f"llm_step: unknown op {event['op']!r}; expected 'decide' or 'evaluate'")
