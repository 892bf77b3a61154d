"""Scheduled tasks, as rows: made, listed, deleted, claimed when due and updated after a run
(`carrier_core.tasks.run` says why a claim moves the task past its due time before the run).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from carrier_core.store.base import NotFound, StoreBase

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


class Task(NamedTuple):
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


#: A task's columns, in `Task`'s names.
_COLUMNS = (
    "id, tenant_id, agent_id, name, description, room_id, tags, metadata, due_at, status,"
    " runs, failures, last_run_at, last_error, created_at, updated_at"
)


def _task(row: DictRow) -> Task:
    return Task(**{**row, "status": TaskStatus(row["status"])})


class TaskStore(StoreBase):
    """Agents' tasks, and their claims by the schedulers."""

    def add_task(
        self,
        agent_id: uuid.UUID,
        name: str,
        *,
        description: str,
        room_id: uuid.UUID | None,
        tags: Sequence[str],
        metadata: Mapping[str, Any],
        due_at: datetime,
    ) -> Task:
        """Store a task (checked by the caller) under its agent's tenant, in one transaction
        with the checks that the agent and the room, if any, are there: `NotFound` if not."""
        with self.transaction() as conn:
            agent = conn.execute(
                "SELECT tenant_id FROM agents WHERE id = %s", (agent_id,)
            ).fetchone()
            if agent is None:
                raise NotFound(f"no agent with id {agent_id}")
            if room_id is not None:
                room = conn.execute(
                    "SELECT 1 FROM rooms WHERE id = %s AND agent_id = %s", (room_id, agent_id)
                ).fetchone()
                if room is None:
                    raise NotFound(f"agent {agent_id} has no room with id {room_id}")
            row = conn.execute(
                "INSERT INTO tasks (id, tenant_id, agent_id, name, description, room_id, tags,"
                " metadata, due_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {_COLUMNS}",
                (
                    uuid.uuid4(),
                    agent["tenant_id"],
                    agent_id,
                    name,
                    description,
                    room_id,
                    list(tags),
                    Jsonb(metadata),
                    due_at,
                ),
            ).fetchone()
        assert row is not None
        return _task(row)

    def tasks(self, agent_id: uuid.UUID | None = None) -> list[Task]:
        """The agent's tasks (None: every agent's), soonest due first."""
        condition, params = ("WHERE agent_id = %s", (agent_id,)) if agent_id else ("", ())
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM tasks {condition} ORDER BY due_at, id", params
            ).fetchall()
        return [_task(row) for row in rows]

    def delete_task(self, agent_id: uuid.UUID, task_id: uuid.UUID) -> bool:
        """Delete the agent's task (a failed one, or one no longer wanted); False if none."""
        with self.connection() as conn:
            deleted = conn.execute(
                "DELETE FROM tasks WHERE id = %s AND agent_id = %s", (task_id, agent_id)
            ).rowcount
        return deleted > 0

    def tasks_awaiting_choice(self, agent_id: uuid.UUID, room_id: uuid.UUID) -> list[Task]:
        """The agent's tasks in the room that wait for someone to choose an option."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE agent_id = %s AND room_id = %s"
                " AND %s = ANY(tags) ORDER BY created_at, id",
                (agent_id, room_id, AWAITING_CHOICE),
            ).fetchall()
        return [_task(row) for row in rows]

    def claim_due_task(self, now: datetime, passed_over: Collection[uuid.UUID] = ()) -> Task | None:
        """The task due longest ago at `now` (but those `passed_over`), claimed in one
        transaction: its row locked (`SKIP LOCKED`: one another scheduler holds is passed
        over), then moved past this due time, a repeating task to its next one, a one-shot
        task to `running`. None when nothing is due. The task returned has the due time
        being run."""
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE status = 'pending' AND due_at <= %s"
                " AND NOT id = ANY(%s) AND NOT %s = ANY(tags)"
                " ORDER BY due_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                (now, list(passed_over), AWAITING_CHOICE),
            ).fetchone()
            if row is None:
                return None
            task = _task(row)
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

    def record_task_run(self, task: Task, outcome: str, error: str | None = None) -> None:
        """Keep what a claimed task's run did ("ran", "failed" or "skipped"): a one-shot
        task that ran is deleted, one that failed kept `failed`, one skipped `pending`
        again; a repeating task counts the run (and the failure, with `error`)."""
        once = task.interval is None
        with self.connection() as conn:
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
