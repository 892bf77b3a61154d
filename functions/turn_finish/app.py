"""Finish function: end a turn (done, or failed with the reason a Catch passed on), and
give the room's runner its next turn (taken in the end's own statement).

The state machine is a room's runner: it starts here with `{"op": "next"}` and comes back
after every turn with `{"op": "finish", "turn_id", "message_id", "error"?}`; both answer
the state of the next turn, whose `turn_id` is null when the runner is done. The turn's
metrics (outcome, latency from the message's arrival, model calls, tokens, cost) are sent
here, once, when it ends.
"""

import os
import uuid
from collections.abc import Mapping

from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.clients import AwsClient
from carrier_aws.observability import correlated, function_handler, logger, send_metrics
from carrier_aws.push import push_turn
from carrier_aws.runners import (
    TURN_LIMIT,
    failure_reason,
    next_state,
    runner_state,
    start_runner,
    state_machine_arn,
    timed_out,
)
from carrier_aws.runtime import runtime
from carrier_aws.webhooks import (
    finish_turn_and_plan_deliveries,
    queue_deliveries,
    webhook_queue_url,
)
from carrier_core.frames import finished_frames
from carrier_core.store.runners import NextTurn, Runner
from carrier_core.store.turns import TurnEnd

sqs = AwsClient("sqs")
sfn = AwsClient("stepfunctions")


def finish(
    turn_id: uuid.UUID, ids: Mapping[str, str], failure: dict | None, runner: Runner | None
) -> NextTurn | None:
    error = None
    if failure:
        logger.error("turn failed", extra={"failure": failure})
        error = failure_reason(failure)
    end, delivery_ids, after = finish_turn_and_plan_deliveries(
        runtime(), turn_id, error, timed_out=timed_out(failure or {}), runner=runner
    )
    push_turn(runtime(), turn_id, lambda: finished_frames(runtime(), turn_id))
    values: dict[str, tuple[MetricUnit, float]] = {}
    queue_url = webhook_queue_url()
    if delivery_ids and queue_url:
        try:
            queue_deliveries(sqs, queue_url, delivery_ids, ids)
        except Exception:  # raising would fail the turn; the sweep queues what was planned
            logger.exception("webhook deliveries not queued")
            values["WebhooksNotQueued"] = (MetricUnit.Count, 1)
        else:
            values["WebhooksQueued"] = (MetricUnit.Count, len(delivery_ids))
    if end is not None:
        values.update(ended(end))
    send_metrics(values, ids)
    return after


def ended(end: TurnEnd) -> dict[str, tuple[MetricUnit, float]]:
    """The metrics of a turn that has just ended (the dashboard's turns, latency and cost)."""
    return {
        "TurnsFailed" if end.status == "failed" else "TurnsDone": (MetricUnit.Count, 1),
        "TurnLatency": (MetricUnit.Milliseconds, round(end.seconds * 1000)),
        "ModelCalls": (MetricUnit.Count, end.model_calls),
        "InputTokens": (MetricUnit.Count, end.input_tokens),
        "OutputTokens": (MetricUnit.Count, end.output_tokens),
        "ModelCostUSD": (MetricUnit.NoUnit, end.cost_usd),
    }


@function_handler
def handler(event: dict, context: object) -> dict:
    runner = Runner(uuid.UUID(event["room_id"]), int(event["generation"]))
    turns = int(event.get("turns", 0))
    limit = int(os.environ.get("CARRIER_RUNNER_TURN_LIMIT", TURN_LIMIT))
    op = event.get("op", "next")
    if op not in ("next", "finish"):
        raise ValueError(f"turn_finish: unknown op {op!r}; expected 'next' or 'finish'")
    finished = op == "finish"
    taken = None
    if finished:
        turn_id = uuid.UUID(event["turn_id"])
        turns += 1
        # Under its limit the runner keeps the room: the turn's end takes its next turn too.
        with correlated(turn_id, event.get("message_id")) as ids:
            taken = finish(turn_id, ids, event.get("error"), runner if turns < limit else None)
    if finished and turns < limit:
        state = runner_state(runtime(), runner, turns, taken)
    else:
        state = next_state(
            runtime(),
            runner,
            turns,
            lambda successor: start_runner(sfn, state_machine_arn(), successor),
            limit=limit,
        )
    if state["turn_id"]:
        with correlated(state["turn_id"], state["message_id"]):
            logger.info("turn taken up", extra={"runner": runner.name})
    return state
