"""Scheduled tasks: a plugin's task workers run what is due, once or every
`updateInterval`, each due time at most once, with failures kept where they can be seen;
a room's task starts a turn that is answered. Real parts throughout: the embedded Postgres,
the test plugin's workers (tests/task_plugin.py), the offline model, the emulator."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from carrier_core import Character, Runtime, Settings
from carrier_core.cli import main
from carrier_core.store.base import NotFound
from carrier_core.store.store import Store
from carrier_core.tasks import (
    InvalidTask,
    UnknownTaskWorker,
    create_task,
    run_due_tasks,
)
from carrier_core.world import LOCAL_TENANT_ID, room_id_for
from tests import task_plugin
from tests.conftest import TenantKey, make_runtime, run_inline

PLUGIN = "tests.task_plugin:plugin"


@pytest.fixture(autouse=True)
def runs() -> Iterator[list[tuple[uuid.UUID, datetime]]]:
    task_plugin.RUNS.clear()
    yield task_plugin.RUNS
    task_plugin.RUNS.clear()


def tasker(runtime: Runtime, tenant_id: uuid.UUID = LOCAL_TENANT_ID) -> uuid.UUID:
    return runtime.register_agent(Character(name="Tasker", plugins=[PLUGIN]), tenant_id)


@pytest.fixture
def agent(runtime: Runtime) -> uuid.UUID:
    return tasker(runtime)


def ran(task_id: uuid.UUID) -> int:
    return sum(1 for found, _ in task_plugin.RUNS if found == task_id)


def stored(store: Store, task_id: uuid.UUID) -> dict[str, object] | None:
    with store.connection() as conn:
        row = conn.execute(
            "SELECT status, runs, failures, last_error, due_at FROM tasks WHERE id = %s",
            (task_id,),
        ).fetchone()
    return dict(row) if row else None


def nothing(ingested: object) -> None:
    raise AssertionError("no task here says anything")


def test_a_repeating_task_fires_twice_and_a_one_shot_once_across_a_restart(
    database_url: str, runtime: Runtime, agent: uuid.UUID
) -> None:
    """`carrier dev`'s schedule thread (the emulator's) runs the task function; the tasks
    are rows, so a new emulator on the same database picks them up where the last left."""
    from carrier_aws.local.emulator import Emulator

    now = datetime.now(UTC)
    repeating = create_task(
        runtime, agent, "tick", metadata={"updateInterval": 1500}, due_at=now
    ).id
    once = create_task(runtime, agent, "tick", due_at=now).id

    def wait_for(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.02)

    with Emulator(database_url, schedule_interval_s=0.1):
        wait_for(lambda: ran(repeating) == 1 and ran(once) == 1, "the tasks did not run")
    assert stored(runtime.store, once) is None  # a one-shot task that ran is deleted
    first = stored(runtime.store, repeating)
    assert first is not None and first["runs"] == 1 and first["status"] == "pending"

    with Emulator(database_url, schedule_interval_s=0.1):
        wait_for(lambda: ran(repeating) == 2, "the repeating task did not run again")
    assert ran(once) == 1
    due_times = [due for found, due in task_plugin.RUNS if found == repeating]
    assert due_times[1] - due_times[0] >= timedelta(milliseconds=1500)
    again = stored(runtime.store, repeating)
    assert again is not None and again["runs"] >= 2 and again["failures"] == 0


def test_two_schedulers_racing_run_each_due_time_once(
    settings: Settings, runtime: Runtime, agent: uuid.UUID
) -> None:
    now = datetime.now(UTC)
    tasks = [create_task(runtime, agent, "tick", metadata={"sleep": 0.005}).id for _ in range(30)]
    tasks += [
        create_task(
            runtime, agent, "tick", metadata={"updateInterval": 60_000, "sleep": 0.005}, due_at=now
        ).id
        for _ in range(10)
    ]
    start = threading.Barrier(2)
    outcomes: list[Counter[str]] = []

    def scheduler() -> None:
        # A runtime of its own: its own pool, its own connections, as a second Lambda has.
        with Runtime.open(settings) as own:
            start.wait()
            outcomes.append(run_due_tasks(own, nothing))

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [ran(task) for task in tasks] == [1] * len(tasks)
    assert sum(o["ran"] for o in outcomes) == len(tasks)
    # Nothing is due any more: the one-shot tasks are gone, the repeating ones due in a minute.
    assert run_due_tasks(runtime, nothing) == Counter()
    assert len(runtime.store.tasks(agent)) == 10


def test_a_failing_worker_is_kept_failed_once_and_repeating_tries_again(
    runtime: Runtime, agent: uuid.UUID
) -> None:
    now = datetime.now(UTC)
    once = create_task(runtime, agent, "explode", due_at=now).id
    repeating = create_task(
        runtime, agent, "explode", metadata={"updateInterval": 60_000}, due_at=now
    ).id
    assert run_due_tasks(runtime, nothing, now=now) == Counter(failed=2)

    failed = stored(runtime.store, once)
    assert failed is not None
    assert (failed["status"], failed["runs"], failed["failures"]) == ("failed", 1, 1)
    assert failed["last_error"] == "RuntimeError: the task blew up"
    retried = stored(runtime.store, repeating)
    assert retried is not None
    assert (retried["status"], retried["failures"]) == ("pending", 1)
    assert retried["last_error"] == "RuntimeError: the task blew up"
    assert retried["due_at"] == now + timedelta(minutes=1)

    # The failed one-shot task is not run again; the repeating one is, when due again.
    assert run_due_tasks(runtime, nothing, now=now + timedelta(seconds=30)) == Counter()
    assert run_due_tasks(runtime, nothing, now=now + timedelta(minutes=1)) == Counter(failed=1)
    again = stored(runtime.store, repeating)
    assert again is not None and again["failures"] == 2


def test_an_unknown_worker_is_refused_and_one_gone_since_is_recorded(
    runtime: Runtime, agent: uuid.UUID
) -> None:
    with pytest.raises(UnknownTaskWorker, match=r"no task worker named 'tock'.*tick"):
        create_task(runtime, agent, "tock")

    task = create_task(runtime, agent, "tick").id
    # The plugin is taken off the character: its workers with it.
    runtime.register_agent(Character(name="Tasker"))
    assert run_due_tasks(runtime, nothing) == Counter(failed=1)
    found = stored(runtime.store, task)
    assert found is not None and found["status"] == "failed"
    assert found["last_error"] == (
        "TaskFailed: no task worker named 'tick' in the agent's plugins (known: none)"
    )
    assert ran(task) == 0


def test_a_worker_that_declines_leaves_its_one_shot_task_due(
    runtime: Runtime, agent: uuid.UUID
) -> None:
    task = create_task(runtime, agent, "declined").id
    assert run_due_tasks(runtime, nothing) == Counter(skipped=1)
    assert run_due_tasks(runtime, nothing) == Counter(skipped=1)
    found = stored(runtime.store, task)
    assert found is not None and (found["status"], found["runs"]) == ("pending", 0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metadata": {"updateInterval": "soon"}}, "metadata.updateInterval: must be a positive"),
        ({"metadata": {"updateInterval": 0}}, "metadata.updateInterval: must be a positive"),
        ({"metadata": {"note": "a\x00b"}}, "metadata: must not contain NUL"),
        ({"due_at": datetime(2030, 1, 1)}, "due_at: must say its time zone"),
        ({"tags": "daily"}, "tags: must be a list"),
        ({"description": "x" * 2001}, "description: 2001 characters, the limit is 2000"),
    ],
)
def test_a_bad_task_is_refused_naming_what_is_wrong(
    runtime: Runtime, agent: uuid.UUID, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidTask, match=message):
        create_task(runtime, agent, "tick", **fields)  # type: ignore[arg-type]


def test_a_task_of_another_agent_s_room_is_refused(runtime: Runtime, agent: uuid.UUID) -> None:
    with pytest.raises(NotFound, match="has no room"):
        create_task(runtime, agent, "remind", room_id=uuid.uuid4())


def test_a_room_task_s_message_starts_a_turn_that_is_answered(
    runtime: Runtime, agent: uuid.UUID, api: TestClient
) -> None:
    from carrier_core.tenants import create_key

    headers = {"Authorization": f"Bearer {create_key(runtime.store, LOCAL_TENANT_ID).secret}"}
    base = f"/v1/agents/{agent}/rooms/standup"
    posted = api.post(
        f"{base}/messages", json={"text": "Hello", "sender": "grace"}, headers=headers
    )
    assert posted.status_code == 202, posted.text
    room_id = room_id_for(agent, "api", "standup")
    task = create_task(
        runtime, agent, "remind", room_id=room_id, metadata={"text": "Time for the standup!"}
    )

    assert run_due_tasks(runtime, run_inline(runtime)) == Counter(ran=1)
    messages = api.get(f"{base}/messages", headers=headers).json()["data"]
    said = [m for m in messages if m["text"] == "Time for the standup!"]
    assert len(said) == 1 and not said[0]["from_agent"]
    turn = api.get(f"/v1/turns/{said[0]['turn_id']}", headers=headers).json()
    assert turn["status"] == "done" and turn["replies"], turn
    assert runtime.store.tasks(agent) == []  # a one-shot task that ran
    assert ran(task.id) == 1


def test_a_message_from_a_task_without_a_room_is_recorded_as_its_failure(
    runtime: Runtime, agent: uuid.UUID
) -> None:
    task = create_task(runtime, agent, "remind", metadata={"text": "hello?"}).id
    assert run_due_tasks(runtime, nothing) == Counter(failed=1)
    found = stored(runtime.store, task)
    assert found is not None and found["last_error"] == (
        f"TaskFailed: task {task} has no room to say its message in"
    )


def test_the_api_lists_an_agent_s_tasks_to_its_tenant_only(
    store: Store, api: TestClient, make_tenant: Callable[[str], TenantKey]
) -> None:
    acme = make_tenant("acme")
    globex = make_tenant("globex")
    runtime = make_runtime(store)
    agent = tasker(runtime, acme.tenant_id)
    later = datetime.now(UTC) + timedelta(hours=1)
    daily = create_task(
        runtime,
        agent,
        "tick",
        description="every day",
        tags=["daily"],
        metadata={"updateInterval": 86_400_000},
        due_at=later,
    )
    create_task(runtime, agent, "tick", due_at=later + timedelta(hours=1))

    listed = api.get("/v1/agents/tasker/tasks", headers=acme.headers)
    assert listed.status_code == 200, listed.text
    first, second = listed.json()
    assert first["id"] == str(daily.id) and first["repeating"] is True
    assert (first["name"], first["description"], first["tags"]) == ("tick", "every day", ["daily"])
    assert first["status"] == "pending" and first["runs"] == 0 and first["last_error"] is None
    assert second["repeating"] is False

    for path in (f"/v1/agents/{agent}/tasks", "/v1/agents/tasker/tasks"):
        refused = api.get(path, headers=globex.headers)
        assert refused.status_code == 404, refused.text
    gone = api.delete(f"/v1/agents/{agent}/tasks/{daily.id}", headers=globex.headers)
    assert gone.status_code == 404
    assert (
        api.delete(f"/v1/agents/{agent}/tasks/{daily.id}", headers=acme.headers).status_code == 204
    )
    assert [t.id for t in store.tasks(agent)] != [daily.id]
    assert len(store.tasks(agent)) == 1


def test_carrier_tasks_list_shows_them(
    database_url: str,
    runtime: Runtime,
    agent: uuid.UUID,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["tasks", "list"]) == 0
    assert "no tasks" in capsys.readouterr().err
    task = create_task(runtime, agent, "tick", metadata={"updateInterval": 90_000})
    create_task(runtime, agent, "explode")
    run_due_tasks(runtime, nothing)

    assert main(["tasks", "list", "--agent", "tasker"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["agent", "name", "due", "every", "status"]
    assert len(rows) == 2
    failed = next(row for row in rows if "explode" in row)
    assert "once" in failed and "failed" in failed and "RuntimeError: the task blew up" in failed
    pending = next(row for row in rows if str(task.id) in row)
    assert "90s" in pending and "pending" in pending
    assert main(["tasks", "list", "--agent", "nobody"]) == 2
