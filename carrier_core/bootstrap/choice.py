"""Choices a person makes by chat: CHOOSE_OPTION and the pending-choice provider.

A plugin that needs someone to pick (which of three drafts to post, whether to deploy)
asks with `ask_choice`: a task of its worker, tagged AWAITING_CHOICE, with the options
in its metadata (ElizaOS's shape: `options: [{name, description}]`). The scheduler never
runs such a task; the `choice` provider shows it in its room's prompt, and when someone
who may choose names an option, CHOOSE_OPTION runs the worker with it (`TaskContext.option`)
and the task is done. ABORT cancels it. In a world only its owner and admins choose, as
in ElizaOS; outside one, whoever the agent talks with in the room.

The room's metadata says whether it has choices waiting, so a room with none costs the
provider no query.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from carrier_core.bootstrap.roles import ask, world_role
from carrier_core.plugin import Action, ActionResult, Provider, ProviderResult
from carrier_core.store.tasks import AWAITING_CHOICE
from carrier_core.tasks import Task, TaskContext, TaskResult, create_task

if TYPE_CHECKING:
    from carrier_core.decision import Decision
    from carrier_core.runtime import Runtime
    from carrier_core.turn.context import TurnContext

#: The room metadata key that says choices wait there.
KEY = "choices"
ABORT = "ABORT"


def ask_choice(
    runtime: Runtime,
    agent_id: uuid.UUID,
    room_id: uuid.UUID,
    worker: str,
    description: str,
    options: Sequence[str | dict[str, str]],
    metadata: dict[str, Any] | None = None,
) -> Task:
    """Ask the room to choose among `options` (names, or `{name, description}`); the
    agent's task worker `worker` runs with the option chosen."""
    listed = [o if isinstance(o, dict) else {"name": o, "description": ""} for o in options]
    names = [str(o.get("name", "")).strip() for o in listed]
    if not names or not all(names) or len(set(n.upper() for n in names)) != len(names):
        raise ValueError("options: give one or more distinct, non-empty names")
    if ABORT in (n.upper() for n in names):
        raise ValueError(f"options: {ABORT} is kept for cancelling the choice")
    task = create_task(
        runtime,
        agent_id,
        worker,
        description=description,
        room_id=room_id,
        tags=[AWAITING_CHOICE],
        metadata={**(metadata or {}), "options": listed},
    )
    runtime.store.set_room_metadata(room_id, KEY, True)
    return task


def _waiting(ctx: TurnContext) -> list[Task]:
    if not ctx.room.metadata.get(KEY):
        return []
    return ctx.runtime.store.tasks_awaiting_choice(ctx.turn.agent_id, ctx.room.id)


def _options(task: Task) -> list[dict[str, str]]:
    found = task.metadata.get("options")
    return [o for o in found if isinstance(o, dict)] if isinstance(found, list) else []


def _listing(tasks: Sequence[Task]) -> str:
    lines = []
    for task in tasks:
        options = "; ".join(
            f"{o.get('name')}" + (f" ({o['description']})" if o.get("description") else "")
            for o in _options(task)
        )
        lines.append(f"- {str(task.id)[:8]}: {task.description}. Options: {options}; or {ABORT}.")
    return "\n".join(lines)


def _choices(ctx: TurnContext) -> ProviderResult:
    tasks = _waiting(ctx)
    if not tasks:
        return ProviderResult()
    ids = [str(t.id) for t in tasks]
    return ProviderResult(_listing(tasks), {"pending_choices": ids})


def _may_choose(ctx: TurnContext) -> bool:
    allowed = ctx.room.world_id is None or world_role(ctx) in ("OWNER", "ADMIN")
    return allowed and bool(ctx.room.metadata.get(KEY))


def _choose(ctx: TurnContext, decision: Decision) -> ActionResult:
    tasks = _waiting(ctx)
    if not tasks:
        return ActionResult(replies=["Nothing is waiting for a choice here."], error="no choice")
    picked = ask(
        ctx,
        "choose_option",
        f"Choices waiting:\n{_listing(tasks)}",
        'Answer with JSON {"choices": [{"taskId": "the id shown", "selectedOption": "name"}]}'
        " for the choice the message makes.",
        "choices",
    )
    for pick in picked:
        wanted_id = str(pick.get("taskId", "")).strip().lower()
        option = str(pick.get("selectedOption", "")).strip()
        task = next((t for t in tasks if wanted_id and str(t.id).startswith(wanted_id)), None)
        if task is None and len(tasks) == 1:
            task = tasks[0]  # one choice waits: the message can only mean that one
        if task is None:
            continue
        return _settle(ctx, task, option, tasks)
    return ActionResult(
        replies=["Which option do you choose?"], error="the message names no option of a choice"
    )


def _settle(ctx: TurnContext, task: Task, option: str, waiting: list[Task]) -> ActionResult:
    names = {str(o.get("name")).upper(): str(o.get("name")) for o in _options(task)}
    chosen = names.get(option.upper())
    if option.upper() != ABORT and chosen is None:
        offered = ", ".join(names.values())
        return ActionResult(
            replies=[f"{option or 'That'} is not one of the options ({offered})."],
            error=f"no option {option!r} in choice {task.id}",
        )
    said: list[str] = []
    values = {"task_id": str(task.id), "option": chosen or ABORT}
    if chosen is not None:
        worker = ctx.plugins.task_workers.get(task.name)
        if worker is None:
            return ActionResult(error=f"no task worker named {task.name!r}", values=values)
        result = worker.execute(TaskContext(ctx.runtime, task, ctx.character, option=chosen))
        said.append(f"{task.description}: {chosen}.")
        if isinstance(result, TaskResult) and result.message:
            said.append(result.message)
    else:
        said.append(f"Cancelled: {task.description}.")
    ctx.runtime.store.delete_task(ctx.turn.agent_id, task.id)
    if len(waiting) == 1:
        ctx.runtime.store.set_room_metadata(ctx.room.id, KEY, None)
    return ActionResult(replies=said, text=" ".join(said), values=values)


CHOICE_PROVIDER = Provider(
    "choice",
    "Choices waiting for someone here to pick an option.",
    _choices,
    "Choices waiting for an answer",
    67,
)

CHOOSE_OPTION = Action(
    "CHOOSE_OPTION",
    "Pick an option of a choice waiting here, as the message says (or ABORT to cancel it).",
    _choose,
    validate=_may_choose,
    similes=("SELECT_OPTION", "SELECT", "PICK", "CHOOSE"),
    examples=(("Let's go with the blue one", "Blue it is."),),
)
