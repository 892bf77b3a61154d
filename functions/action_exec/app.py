"""Action function: run one chosen action of a turn (one Map iteration), or, for an
action that needs approval, keep the waiting state machine task's token with the request."""

import uuid

from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.approvals import ask
from carrier_aws.clients import AwsClient
from carrier_aws.observability import correlated, function_handler, send_metrics
from carrier_aws.push import push_sent, push_turn
from carrier_aws.runtime import runtime
from carrier_core.frames import acted_frames
from carrier_core.turn.act import act

sfn = AwsClient("stepfunctions")
sqs = AwsClient("sqs")


@function_handler
def handler(event: dict, context: object) -> dict:
    turn_id = uuid.UUID(event["turn_id"])
    with correlated(turn_id, event.get("message_id")) as ids:
        if event["op"] == "act":
            acted = act(runtime(), turn_id, int(event["index"]))
            if acted.approval_id is not None:
                return {"continue_turn": False, "approval_id": str(acted.approval_id)}
            push_turn(runtime(), turn_id, lambda: acted_frames(runtime(), turn_id, acted))
            push_sent(runtime(), turn_id, acted)
            send_metrics({"Actions": (MetricUnit.Count, 1)}, ids)
            return {
                "action": acted.action,
                "continue_turn": acted.continue_turn,
                "approval_id": None,
                "error": acted.error,
            }
        if event["op"] == "approval":
            asked = ask(
                runtime(), sfn, sqs, uuid.UUID(event["approval_id"]), event["task_token"], ids
            )
            send_metrics({"ApprovalsRequested": (MetricUnit.Count, 1)}, ids)
            return {"approval_id": str(asked.id), "status": asked.status}
    raise ValueError(f"action_exec: unknown op {event['op']!r}; expected 'act' or 'approval'")
