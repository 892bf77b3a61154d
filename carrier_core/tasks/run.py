"""Running due tasks, each due time at most once however many schedulers run at once.

A scheduler (the task function on its EventBridge schedule, or `carrier dev`'s schedule
thread calling it) claims one due task at a time (`Store.claim_due_task`): in one
transaction it locks the row (`FOR UPDATE SKIP LOCKED`: a row another scheduler holds is
passed over, not waited for) and moves it past this due time, a repeating task to its
next one, a one-shot task to `running`. Only then does the worker run, outside any
transaction, so another scheduler never finds that due time again, before, during or
after the run. The price is at most once, not exactly once: a scheduler that dies mid-run
leaves its one-shot task `running` (it may have run) and its repeating task's due time
unrun.

After the run the outcome is recorded (`Store.record_task_run`): a one-shot task that ran
is deleted, one that failed is kept `failed` with the reason; a repeating task keeps its
runs, failures and last error, and is due again either way. A message the worker gives is
taken in, in the task's room, under a client id made of the task and its due time (so a
retried intake cannot make it twice), and the room's runner is started by `submit`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from carrier_core.tasks.create import unknown_worker
from carrier_core.tasks.workers import TaskContext, TaskResult
from carrier_core.turn.ingest import IncomingMessage, Ingested, ingest

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime
    from carrier_core.store.tasks import Task

log = logging.getLogger(__name__)

#: The longest failure reason kept.
MAX_ERROR_CHARS = 500


class TaskFailed(RuntimeError):
    """A task's run that cannot succeed as asked (no worker, no room for its message)."""


def _say(runtime: Runtime, task: Task, text: str) -> Ingested:
    """Take the worker's message in, in the task's room, as a client's would be."""
    if task.room_id is None:
        raise TaskFailed(f"task {task.id} has no room to say its message in")
    store = runtime.store
    room = store.room(task.room_id)
    world = store.world(room.world_id).name if room.world_id else None
    message = IncomingMessage(
        agent_id=task.agent_id,
        room=room.name,
        room_kind=room.kind,
        source=room.source,
        world=world,
        sender=f"task:{task.name}",
        sender_name=task.name,
        text=text,
        client_message_id=f"task:{task.id}:{task.due_at.isoformat()}",
    )
    return ingest(runtime, message)


def run_task(runtime: Runtime, task: Task, submit: Callable[[Ingested], None]) -> str:
    """Run a claimed task and record the outcome: "ran", "failed" or "skipped"."""
    try:
        character = runtime.store.character(task.agent_id)
        workers = runtime.plugins_for(character).task_workers
        worker = workers.get(task.name)
        if worker is None:
            raise TaskFailed(unknown_worker(task.name, list(workers)))
        ctx = TaskContext(runtime, task, character)
        if not worker.validate(ctx):
            runtime.store.record_task_run(task, "skipped")
            return "skipped"
        result = worker.execute(ctx)
        if result is not None and not isinstance(result, TaskResult):
            raise TaskFailed(
                f"task worker {task.name!r} returned a {type(result).__name__}, not a TaskResult"
            )
        if result is not None and result.message is not None:
            submit(_say(runtime, task, result.message))
    except Exception as exc:  # a failing worker must not stop the other tasks
        log.exception("task %s (%s) failed", task.id, task.name)
        runtime.store.record_task_run(
            task, "failed", f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        )
        return "failed"
    runtime.store.record_task_run(task, "ran")
    return "ran"


def run_due_tasks(
    runtime: Runtime,
    submit: Callable[[Ingested], None],
    *,
    now: datetime | None = None,
    budget_s: float | None = None,
) -> Counter[str]:
    """Run every task due at `now` (default: the time of each claim), one at a time,
    until none is due or `budget_s` seconds have gone (a task under way is finished);
    counts of the outcomes ("ran", "failed", "skipped")."""
    started = time.monotonic()
    counts: Counter[str] = Counter()
    # One-shot tasks their worker declined: due still, but not again in this run.
    declined: list[uuid.UUID] = []
    while budget_s is None or time.monotonic() - started < budget_s:
        task = runtime.store.claim_due_task(now or datetime.now(UTC), declined)
        if task is None:
            break
        outcome = run_task(runtime, task, submit)
        counts[outcome] += 1
        if outcome == "skipped":
            declined.append(task.id)
    return counts
