"""What a plugin's task worker is: ElizaOS's `TaskWorker`, run by Carrier's schedulers.

A plugin registers workers by name (`Plugin.task_workers`); a task names the worker that
runs it. The worker gets the task and the runtime, and may give back a message: said in
the task's room, it is taken in like a client's message and answered (a reminder that
starts a conversation, say).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carrier_core.character import Character
    from carrier_core.runtime import Runtime

#: ElizaOS's metadata key for a repeating task's period, in milliseconds.
UPDATE_INTERVAL = "updateInterval"
#: ElizaOS's tag of a task that waits for someone to choose an option (CHOOSE_OPTION,
#: `carrier_core.bootstrap.choice`): never run by the scheduler.
AWAITING_CHOICE = "AWAITING_CHOICE"


class TaskStatus(StrEnum):
    #: Waiting for its due time.
    PENDING = "pending"
    #: A one-shot task claimed by a scheduler: deleted once it ran. One left running was
    #: claimed by a scheduler that stopped, and may have run: it is not run again.
    RUNNING = "running"
    #: A one-shot task whose run failed (`last_error`), kept to be seen.
    FAILED = "failed"


@dataclass(frozen=True)
class Task:
    id: uuid.UUID
    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    #: The worker that runs it.
    name: str
    description: str
    #: The room its messages are said in; None: it says none.
    room_id: uuid.UUID | None
    tags: list[str]
    #: The worker's own values; `updateInterval` (ms) makes it repeat.
    metadata: dict[str, Any]
    due_at: datetime
    status: TaskStatus
    runs: int
    failures: int
    last_run_at: datetime | None
    #: Why its last run failed; None after a run that did not.
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def interval(self) -> timedelta | None:
        """How often it runs; None: once."""
        every = self.metadata.get(UPDATE_INTERVAL)
        return None if every is None else timedelta(milliseconds=every)


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
