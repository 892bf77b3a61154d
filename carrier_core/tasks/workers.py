"""What a plugin's task worker is: ElizaOS's `TaskWorker`, run by Carrier's schedulers.

A plugin registers workers by name (`Plugin.task_workers`); a task names the worker that
runs it. The worker gets the task and the runtime, and may give back a message: said in
the task's room, it is taken in like a client's message and answered (a reminder that
starts a conversation, say).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carrier_core.character import Character
    from carrier_core.runtime import Runtime
    from carrier_core.store.tasks import Task


@dataclass(frozen=True)
class TaskContext:
    """What a worker runs with: the task (its `due_at` the due time being run), the
    agent's character, and the runtime (store, models, settings)."""

    runtime: Runtime
    task: Task
    character: Character
    #: The option a person chose, for a task that awaited a choice; None otherwise.
    option: str | None = None


@dataclass(frozen=True)
class TaskResult:
    #: Said in the task's room as a message from the task, and answered like any message.
    message: str | None = None


def _always(ctx: TaskContext) -> bool:
    return True


@dataclass(frozen=True)
class TaskWorker:
    """Runs the tasks that name it. `validate` false skips a due time: a repeating task
    waits for its next one, a one-shot task is looked at again by the next scheduler run."""

    name: str
    execute: Callable[[TaskContext], TaskResult | None]
    validate: Callable[[TaskContext], bool] = _always
