"""Scheduled tasks of an agent: listed, and deleted (a failed one, say).

Plugins make tasks (`carrier_core.tasks.create_task`); here a tenant sees what is
scheduled, when it is due, how its runs went, and why the last one failed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel

from carrier_core.api.deps import AgentRef, Caller, RuntimeDep
from carrier_core.api.posting import agent_of
from carrier_core.auth import Principal
from carrier_core.runtime import Runtime
from carrier_core.store.base import NotFound
from carrier_core.store.tasks import Task, TaskStatus

router = APIRouter(prefix="/v1/agents/{agent}/tasks", tags=["tasks"])


class TaskView(BaseModel):
    id: uuid.UUID
    agent_id: uuid.UUID
    #: The task worker that runs it.
    name: str
    description: str
    #: The room its messages are said in (the room's id); null: none.
    room_id: uuid.UUID | None
    tags: list[str]
    #: The worker's values; `updateInterval` (ms) makes the task repeat.
    metadata: dict[str, Any]
    #: Whether it runs every `updateInterval` ms rather than once.
    repeating: bool
    #: When it runs next.
    due_at: datetime
    #: pending; running (a one-shot task under way); failed (a one-shot task whose run
    #: failed: see last_error).
    status: TaskStatus
    runs: int
    failures: int
    last_run_at: datetime | None
    #: Why the last run failed; null if it did not.
    last_error: str | None
    created_at: datetime
    updated_at: datetime


def task_view(task: Task) -> TaskView:
    return TaskView(
        id=task.id,
        agent_id=task.agent_id,
        name=task.name,
        description=task.description,
        room_id=task.room_id,
        tags=task.tags,
        metadata=task.metadata,
        repeating=task.interval is not None,
        due_at=task.due_at,
        status=task.status,
        runs=task.runs,
        failures=task.failures,
        last_run_at=task.last_run_at,
        last_error=task.last_error,
        created_at=task.created_at,
        updated_at=task.updated_at,
    )


def _allowed(runtime: Runtime, principal: Principal, agent: str) -> uuid.UUID:
    principal.require_key("managing tasks")
    return agent_of(runtime, principal, agent).id


@router.get("", response_model=list[TaskView])
def list_agent_tasks(runtime: RuntimeDep, principal: Caller, agent: AgentRef) -> list[TaskView]:
    """The agent's tasks, soonest due first."""
    agent_id = _allowed(runtime, principal, agent)
    return [task_view(task) for task in runtime.store.tasks(agent_id)]


@router.delete("/{task_id}", status_code=204, response_class=Response)
def delete(runtime: RuntimeDep, principal: Caller, agent: AgentRef, task_id: uuid.UUID) -> Response:
    """Delete a task: it is not run again (a run under way finishes)."""
    agent_id = _allowed(runtime, principal, agent)
    if not runtime.store.delete_task(agent_id, task_id):
        raise NotFound(f"no task with id {task_id}")
    return Response(status_code=204)
