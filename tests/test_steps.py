"""The turn flow is written twice, `run_steps` in one process and the state machine in the
cloud; both are held to the one table of steps in `carrier_core/turn/steps.py`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from carrier_core import Character, Runtime
from carrier_core.turn.run import run_turn
from carrier_core.turn.steps import STEPS, FlowError, StepName, check_move
from tests.conftest import ROOT
from tests.test_turn import message

ASL = json.loads((ROOT / "statemachine" / "turn.asl.json").read_text())


def _states(machine: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every state by name, those inside Map item processors too."""
    found: dict[str, dict[str, Any]] = {}
    for name, state in machine["States"].items():
        found[name] = state
        if state["Type"] == "Map":
            found.update(_states(state["ItemProcessor"]))
    return found


STATES = _states(ASL)
#: Where each Map goes when an item's processor ends: the next item (its start again) and,
#: after the last, the Map's own Next.
_MAP_ENDS = {
    state["ItemProcessor"]["StartAt"]: state
    for state in ASL["States"].values()
    if state["Type"] == "Map"
}


def _map_of(name: str) -> dict[str, Any] | None:
    for map_state in _MAP_ENDS.values():
        if name in map_state["ItemProcessor"]["States"]:
            return map_state
    return None


def _successors(name: str) -> set[str]:
    """The names of the states a state may pass control to, without failures (Catch)."""
    state = STATES[name]
    nexts: set[str] = set()
    if "Next" in state:
        nexts.add(state["Next"])
    for choice in state.get("Choices", []):
        nexts.add(choice["Next"])
    if "Default" in state:
        nexts.add(state["Default"])
    if state["Type"] == "Map":
        nexts.add(state["ItemProcessor"]["StartAt"])
    if state.get("End"):
        enclosing = _map_of(name)
        if enclosing is not None:
            nexts |= {enclosing["ItemProcessor"]["StartAt"], enclosing["Next"]}
    return nexts


def _next_steps(name: str) -> set[str]:
    """The step states reachable from a step state through states that are not steps."""
    seen, found, todo = set(), set(), list(_successors(name))
    while todo:
        at = todo.pop()
        if at in seen:
            continue
        seen.add(at)
        if at in STEPS:
            found.add(at)
        else:
            todo.extend(_successors(at))
    return found


def _is_step(state: dict[str, Any]) -> bool:
    return state["Type"] == "Task"


def test_the_state_machines_tasks_are_exactly_the_steps_of_the_table() -> None:
    tasks = {name for name, state in STATES.items() if _is_step(state)}
    assert tasks == {str(step) for step in STEPS}


@pytest.mark.parametrize("step", list(StepName))
def test_each_step_is_run_by_its_host_and_followed_as_the_table_says(step: StepName) -> None:
    state = STATES[step]
    host = STEPS[step].host
    if host.endswith("Function"):
        parameters = state["Parameters"]
        assert parameters["FunctionName"] == f"${{{host}Arn}}"
        assert parameters["Payload"]["op"] == step, "a function is invoked with its step's name"
    else:
        assert state["Parameters"]["QueueUrl"] == f"${{{host}Url}}"
    assert _next_steps(step) == {str(s) for s in STEPS[step].then}


def test_a_failure_is_caught_into_the_finish_step_from_every_step_that_can_fail() -> None:
    for step in (StepName.DECIDE, StepName.EVALUATE, StepName.EMBED):
        assert {c["Next"] for c in STATES[step]["Catch"]} == {"finish"}
    assert {c["Next"] for c in ASL["States"]["actions"]["Catch"]} == {"finish"}


def test_the_local_loop_refuses_a_move_the_table_does_not_allow() -> None:
    assert check_move(StepName.DECIDE, StepName.ACT) is StepName.ACT
    assert check_move(StepName.ACT, StepName.FINISH) is StepName.FINISH  # a failure
    with pytest.raises(FlowError, match="'evaluate' may not be followed by 'act'"):
        check_move(StepName.EVALUATE, StepName.ACT)


def test_the_local_loop_records_its_steps_under_the_tables_names(
    runtime: Runtime, ada: Character
) -> None:
    agent = runtime.register_agent(ada)
    result = run_turn(runtime, message(agent, "My name is Grace"))
    recorded = {s.step.partition(":")[0] for s in runtime.store.turn_steps(result.turn_id)}
    assert recorded - {"ingest"} <= {str(s) for s in STEPS}
    assert {"decide", "act"} <= recorded
