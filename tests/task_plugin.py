"""Task workers for the tests (tests/test_tasks.py): each run is noted in `RUNS`, which
the test reads (handlers run in the test's process, under the emulator too)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime

from carrier_core.plugin import Plugin
from carrier_core.tasks import TaskContext, TaskResult, TaskWorker

#: (task id, due time run) of every run of `tick` and `remind`, in order.
RUNS: list[tuple[uuid.UUID, datetime]] = []
_lock = threading.Lock()


def _note(ctx: TaskContext) -> None:
    time.sleep(float(ctx.task.metadata.get("sleep", 0)))
    with _lock:
        RUNS.append((ctx.task.id, ctx.task.due_at))


def _tick(ctx: TaskContext) -> None:
    _note(ctx)


def _remind(ctx: TaskContext) -> TaskResult:
    _note(ctx)
    return TaskResult(message=str(ctx.task.metadata["text"]))


def _explode(ctx: TaskContext) -> None:
    raise RuntimeError("the task blew up")


def _never(ctx: TaskContext) -> bool:
    return False


plugin = Plugin(
    name="tasks",
    task_workers=[
        TaskWorker("tick", _tick),
        TaskWorker("remind", _remind),
        TaskWorker("explode", _explode),
        TaskWorker("declined", _tick, validate=_never),
    ],
)
