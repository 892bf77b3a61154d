"""Sweep function (on a schedule): drive again the rooms whose runner stopped, and expire
the approvals nobody answered in time (their turns go on without the action).

A runner stops when its execution fails (an outage outlasting its retries, a bug) or its
process dies; its room's lease then runs out, and this finds it (`sweep_rooms`). Accepted
messages are in Postgres, so nothing else is needed to answer them. Each sweep also
reports how long the oldest unfinished turn has waited (`OldestUnfinishedTurnAge`, which
an alarm watches).
"""

from aws_lambda_powertools.metrics import MetricUnit

from carrier_aws.approvals import expire
from carrier_aws.clients import AwsClient
from carrier_aws.observability import function_handler, send_metrics
from carrier_aws.runners import state_machine_arn, sweep_rooms
from carrier_aws.runtime import runtime

sfn = AwsClient("stepfunctions")


@function_handler
def handler(event: dict, context: object) -> dict:
    # `every_lease`: sent by the emulator when it starts, as no runner from before can live.
    every_lease = bool((event.get("detail") or {}).get("every_lease"))
    counts = sweep_rooms(runtime(), sfn, state_machine_arn(), every_lease=every_lease)
    expired = expire(runtime(), sfn)
    oldest = runtime().store.oldest_unfinished_s()
    send_metrics(
        {
            **{f"Runners_{outcome}": (MetricUnit.Count, n) for outcome, n in counts.items()},
            "OldestUnfinishedTurnAge": (MetricUnit.Seconds, oldest),
            "ApprovalsExpired": (MetricUnit.Count, expired),
        }
    )
    return {**counts, "approvals_expired": expired, "oldest_unfinished_s": round(oldest, 3)}
