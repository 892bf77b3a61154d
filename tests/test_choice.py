"""CHOOSE_OPTION and the pending-choice provider end to end with the scripted model: a
plugin asks the room to choose (`ask_choice`), the choice shows in the decide prompt, and
the option someone names runs the plugin's task worker with it; the scheduler never runs
a task that waits for a choice, and in a world only its owner and admins may choose."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from carrier_core import Character, Runtime
from carrier_core.bootstrap.choice import ask_choice
from carrier_core.models.scripted import ScriptedModel
from carrier_core.plugin import Plugin
from carrier_core.tasks import TaskContext, TaskResult, TaskWorker, run_due_tasks
from carrier_core.turn.run import run_turn
from tests.test_turn import message, xml

#: The options the worker ran with, in order (the handlers run in this process).
CHOSEN: list[str | None] = []


def _deploy(ctx: TaskContext) -> TaskResult:
    CHOSEN.append(ctx.option)
    return TaskResult(message=f"Deploying to {ctx.option}.")


plugin = Plugin(name="deployer", task_workers=[TaskWorker("deploy", _deploy)])

CHARACTER = Character(name="Ada", plugins=["tests.test_choice:plugin"])


@pytest.fixture(autouse=True)
def chosen() -> list[str | None]:
    CHOSEN.clear()
    return CHOSEN


def picked(task_id: uuid.UUID | str, option: str) -> str:
    return json.dumps({"choices": [{"taskId": str(task_id)[:8], "selectedOption": option}]})


def start(runtime: Runtime, scripted: ScriptedModel) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """An agent, a conversation in `lobby`, and a choice asked there: (agent, room, task)."""
    agent = runtime.register_agent(CHARACTER)
    scripted.add(xml("REPLY", text="Hello."))
    first = run_turn(runtime, message(agent, "hi"))
    room = runtime.store.turn(first.turn_id).room_id
    task = ask_choice(
        runtime, agent, room, "deploy", "Where to deploy v2", ["staging", "production"]
    )
    return agent, room, task.id


def test_the_option_named_runs_the_worker_with_it(
    scripted_runtime: Runtime, scripted: ScriptedModel, chosen: list[str | None]
) -> None:
    agent, room, task_id = start(scripted_runtime, scripted)
    scripted.add(xml("CHOOSE_OPTION"), picked(task_id, "Staging"))
    result = run_turn(scripted_runtime, message(agent, "let's go with staging"))

    decide_prompt = scripted.requests[-2].prompt
    assert "Where to deploy v2. Options: staging; production; or ABORT." in decide_prompt
    assert chosen == ["staging"]
    assert result.reply_texts == ["Where to deploy v2: staging.", "Deploying to staging."]
    assert scripted_runtime.store.tasks(agent) == []  # done with
    assert scripted_runtime.store.room(room).metadata.get("choices") is None
    # With no choice left, the next turn's prompt shows none and CHOOSE_OPTION is not offered.
    scripted.add(xml("REPLY", text="Sure."))
    run_turn(scripted_runtime, message(agent, "thanks"))
    assert "Choices waiting" not in scripted.requests[-1].prompt
    assert "CHOOSE_OPTION" not in scripted.requests[-1].prompt


def test_abort_cancels_and_an_unknown_option_changes_nothing(
    scripted_runtime: Runtime, scripted: ScriptedModel, chosen: list[str | None]
) -> None:
    agent, _, task_id = start(scripted_runtime, scripted)
    scripted.add(xml("CHOOSE_OPTION"), picked(task_id, "the moon"))
    unknown = run_turn(scripted_runtime, message(agent, "deploy to the moon"))
    assert unknown.reply_texts == ["the moon is not one of the options (staging, production)."]
    [step] = [s for s in scripted_runtime.store.turn_steps(unknown.turn_id) if s.key == "act:1:0"]
    assert step.status == "error" and "no option 'the moon'" in step.detail["error"]
    assert [t.id for t in scripted_runtime.store.tasks(agent)] == [task_id]

    scripted.add(xml("CHOOSE_OPTION"), picked(task_id, "abort"))
    cancelled = run_turn(scripted_runtime, message(agent, "never mind, cancel it"))
    assert cancelled.reply_texts == ["Cancelled: Where to deploy v2."]
    assert chosen == [] and scripted_runtime.store.tasks(agent) == []


def test_the_scheduler_never_runs_a_task_that_waits_for_a_choice(
    scripted_runtime: Runtime, scripted: ScriptedModel, chosen: list[str | None]
) -> None:
    agent, _, task_id = start(scripted_runtime, scripted)
    later = datetime.now(UTC) + timedelta(days=1)
    counts = run_due_tasks(scripted_runtime, lambda ingested: None, now=later)
    assert sum(counts.values()) == 0 and chosen == []
    assert [t.id for t in scripted_runtime.store.tasks(agent)] == [task_id]


def test_in_a_world_only_its_owner_and_admins_may_choose(
    scripted_runtime: Runtime, scripted: ScriptedModel, chosen: list[str | None]
) -> None:
    agent = scripted_runtime.register_agent(CHARACTER)
    in_world = {"world": "acme", "room_kind": "group"}
    scripted.add(xml("REPLY", text="Hello."))
    owner = run_turn(scripted_runtime, message(agent, "Ada, hi", **in_world))  # speaks first
    room = scripted_runtime.store.turn(owner.turn_id).room_id
    task = ask_choice(scripted_runtime, agent, room, "deploy", "Where to", ["staging", "prod"])

    scripted.add(xml("CHOOSE_OPTION"))  # the member's pick: validate declines, no extraction
    member = message(agent, "Ada, go with prod", sender="u2", sender_name="Bo", **in_world)
    refused = run_turn(scripted_runtime, member)
    [step] = [s for s in scripted_runtime.store.turn_steps(refused.turn_id) if s.key == "act:1:0"]
    assert step.status == "skipped" and chosen == []

    scripted.add(xml("CHOOSE_OPTION"), picked(task.id, "prod"))
    run_turn(scripted_runtime, message(agent, "Ada, go with prod", **in_world))
    assert chosen == ["prod"]
