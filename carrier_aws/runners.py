"""Room runners on Step Functions: start them, move them from turn to turn, sweep them.

A runner (`carrier_core.turn.schedule`) is an execution of the turn state machine named
after its room and generation, so starting one twice is harmless. The execution asks
`turn_finish` for its room's next turn (`next_state`) until none is left. Nothing here
waits for an execution: the only `DescribeExecution` is the sweep's, once per room whose
runner's lease ran out, to tell a runner in a long retry from one that stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from carrier_core.turn.schedule import extend_lease, hand_off, next_turn, take_over

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime
    from carrier_core.store.runners import NextTurn, Runner, Stalled

log = logging.getLogger(__name__)

#: Turns one execution runs before it hands its room to a fresh one (Standard workflows
#: keep at most 25,000 history events; a turn takes about 30).
TURN_LIMIT = 100


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


#: Errors a Catch passes on when a turn ran out of time: given up after too many attempts
#: (the GiveUp state's `TurnAbandoned`), or a step's task or Lambda timed out.
TIMEOUT_ERRORS = frozenset(
    {
        "TurnAbandoned",
        "States.Timeout",
        "Sandbox.Timedout",
        "Lambda.ClientExecutionTimeoutException",
    }
)


def timed_out(failure: dict[str, Any]) -> bool:
    """Whether a Catch's failure is a time-out (the turn's RUN_TIMEOUT event)."""
    return str(failure.get("Error")) in TIMEOUT_ERRORS


def state_machine_arn() -> str:
    return os.environ["TURN_STATE_MACHINE_ARN"]


def start_runner(sfn: Any, machine_arn: str, runner: Runner) -> None:
    """Start the runner's execution; one already started under its name is left be."""
    state = {"room_id": str(runner.room_id), "generation": runner.generation, "turns": 0}
    with contextlib.suppress(sfn.exceptions.ExecutionAlreadyExists):
        sfn.start_execution(stateMachineArn=machine_arn, name=runner.name, input=json.dumps(state))


def start_claimed(sfn: Any, machine_arn: str, runner: Runner | None) -> None:
    """Start the runner a delivery claimed, if it claimed one. The message is stored
    already: if the start fails, the lease runs out and the sweep starts the room."""
    if runner is None:
        return
    try:
        start_runner(sfn, machine_arn, runner)
    except Exception:
        log.exception("room runner %s not started; the sweep will start it", runner.name)


def next_state(
    runtime: Runtime,
    runner: Runner,
    turns: int,
    start: Callable[[Runner], None],
    limit: int = TURN_LIMIT,
) -> dict[str, Any]:
    """The state machine's state for the runner's next turn; `turn_id` is None when the
    runner is done (nothing left, superseded, or handed over to a fresh execution)."""
    if turns >= limit:
        successor = hand_off(runtime, runner)
        if successor is not None:
            start(successor)
        return runner_state(runtime, runner, turns, None)
    return runner_state(runtime, runner, turns, next_turn(runtime, runner))


def runner_state(
    runtime: Runtime, runner: Runner, turns: int, turn: NextTurn | None
) -> dict[str, Any]:
    """The state machine's state for the runner's next turn `turn`, taken already (None:
    the runner is done)."""
    state: dict[str, Any] = {
        "room_id": str(runner.room_id),
        "generation": runner.generation,
        "turns": turns,
        "turn_id": None,
        # A Catch puts a step's failure here; the finish step records the turn failed then.
        "error": None,
    }
    if turn is None:
        return state
    return {
        **state,
        "turn_id": str(turn.turn_id),
        "agent_id": str(turn.agent_id),
        "message_id": str(turn.message_id),
        "step": 1,
        "max_steps": runtime.settings.max_steps,
        "give_up": turn.give_up,
    }


def _running(sfn: Any, machine_arn: str, runner: Runner) -> bool:
    """Whether the runner's execution runs: one DescribeExecution, never repeated here."""
    machine, _, name = machine_arn.partition(":stateMachine:")
    try:
        found = sfn.describe_execution(executionArn=f"{machine}:execution:{name}:{runner.name}")
    except sfn.exceptions.ExecutionDoesNotExist:
        return False
    return bool(found["status"] == "RUNNING")


def sweep_rooms(
    runtime: Runtime, sfn: Any, machine_arn: str, *, every_lease: bool = False
) -> Counter[str]:
    """Drive again the rooms whose runner stopped: a lease that ran out is extended if its
    execution still runs (a long step, a retry's wait), else the room gets a new runner,
    which takes up the stopped runner's turn. `every_lease`: look at held leases too
    (a new emulated account knows no execution from before it)."""
    counts: Counter[str] = Counter()
    for stalled in runtime.store.stalled_rooms(every_lease=every_lease):
        try:
            counts[_sweep_room(runtime, sfn, machine_arn, stalled)] += 1
        except Exception:  # a throttled call for one room must not leave the others
            log.exception("room %s not swept; the next sweep tries again", stalled.room_id)
            counts["failed"] += 1
    return counts


def _sweep_room(runtime: Runtime, sfn: Any, machine_arn: str, stalled: Stalled) -> str:
    runner = stalled.runner
    if runner is not None and _running(sfn, machine_arn, runner):
        extend_lease(runtime, runner)
        return "alive"
    successor = take_over(runtime, stalled)
    if successor is None:
        return "changed"  # renewed or taken over since it was read
    log.warning("room %s: runner stopped; starting %s", stalled.room_id, successor.name)
    start_runner(sfn, machine_arn, successor)
    return "restarted"
