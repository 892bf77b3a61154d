"""Scheduled tasks (ElizaOS's Task): work a plugin's task worker does for an agent when it
is due, once or every `updateInterval` ms, perhaps starting a turn in a room."""

from carrier_core.store.tasks import UPDATE_INTERVAL, Task, TaskStatus
from carrier_core.tasks.create import InvalidTask, UnknownTaskWorker, create_task
from carrier_core.tasks.run import run_due_tasks
from carrier_core.tasks.workers import TaskContext, TaskResult, TaskWorker

__all__ = [
    "UPDATE_INTERVAL",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskResult",
    "TaskStatus",
    "TaskWorker",
    "UnknownTaskWorker",
    "create_task",
    "run_due_tasks",
]
