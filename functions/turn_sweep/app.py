"""Sweep function (on a schedule): drive again the rooms whose runner stopped.

A runner stops when its execution fails (an outage outlasting its retries, a bug) or its
process dies; its room's lease then runs out, and this finds it (`sweep_rooms`). Accepted
messages are in Postgres, so nothing else is needed to answer them.
"""

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.runners import state_machine_arn, sweep_rooms
from carrier_aws.runtime import runtime

logger = Logger()
metrics = Metrics()
sfn = boto3.client("stepfunctions")


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict, context: object) -> dict:
    # `every_lease`: sent by the emulator when it starts, as no runner from before can live.
    every_lease = bool((event.get("detail") or {}).get("every_lease"))
    counts = sweep_rooms(runtime(), sfn, state_machine_arn(), every_lease=every_lease)
    for outcome, value in counts.items():
        metrics.add_metric(name=f"Runners_{outcome}", unit=MetricUnit.Count, value=value)
    return dict(counts)
