"""Making an agent's task (by plugins and actions, with `create_task`), checked first.

A task is checked when it is made: its worker must be one of the agent's plugins', its
room one of the agent's rooms, its `updateInterval` a positive number of milliseconds,
its metadata JSON Postgres can store. A worker that goes missing later (a plugin taken
off the character) is reported where the task's runs are (`last_error`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from carrier_core.storable import check_storable_json, storable
from carrier_core.store.tasks import UPDATE_INTERVAL, Task

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime

#: Longest worker name, description and tag.
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 2000
MAX_TAGS = 20


class InvalidTask(ValueError):
    """A task that cannot be made; the text names the field and the problem."""


class UnknownTaskWorker(InvalidTask):
    """No plugin of the agent registers a task worker of that name."""


def unknown_worker(name: str, known: Sequence[str]) -> str:
    """Why a task's worker cannot be found, naming those that can."""
    listed = ", ".join(sorted(known)) or "none"
    return f"no task worker named {name!r} in the agent's plugins (known: {listed})"


def _interval(metadata: Mapping[str, Any]) -> timedelta | None:
    every = metadata.get(UPDATE_INTERVAL)
    if every is None:
        return None
    if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
        raise InvalidTask(
            f"metadata.{UPDATE_INTERVAL}: must be a positive whole number of milliseconds,"
            f" not {every!r}"
        )
    return timedelta(milliseconds=every)


def _checked_text(field: str, text: str, limit: int) -> str:
    try:
        storable(text)
    except ValueError as exc:
        raise InvalidTask(f"{field}: {exc}") from None
    if len(text) > limit:
        raise InvalidTask(f"{field}: {len(text)} characters, the limit is {limit}")
    return text


def create_task(
    runtime: Runtime,
    agent_id: uuid.UUID,
    name: str,
    *,
    description: str = "",
    room_id: uuid.UUID | None = None,
    tags: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    due_at: datetime | None = None,
) -> Task:
    """Schedule work for the agent's task worker `name`: once at `due_at` (default: now),
    or, with `metadata["updateInterval"]` (ms), every interval from `due_at` (default: one
    interval from now). Raises `UnknownTaskWorker`, `InvalidTask`, or `NotFound` for an
    unknown agent or a room not the agent's."""
    metadata = dict(metadata or {})
    if not name.strip():
        raise InvalidTask("name: must not be empty")
    _checked_text("name", name, MAX_NAME_CHARS)
    _checked_text("description", description, MAX_DESCRIPTION_CHARS)
    if isinstance(tags, str) or len(tags) > MAX_TAGS:
        raise InvalidTask(f"tags: must be a list of at most {MAX_TAGS} strings")
    for tag in tags:
        _checked_text("tags", tag, MAX_NAME_CHARS)
    try:
        check_storable_json(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidTask(f"metadata: {exc}") from None
    interval = _interval(metadata)
    if due_at is not None and due_at.tzinfo is None:
        raise InvalidTask("due_at: must say its time zone")
    workers = runtime.plugins_for(runtime.store.character(agent_id)).task_workers
    if name not in workers:
        raise UnknownTaskWorker(unknown_worker(name, list(workers)))
    now = datetime.now(UTC)
    due = due_at or (now + interval if interval else now)
    return runtime.store.add_task(
        agent_id,
        name,
        description=description,
        room_id=room_id,
        tags=tags,
        metadata=metadata,
        due_at=due,
    )
