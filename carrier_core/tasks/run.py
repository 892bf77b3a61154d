"""Running due tasks, each due time at most once however many schedulers run at once.

A scheduler (the task function on its EventBridge schedule, or `carrier dev`'s schedule
thread calling it) claims one due task at a time: in one transaction it locks the row
(`FOR UPDATE SKIP LOCKED`: a row another scheduler holds is passed over, not waited
for) and moves it past this due time, a repeating task to its next one, a one-shot task
to `running`. Only then does the worker run, outside any transaction, so another
scheduler never finds that due time again, before, during or after the run. The price is
at most once, not exactly once: a scheduler that dies mid-run leaves its one-shot task
`running` (it may have run) and its repeating task's due time unrun.

After the run the outcome is recorded: a one-shot task that ran is deleted, one that
failed is kept `failed` with the reason; a repeating task keeps its runs, failures and
last error, and is due again either way. A message the worker gives is taken in, in the
task's room, under a client id made of the task and its due time (so a retried intake
cannot make it twice), and the room's runner is started by `submit`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from carrier_core.runtime import Runtime
from carrier_core.tasks.records import TASK_COLUMNS, task_from_row, unknown_worker
from carrier_core.tasks.workers import (
    AWAITING_CHOICE,
    Task,
    TaskContext,
    TaskResult,
    TaskStatus,
)
from carrier_core.turn.ingest import IncomingMessage, Ingested, ingest

log = logging.getLogger(__name__)

#: The longest failure reason kept.
MAX_ERROR_CHARS = 500


class TaskFailed(RuntimeError):
    """A task's run that cannot succeed as asked (no worker, no room for its message)."""


def claim_due(
    runtime: Runtime, now: datetime, passed_over: Collection[uuid.UUID] = ()
) -> Task | None:
    """The task due longest ago (but those `passed_over`), claimed for this scheduler (see
    the module's doc); None when nothing is due. The task returned has the due time being
    run."""
    with runtime.store.transaction() as conn:
        row = conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'pending' AND due_at <= %s"
            " AND NOT id = ANY(%s) AND NOT %s = ANY(tags)"
            " ORDER BY due_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
            (now, list(passed_over), AWAITING_CHOICE),
        ).fetchone()
        if row is None:
            return None
        task = task_from_row(row)
        interval = task.interval
        if interval is None:
            conn.execute(
                "UPDATE tasks SET status = 'running', updated_at = now() WHERE id = %s",
                (task.id,),
            )
        else:
            # Missed due times (the schedulers were down) are run once, not caught up on.
            following = task.due_at + interval
            conn.execute(
                "UPDATE tasks SET due_at = %s, updated_at = now() WHERE id = %s",
                (following if following > now else now + interval, task.id),
            )
    return task


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


def _record(runtime: Runtime, task: Task, outcome: str, error: str | None = None) -> None:
    """Keep what the run did: see the module's doc."""
    once = task.interval is None
    with runtime.store.connection() as conn:
        if outcome == "skipped":
            if once:  # looked at again by the next scheduler run
                conn.execute("UPDATE tasks SET status = 'pending' WHERE id = %s", (task.id,))
        elif once and outcome == "ran":
            conn.execute("DELETE FROM tasks WHERE id = %s", (task.id,))
        else:
            status = TaskStatus.FAILED if once else TaskStatus.PENDING
            conn.execute(
                "UPDATE tasks SET runs = runs + 1, last_run_at = now(), last_error = %s,"
                " failures = failures + %s, status = %s, updated_at = now() WHERE id = %s",
                (error, int(outcome == "failed"), status, task.id),
            )


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
            _record(runtime, task, "skipped")
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
        _record(runtime, task, "failed", f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        return "failed"
    _record(runtime, task, "ran")
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
        task = claim_due(runtime, now or datetime.now(UTC), declined)
        if task is None:
            break
        outcome = run_task(runtime, task, submit)
        counts[outcome] += 1
        if outcome == "skipped":
            declined.append(task.id)
    return counts
