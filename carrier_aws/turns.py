"""Start a turn's state machine, at most once per message, and wait for it to end."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any


def failure_reason(failure: dict[str, Any], limit: int = 500) -> str:
    """The reason a Catch passed on, as the turn keeps it: the error's type and message.

    A Lambda error's Cause is JSON with a stack trace and paths: that goes to the logs,
    never into the turn, which the API shows to clients.
    """
    name = str(failure.get("Error") or "Error")
    cause = failure.get("Cause") or ""
    try:
        detail = json.loads(cause)
    except (TypeError, ValueError):
        detail = None
    if isinstance(detail, dict) and "errorMessage" in detail:
        name = str(detail.get("errorType") or name)
        cause = str(detail["errorMessage"])
    return f"{name}: {cause}"[:limit]


#: Execution states that are final.
ENDED = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


class AttemptsExhausted(RuntimeError):
    """Every execution name of a turn is used by an execution that did not succeed."""


def execution_name(message_id: uuid.UUID, attempt: int = 0) -> str:
    """Derived from the message: a redelivered message can never start a second turn
    while one runs or has answered. A failed attempt leaves room for the next one."""
    return f"turn-{message_id}" + (f"-r{attempt}" if attempt else "")


def start_turn(
    sfn: Any,
    state_machine_arn: str,
    *,
    turn_id: uuid.UUID,
    agent_id: uuid.UUID,
    message_id: uuid.UUID,
    max_steps: int,
    attempts: int = 3,
) -> str:
    """Start the turn's execution, or find the one already running or done; returns its ARN.

    Execution names are kept for 90 days, so a turn whose execution failed (or timed out,
    or was stopped) gets a new attempt under the next name, at most `attempts` in all; its
    steps remember what they did, so the new attempt picks up where the last one stopped.
    """
    machine, _, machine_name = state_machine_arn.partition(":stateMachine:")
    execution_arn = ""
    for attempt in range(attempts):
        name = execution_name(message_id, attempt)
        try:
            started = sfn.start_execution(
                stateMachineArn=state_machine_arn,
                name=name,
                input=json.dumps(
                    {
                        "turn_id": str(turn_id),
                        "agent_id": str(agent_id),
                        "step": 1,
                        "max_steps": max_steps,
                    }
                ),
            )
            return str(started["executionArn"])
        except sfn.exceptions.ExecutionAlreadyExists:
            execution_arn = f"{machine}:execution:{machine_name}:{name}"
            if sfn.describe_execution(executionArn=execution_arn)["status"] in (
                "RUNNING",
                "SUCCEEDED",
            ):
                return execution_arn
    raise AttemptsExhausted(f"turn {turn_id}: its {attempts} executions all ended unsuccessfully")


def wait_for_turn(
    sfn: Any, execution_arn: str, *, timeout_s: float, poll_s: float = 0.2, max_poll_s: float = 2.0
) -> str:
    """Wait for the execution to end, so the next message of the room waits its turn.

    Returns the final status; raises TimeoutError if it is still running at the deadline
    (the queue then redelivers the message, which finds the same execution).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(sfn.describe_execution(executionArn=execution_arn)["status"])
        if status in ENDED:
            return status
        if time.monotonic() >= deadline:
            raise TimeoutError(f"turn execution {execution_arn} still {status}")
        time.sleep(poll_s)
        # Long turns are looked at less often: DescribeExecution is throttled per account.
        poll_s = min(poll_s * 1.5, max_poll_s)
