"""Task function (on a schedule, every minute): run the scheduled tasks that are due.

The tasks are rows in Postgres (`carrier_core.tasks`); this claims each due one and runs
its worker, a due time at most once even when two invocations overlap (a slow run, a
retried event). A worker's message is taken in, in the task's room, and the room's runner
is started as for a posted message.

An EventBridge rule (`rate(1 minute)`) rather than one EventBridge Scheduler schedule per
task: a rule is one resource of the stack, while per-task schedules would have to be made,
moved and deleted in step with the rows (a second store of the same truth, that can
disagree with the first), by a role that may pass another role to Scheduler. The rule
costs one invocation a minute whatever the tasks, and a task runs within a minute of its
due time: ElizaOS's tasks (reminders, periodic jobs) ask no better. Under `carrier dev`
the emulator's schedule thread calls this same function (`--schedule-interval` shortens
the minute).
"""

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from carrier_aws.clients import AwsClient
from carrier_aws.observability import accepted, function_handler, send_metrics
from carrier_aws.runners import start_claimed, state_machine_arn
from carrier_aws.runtime import runtime
from carrier_core.tasks import run_due_tasks
from carrier_core.turn.ingest import Ingested

#: Seconds kept back from the function's timeout when deciding to claim another task: the
#: longest a task's run may take without being cut off.
RUN_ALLOWANCE_S = 60

sfn = AwsClient("stepfunctions")


def submit(ingested: Ingested) -> None:
    accepted(ingested)
    start_claimed(sfn, state_machine_arn(), ingested.runner)


@function_handler
def handler(event: dict, context: LambdaContext) -> dict:
    remaining_s = context.get_remaining_time_in_millis() / 1000
    counts = run_due_tasks(runtime(), submit, budget_s=max(0.0, remaining_s - RUN_ALLOWANCE_S))
    send_metrics({f"Tasks_{outcome}": (MetricUnit.Count, n) for outcome, n in counts.items()})
    return dict(counts)
