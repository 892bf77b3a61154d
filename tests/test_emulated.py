"""The serverless bundle on emulated AWS: API → SQS → Step Functions → handlers → Postgres.

Everything runs in this process: moto emulates SQS and Step Functions, the state
machine's Lambda tasks reach the handlers in functions/ through the emulator's
invoke hook, and the emulator polls the queues as Lambda's event sources would.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from carrier_aws.local.emulator import Emulator
from carrier_core import Character, Runtime
from carrier_core.memory import MemoryKind
from carrier_core.store.store import Store
from carrier_core.tenants import create_key
from carrier_core.turn.ingest import ingest
from carrier_core.turn.schedule import next_turn
from carrier_core.world import LOCAL_TENANT_ID
from tests import sample_plugin
from tests.conftest import ROOT, TenantKey
from tests.dev_server import carrier_chat, carrier_dev, offline_environment
from tests.jwks import AUDIENCE, ISSUER, Issuer
from tests.test_webhooks import Receiver, assert_signed, register, serving

pytestmark = pytest.mark.skipif(
    not (ROOT / "template.yaml").is_file(), reason="no template.yaml yet"
)

ASL = ROOT / "statemachine" / "turn.asl.json"
EVENTS = sorted((ROOT / "events").glob("*.json"))
#: Retry waits are real sleeps in moto: a hundredth of the template's keeps tests fast.
RETRY_SCALE = 0.01


@pytest.fixture
def emulator(database_url: str, store: Store) -> Iterator[Emulator]:
    """A clean database and a fresh emulated account."""
    with Emulator(database_url, retry_interval_scale=RETRY_SCALE) as emu:
        yield emu


@pytest.fixture
def client(emulator: Emulator, store: Store) -> TestClient:
    """The API with a key of the local tenant, whose agents `register_agent` stores."""
    key = create_key(store, LOCAL_TENANT_ID).secret
    return TestClient(emulator.app, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def agent_id(runtime: Runtime, ada: Character) -> uuid.UUID:
    return runtime.register_agent(ada)


@pytest.fixture
def flaky() -> Iterator[dict[str, Any]]:
    saved = dict(sample_plugin.FLAKY)
    yield sample_plugin.FLAKY
    sample_plugin.FLAKY.clear()
    sample_plugin.FLAKY.update(saved)


def post(client: TestClient, agent: uuid.UUID, text: str, room: str = "r1") -> dict[str, Any]:
    response = client.post(
        f"/v1/agents/{agent}/rooms/{room}/messages", json={"text": text, "sender": "grace"}
    )
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def wait_turn(client: TestClient, turn_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        turn: dict[str, Any] = client.get(f"/v1/turns/{turn_id}").json()
        if turn["status"] in ("done", "failed"):
            return turn
        assert time.monotonic() < deadline, f"turn still {turn['status']}"
        time.sleep(0.02)


def runners_of(emulator: Emulator, store: Store, turn_id: str) -> list[dict[str, Any]]:
    """The executions of the turn's room's runners (room-<room id>-g<generation>), in order."""
    room_id = store.turn(uuid.UUID(turn_id)).room_id
    found = [e for e in emulator.executions() if e["name"].startswith(f"room-{room_id}-g")]
    return sorted(found, key=lambda e: int(e["name"].rsplit("-g", 1)[1]))


def runner_of(emulator: Emulator, store: Store, turn_id: str) -> dict[str, Any]:
    [found] = runners_of(emulator, store, turn_id)
    return found


def turn_spans(store: Store, room_id: uuid.UUID) -> list[tuple[Any, Any, int]]:
    """Each turn of a room as (first step's start, last step's end, its message's seq),
    in order of its message's arrival."""
    found = rows(
        store,
        "SELECT min(s.started_at) AS began, max(s.finished_at) AS ended, m.seq"
        " FROM turns t JOIN memories m ON m.id = t.message_id JOIN turn_steps s"
        f" ON s.turn_id = t.id AND s.step <> 'ingest' WHERE t.room_id = '{room_id}'"
        " GROUP BY t.id, m.seq ORDER BY m.seq",
    )
    return [(r["began"], r["ended"], r["seq"]) for r in found]


def rows(store: Store, sql: str) -> list[dict[str, Any]]:
    with store._pool.connection() as conn:
        return list(conn.execute(sql).fetchall())


def count(store: Store, sql: str) -> int:
    [row] = rows(store, sql)
    return int(next(iter(row.values())))


def decide_retrier(names: tuple[str, ...] = ()) -> dict[str, Any]:
    """The decide state's first Retry rule for errors a model raises (no `.` in the name)."""
    decide = json.loads(ASL.read_text())["States"]["decide"]
    for rule in decide.get("Retry", []):
        if any("." not in name for name in rule["ErrorEquals"]):
            retry: dict[str, Any] = rule
            return retry
    pytest.fail("the Decide state retries no model error")


def retried_error(retry: dict[str, Any]) -> str:
    """One of our own error names that a Retry rule retries (not a States./Lambda. one)."""
    return next(n for n in retry["ErrorEquals"] if "." not in n)


def flaky_agent(runtime: Runtime, name: str) -> uuid.UUID:
    """An agent whose models are the sample plugin's flaky ones (see the `flaky` fixture)."""
    return runtime.register_agent(
        Character(
            name=name,
            plugins=["tests.sample_plugin:flaky"],
            settings={"model_provider": "flaky"},
        )
    )


def test_a_turn_runs_through_the_api_queue_state_machine_and_handlers(
    emulator: Emulator, client: TestClient, agent_id: uuid.UUID, store: Store
) -> None:
    accepted = post(client, agent_id, "My name is Grace")
    turn = wait_turn(client, accepted["turn_id"])

    assert turn["status"] == "done" and turn["error"] is None
    assert [r["text"] for r in turn["replies"]] == [
        "Nice to meet you, Grace. What would you like to talk about?"
    ]
    emulator.drain()
    # The post found the room idle and started its runner, which ran the turn and ended.
    runner = runner_of(emulator, store, accepted["turn_id"])
    assert runner["status"] == "SUCCEEDED"
    steps = [s.step for s in store.turn_steps(uuid.UUID(accepted["turn_id"]))]
    assert steps[:3] == ["ingest", "decide", "act:REPLY"]
    assert emulator.invocations["IngestFunction"] == 0  # the API stores messages itself
    # The end of the turn queued an embed request, which the embed queue's poller ran.
    assert emulator.invocations["MemoryEmbedFunction"] >= 1
    assert count(store, "SELECT count(*) FROM memories WHERE embedding IS NULL") == 0


def test_the_state_machine_reaches_the_handlers_through_the_invoke_hook(
    emulator: Emulator, client: TestClient, agent_id: uuid.UUID
) -> None:
    """The hook patches a private moto API; if moto stops calling it, this fails."""
    # A Lambda invoke reaches the handler, and a handler error is a Lambda function error
    # (without the hook, moto's simple backend would echo the payload back).
    answer = emulator.client("lambda").invoke(
        FunctionName=emulator.functions["LlmStepFunction"].spec.arn,
        Payload=json.dumps({"op": "nonsense", "turn_id": str(uuid.uuid4())}),
    )
    assert answer.get("FunctionError") == "Unhandled"
    error = json.load(answer["Payload"])
    assert error["errorType"] == "ValueError" and "unknown op" in error["errorMessage"]
    assert emulator.hooked_invocations == {"LlmStepFunction": 1}

    accepted = post(client, agent_id, "Hello there")
    assert wait_turn(client, accepted["turn_id"])["status"] == "done"
    emulator.drain()
    assert emulator.hooked_invocations == {
        # The invoke above, then decide (which says the simple reply itself) and evaluate.
        "LlmStepFunction": 3,
        "TurnFinishFunction": 2,  # the runner's first turn, then finish (and nothing next)
    }


def test_a_dynamic_provider_the_model_names_makes_the_state_machine_decide_again(
    emulator: Emulator, client: TestClient, runtime: Runtime, store: Store
) -> None:
    """The forecaster's model asks for `weather_now` (a dynamic provider) and answers once
    its prompt shows it: the second decide step, another Lambda invocation, composes it
    from the turn's stored state, and only the second step's actions run."""
    agent = runtime.register_agent(
        Character(
            name="Forecaster",
            plugins=["tests.sample_plugin:forecaster"],
            settings={"model_provider": "forecaster"},
        )
    )
    accepted = post(client, agent, "Do I need an umbrella?")
    turn = wait_turn(client, accepted["turn_id"])
    assert turn["status"] == "done", turn["error"]
    assert [r["text"] for r in turn["replies"]] == [f"Take an umbrella: {sample_plugin.FORECAST}"]
    emulator.drain()
    steps = [s.step for s in store.turn_steps(uuid.UUID(accepted["turn_id"]))]
    assert steps[:4] == ["ingest", "decide", "decide", "act:REPLY"]
    assert emulator.invocations["LlmStepFunction"] == 3  # two decide steps, then evaluate
    # The second step's REPLY, with its text, is a simple reply: the step said it itself.
    assert emulator.invocations.get("ActionExecFunction", 0) == 0


def test_a_message_delivered_three_times_at_once_is_one_turn_and_one_reply(
    emulator: Emulator, client: TestClient, agent_id: uuid.UUID, store: Store
) -> None:
    body = {"text": "I like sailing", "sender": "grace", "client_message_id": "m-1"}
    record = json.dumps({**body, "agent_id": str(agent_id), "room": "r1", "source": "api"})
    # Two posts at once and a queued delivery the FIFO deduplication does not catch.
    emulator.sqs.send_message(
        QueueUrl=emulator.queue_url("IngestQueue"),
        MessageBody=record,
        MessageGroupId=hashlib.sha256(b"r1").hexdigest(),
        MessageDeduplicationId="delivery-sqs",
    )
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda _: client.post(f"/v1/agents/{agent_id}/rooms/r1/messages", json=body),
                range(2),
            )
        )
    assert [a.status_code for a in answers] == [202, 202]
    emulator.drain()

    assert emulator.invocations["IngestFunction"] >= 1
    assert count(store, "SELECT count(*) FROM turns") == 1
    assert count(store, "SELECT count(*) FROM memories WHERE kind = 'message'") == 2
    [turn_id] = [str(r["id"]) for r in rows(store, "SELECT id FROM turns")]
    assert {a.json()["turn_id"] for a in answers} == {turn_id}
    assert runner_of(emulator, store, turn_id)["status"] == "SUCCEEDED"
    assert len(store.turn_memories(uuid.UUID(turn_id), MemoryKind.MESSAGE)) == 1
    assert store.turn(uuid.UUID(turn_id)).status == "done"


def test_twenty_concurrent_posts_to_one_room_are_answered_one_at_a_time_in_order(
    emulator: Emulator, client: TestClient, agent_id: uuid.UUID, store: Store
) -> None:
    texts = [f"message {n}" for n in range(20)]
    with ThreadPoolExecutor(8) as pool:
        accepted = list(pool.map(lambda text: post(client, agent_id, text), texts))
    turns = [wait_turn(client, a["turn_id"], timeout=60) for a in accepted]
    emulator.drain()

    assert [t["status"] for t in turns] == ["done"] * 20
    assert all(len(t["replies"]) == 1 for t in turns)
    room_id = store.turn(uuid.UUID(accepted[0]["turn_id"])).room_id
    spans = turn_spans(store, room_id)
    assert len(spans) == 20
    # In order of arrival, and none began before the one before it had ended.
    for (_, ended, _), (began, _, _) in itertools.pairwise(spans):
        assert ended <= began
    replies = rows(
        store,
        "SELECT r.seq AS reply, m.seq AS message FROM turns t"
        " JOIN memories m ON m.id = t.message_id JOIN memories r ON r.turn_id = t.id"
        f" AND r.kind = 'message' WHERE t.room_id = '{room_id}' ORDER BY m.seq",
    )
    assert [r["reply"] for r in replies] == sorted(r["reply"] for r in replies)
    # One runner, or a few when a post found the room idle again: never two at once.
    runners = runners_of(emulator, store, accepted[0]["turn_id"])
    assert {r["status"] for r in runners} == {"SUCCEEDED"}
    for before, after in itertools.pairwise(runners):
        assert before["stopDate"] <= after["startDate"]


def test_coalescing_answers_messages_queued_behind_a_turn_in_one_turn(
    emulator: Emulator, client: TestClient, runtime: Runtime, store: Store
) -> None:
    stall = sample_plugin.STALL
    for event in stall.values():
        event.clear()
    agent = runtime.register_agent(
        Character(
            name="Coalescing Ada",
            plugins=["tests.sample_plugin:stalling"],
            settings={"double_texting": "coalesce"},
        )
    )
    try:
        first = post(client, agent, "My name is Grace")
        assert stall["entered"].wait(10), "the first turn never reached its evaluator"
        later = [post(client, agent, text) for text in ("I like sailing", "I live in Lisbon")]
        assert [a["status"] for a in later] == ["queued", "queued"]
        stall["release"].set()
        turns = [wait_turn(client, a["turn_id"]) for a in (first, *later)]
    finally:
        stall["release"].set()
    emulator.drain()

    answered, answering = (store.turn(uuid.UUID(a["turn_id"])) for a in later)
    assert answered.status == "coalesced" and answered.answered_by == answering.id
    assert answering.status == "done"
    # Every message is covered: the coalesced one reads as its answering turn.
    assert [t["status"] for t in turns] == ["done", "done", "done"]
    assert turns[1]["replies"] == turns[2]["replies"] and len(turns[2]["replies"]) == 1
    assert turns[1]["answered_by"] == later[1]["turn_id"]
    # Two turns for three messages.
    assert count(store, "SELECT count(*) FROM turns WHERE status = 'done'") == 2


def test_a_failing_step_is_retried_then_the_turn_is_recorded_failed(
    emulator: Emulator,
    client: TestClient,
    runtime: Runtime,
    store: Store,
    flaky: dict[str, Any],
) -> None:
    retry = decide_retrier()
    error_name = retried_error(retry)
    flaky.update(error=error_name, failures=10**6, calls=0)
    agent = flaky_agent(runtime, "Flaky Ada")
    accepted = post(client, agent, "Hello?")
    turn = wait_turn(client, accepted["turn_id"])
    emulator.drain()

    assert turn["status"] == "failed"
    assert turn["error"].startswith(f"{error_name}: flaky model: call ")
    assert "stackTrace" not in turn["error"] and "File " not in turn["error"]
    attempts = 1 + int(retry.get("MaxAttempts", 3))
    assert flaky["calls"] == attempts
    assert emulator.hooked_invocations["LlmStepFunction"] == attempts
    # The turn failed, not its room: the runner recorded it and ended normally.
    execution = runner_of(emulator, store, accepted["turn_id"])
    assert execution["status"] == "SUCCEEDED"
    history = list(emulator.iter_history(execution["executionArn"]))
    failures = [e for e in history if e["type"] in ("TaskFailed", "LambdaFunctionFailed")]
    assert len(failures) == attempts
    details = [
        e.get("taskFailedEventDetails") or e.get("lambdaFunctionFailedEventDetails") or {}
        for e in failures
    ]
    assert {d.get("error") for d in details} == {error_name}
    # The ingest record was handled (the turn ended): nothing is left to redeliver.
    assert count(store, "SELECT count(*) FROM turns") == 1


def test_a_step_that_fails_twice_is_retried_and_the_turn_answers(
    emulator: Emulator,
    client: TestClient,
    runtime: Runtime,
    store: Store,
    flaky: dict[str, Any],
) -> None:
    retry = decide_retrier()
    flaky.update(error=retried_error(retry), failures=2, calls=0)
    agent = flaky_agent(runtime, "Flaky Bob")
    accepted = post(client, agent, "My name is Grace")
    turn = wait_turn(client, accepted["turn_id"])

    assert turn["status"] == "done"
    assert len(turn["replies"]) == 1
    emulator.drain()
    execution = runner_of(emulator, store, accepted["turn_id"])
    assert execution["status"] == "SUCCEEDED"
    history = list(emulator.iter_history(execution["executionArn"]))
    assert len([e for e in history if e["type"] == "TaskFailed"]) == 2


def test_the_poller_keeps_only_the_records_a_batch_reports_failed(
    database_url: str, runtime: Runtime, agent_id: uuid.UUID
) -> None:
    # Visibility 0: a record left on the queue comes back at once; one poller: one batch at a time.
    with Emulator(database_url, visibility_timeout=0, concurrency=1) as emulator:
        queue = emulator.queue_url("EmbedQueue")
        emulator.sqs.send_message_batch(
            QueueUrl=queue,
            Entries=[
                {"Id": "good", "MessageBody": json.dumps({"agent_id": str(agent_id)})},
                {"Id": "bad", "MessageBody": json.dumps({"agent_id": "not-a-uuid"})},
            ],
        )
        dlq = emulator.queue_url("EmbedDLQ")
        deadline = time.monotonic() + 10
        moved: list[dict[str, Any]] = []
        while not moved and time.monotonic() < deadline:
            moved = emulator.sqs.receive_message(
                QueueUrl=dlq, MessageSystemAttributeNames=["All"]
            ).get("Messages", [])
            time.sleep(0.05)
        emulator.drain()

        # The bad record went round until the redrive policy moved it; the good one was
        # handled in the first batch and deleted, never seen again.
        assert [json.loads(m["Body"]) for m in moved] == [{"agent_id": "not-a-uuid"}]
        max_receives = emulator.template.queues["EmbedQueue"].max_receive_count
        assert max_receives is not None
        assert emulator.invocations["MemoryEmbedFunction"] == max_receives
        # The count goes with the message to the dead-letter queue; receiving it there adds one.
        assert int(moved[0]["Attributes"]["ApproximateReceiveCount"]) == max_receives + 1


#: The turn id the example events carry; replaced by the id of the turn they drive here.
EVENT_TURN_ID = "0b6d2d4e-5c8f-4a51-9f0e-6c3a2b1d7e90"
#: The message id the example events carry beside it (only logged: the correlation id).
EVENT_MESSAGE_ID = "5a1f3c2e-8d4b-4f6a-9e7c-2b0d1a3c5e71"
#: The API key the example API events carry; replaced by a real key of the local tenant.
EVENT_KEY = "carrier_EXAMPLE_KEY_replace_with_yours"
#: The example events, in the order a turn meets them, and the function each is for.
EVENT_FUNCTIONS = {
    "api_post_message.json": "ApiFunction",
    "ingest_sqs.json": "IngestFunction",
    "llm_step_decide.json": "LlmStepFunction",
    "action_exec.json": "ActionExecFunction",
    "llm_step_evaluate.json": "LlmStepFunction",
    "turn_next.json": "TurnFinishFunction",
    "turn_finish.json": "TurnFinishFunction",
    "turn_sweep_schedule.json": "TurnSweepFunction",
    "memory_embed_sqs.json": "MemoryEmbedFunction",
    "webhook_deliver_sqs.json": "WebhookDeliverFunction",
    "webhook_sweep_schedule.json": "WebhookDeliverFunction",  # driven in tests/test_webhooks.py
    "task_run_schedule.json": "TaskRunFunction",
    "api_get_turn.json": "ApiFunction",
    "turn_execution_input.json": "",  # the state machine's input, started below
    "migrate_custom_resource.json": "MigrateFunction",  # driven in tests/test_migrations.py
    "turn_finish_error.json": "TurnFinishFunction",
    # Driven in tests/test_websocket.py.
    "websocket_connect.json": "WebSocketFunction",
    "websocket_send_message.json": "WebSocketFunction",
    "websocket_disconnect.json": "WebSocketFunction",
}


@pytest.mark.skipif(not EVENTS, reason="no events/ yet")
def test_the_example_events_drive_a_turn_through_each_handler(
    database_url: str, store: Store, agent_id: uuid.UUID
) -> None:
    unknown = sorted({p.name for p in EVENTS} - EVENT_FUNCTIONS.keys())
    assert not unknown, f"add these example events to EVENT_FUNCTIONS: {unknown}"
    # No polling: each queue's function is called by hand with its example event.
    key = create_key(store, LOCAL_TENANT_ID).secret
    with Emulator(database_url, retry_interval_scale=RETRY_SCALE, poll=False) as emulator:
        turn_id = ""

        def call(name: str) -> Any:
            text = (ROOT / "events" / name).read_text().replace(EVENT_KEY, key)
            event = json.loads(text.replace(EVENT_TURN_ID, turn_id) if turn_id else text)
            return emulator.call(emulator.functions[EVENT_FUNCTIONS[name]], event)

        posted = call("api_post_message.json")
        assert posted["statusCode"] == 202, posted
        accepted = json.loads(posted["body"])
        turn_id = accepted["turn_id"]
        room_id = str(store.turn(uuid.UUID(turn_id)).room_id)
        assert room_id in (ROOT / "events" / "turn_next.json").read_text()
        # The post started the room's runner (generation 1), which answers the turn.
        emulator.drain()
        assert store.turn(uuid.UUID(turn_id)).status == "done"
        # The same client message id: the queued record is the posted message, answered.
        assert call("ingest_sqs.json") == {"batchItemFailures": []}
        assert count(store, "SELECT count(*) FROM turns") == 1
        # Nothing left in the room: its runner has nothing next, and the sweep nothing to do.
        assert call("turn_next.json")["turn_id"] is None
        swept = call("turn_sweep_schedule.json")
        assert swept == {"oldest_unfinished_s": 0, "approvals_expired": 0}
        assert call("task_run_schedule.json") == {}  # no task is scheduled

        # Each step again, as a retried invocation would: the stored results come back.
        # The decision is a simple reply, said by the decide step: no act step follows.
        decided = call("llm_step_decide.json")
        assert decided == {"respond": False, "step": 1, "again": False, "actions": []}
        # Act on it all the same (the act step of another decision): its record comes back.
        assert call("action_exec.json") == {
            "action": "REPLY",
            "continue_turn": False,
            "approval_id": None,
            "error": None,
        }
        assert isinstance(call("llm_step_evaluate.json")["ran"], list)
        finished = {"room_id": room_id, "generation": 1, "turns": 1, "turn_id": None, "error": None}
        # (generation 1 is not the room's runner: a runner superseded gets no next turn)
        assert call("turn_finish.json") == finished
        assert call("memory_embed_sqs.json") == {"batchItemFailures": []}
        # The example names no delivery of this database: nothing to send, nothing to retry.
        assert call("webhook_deliver_sqs.json") == {"batchItemFailures": []}
        got = call("api_get_turn.json")
        assert got["statusCode"] == 200, got
        view = json.loads(got["body"])
        assert view["status"] == "done" and len(view["replies"]) == 1

        execution_input = (ROOT / "events" / "turn_execution_input.json").read_text()
        started = emulator.sfn.start_execution(
            stateMachineArn=emulator.state_machine_arn,
            name="example-input",
            input=execution_input.replace(EVENT_TURN_ID, turn_id),
        )
        emulator.drain()
        described = emulator.sfn.describe_execution(executionArn=started["executionArn"])
        assert described["status"] == "SUCCEEDED"
        assert len(store.turn_memories(uuid.UUID(turn_id), MemoryKind.MESSAGE)) == 1

        # A Catch's error for a turn still under way fails it (a done turn stays done).
        with store.connection() as conn:
            conn.execute("UPDATE turns SET status = 'running' WHERE id = %s", (turn_id,))
        assert call("turn_finish_error.json") == finished
        error = store.turn(uuid.UUID(turn_id)).error
        assert error is not None and error.startswith("ModelRateLimited: ")


def test_the_finish_function_takes_the_next_turn_under_its_limit_and_hands_off_at_it(
    emulator: Emulator,
    runtime: Runtime,
    agent_id: uuid.UUID,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under the runner's turn limit, the turn's end takes the room's next turn in the same
    statement; at the limit it takes none, and the room goes to a fresh execution."""
    first, second = (
        ingest(runtime, {"agent_id": agent_id, "room": "limit", "sender": "grace", "text": t})
        for t in ("one", "two")
    )
    runner = first.runner
    assert runner is not None
    taken = next_turn(runtime, runner)  # the runner's `next` state
    assert taken is not None and taken.turn_id == first.turn_id
    finish = emulator.functions["TurnFinishFunction"]
    event = {
        "op": "finish",
        "room_id": str(runner.room_id),
        "generation": runner.generation,
        "turns": 0,
        "turn_id": str(first.turn_id),
        "message_id": str(taken.message_id),
        "error": None,
    }
    monkeypatch.setenv("CARRIER_RUNNER_TURN_LIMIT", "3")
    # An op of a mistyped name is refused: it was taken for `next`.
    with pytest.raises(ValueError, match="unknown op 'finsh'"):
        emulator.call(finish, {**event, "op": "finsh"})
    assert store.turn(first.turn_id).status == "running"
    state = emulator.call(finish, event)
    assert (state["turn_id"], state["turns"]) == (str(second.turn_id), 1)
    assert store.turn(first.turn_id).status == "done"
    assert store.turn(second.turn_id).status == "running"
    monkeypatch.setenv("CARRIER_RUNNER_TURN_LIMIT", "2")
    ended = {**event, "turns": 1, "turn_id": state["turn_id"], "message_id": state["message_id"]}
    state = emulator.call(finish, ended)
    assert (state["turn_id"], state["turns"]) == (None, 2)
    assert store.turn(second.turn_id).status == "done"
    emulator.drain()
    generations = [
        int(e["name"].rsplit("-g", 1)[1])
        for e in emulator.executions()
        if e["name"].startswith(f"room-{runner.room_id}-g")
    ]
    assert generations and min(generations) > runner.generation  # the fresh execution


def test_carrier_dev_serves_the_api_and_carrier_chat_talks_through_it(
    database_url: str, store: Store, tmp_path: Path
) -> None:
    ada = str(ROOT / "characters" / "ada.json")
    # CARRIER_HOME: where `carrier dev` saves its key for `carrier chat`.
    env = offline_environment(DATABASE_URL=database_url, CARRIER_HOME=str(tmp_path))
    with carrier_dev(env, tmp_path / "dev.log", "--character", ada) as dev:
        args = ("--character", ada, "--api", dev.base, "--user", "grace")
        replies = carrier_chat(env, *args, said="My name is Grace\n")
        assert replies == ["Nice to meet you, Grace. What would you like to talk about?"]
    output = dev.log.read_text()
    assert "agent ada (Ada): " in output
    assert f"API: {dev.base}" in output
    # Quiet by default: none of the functions' info lines nor metric documents.
    assert '"_aws"' not in output and '"level":"INFO"' not in output, output[-2000:]


def test_carrier_dev_verbose_shows_the_functions_json_logs_and_metrics(
    database_url: str, store: Store, tmp_path: Path
) -> None:
    ada = str(ROOT / "characters" / "ada.json")
    env = offline_environment(DATABASE_URL=database_url, CARRIER_HOME=str(tmp_path))
    with carrier_dev(env, tmp_path / "dev.log", "--character", ada, "--verbose") as dev:
        args = ("--character", ada, "--api", dev.base, "--user", "grace")
        carrier_chat(env, *args, said="Hello\n")
    output = dev.log.read_text()
    assert '"_aws"' in output and '"turn_id"' in output


def test_a_failed_turn_is_tried_again_by_a_new_runner_when_its_message_comes_again(
    emulator: Emulator,
    client: TestClient,
    runtime: Runtime,
    store: Store,
    flaky: dict[str, Any],
) -> None:
    retry = decide_retrier()
    error_name = retried_error(retry)
    flaky.update(error=error_name, failures=10**6, calls=0)
    agent = flaky_agent(runtime, "Flaky Cy")
    body = {"text": "Hello?", "sender": "grace", "client_message_id": "m-1"}
    first = client.post(f"/v1/agents/{agent}/rooms/r1/messages", json=body).json()
    assert wait_turn(client, first["turn_id"])["status"] == "failed"
    emulator.drain()

    flaky.update(failures=0)  # the provider is back
    again = client.post(f"/v1/agents/{agent}/rooms/r1/messages", json=body).json()
    assert again["turn_id"] == first["turn_id"] and again["status"] == "queued"
    turn = wait_turn(client, again["turn_id"])
    emulator.drain()
    assert turn["status"] == "done" and turn["error"] is None and len(turn["replies"]) == 1
    runners = runners_of(emulator, store, first["turn_id"])
    assert [r["status"] for r in runners] == ["SUCCEEDED", "SUCCEEDED"]


def test_a_runner_stopped_mid_turn_is_replaced_by_the_sweep_which_finishes_the_turn(
    database_url: str, store: Store, runtime: Runtime
) -> None:
    """An execution that ends without reaching the finish step (here stopped while its
    evaluator runs): its lease runs out, the sweep sees the execution is not running and
    starts a new runner, which takes the turn up again and finishes it; the stored reply
    is said once and sent to the webhook."""
    stall = sample_plugin.STALL
    for event in stall.values():
        event.clear()
    agent = runtime.register_agent(
        Character(name="Stalling Ada", plugins=["tests.sample_plugin:stalling"])
    )
    environment = {"CARRIER_WEBHOOK_ALLOW_PRIVATE_URLS": "true", "CARRIER_RUNNER_LEASE_S": "1"}
    with (
        serving(Receiver()) as receiver,
        Emulator(
            database_url,
            retry_interval_scale=RETRY_SCALE,
            environment=environment,
            schedule_interval_s=0.2,
        ) as emu,
    ):
        try:
            key = create_key(store, LOCAL_TENANT_ID).secret
            client = TestClient(emu.app, headers={"Authorization": f"Bearer {key}"})
            made = register(client, agent, receiver.url())
            accepted = post(client, agent, "My name is Grace")
            assert stall["entered"].wait(10), "the evaluator never ran"
            turn_id = uuid.UUID(accepted["turn_id"])
            [reply] = store.turn_memories(turn_id, MemoryKind.MESSAGE)
            assert store.turn(turn_id).status == "running"

            [execution] = runners_of(emu, store, accepted["turn_id"])
            emu.sfn.stop_execution(executionArn=execution["executionArn"])
            # moto's execution ends once the running task returns; it then goes no further.
            stall["release"].set()
            turn = wait_turn(client, accepted["turn_id"], timeout=20)
            [received] = receiver.wait_for(1, timeout=15)
            emu.drain()
            runners = runners_of(emu, store, accepted["turn_id"])
        finally:
            stall["release"].set()

    assert [r["status"] for r in runners] == ["ABORTED", "SUCCEEDED"]
    assert turn["status"] == "done" and turn["error"] is None
    assert store.turn(turn_id).attempts == 2
    assert [r["id"] for r in turn["replies"]] == [str(reply.id)]
    payload = assert_signed(made["secret"], received)
    assert payload["type"] == "reply" and payload["turn_id"] == str(turn_id)
    assert payload["reply"]["id"] == str(reply.id)
    assert len(receiver.requests) == 1  # said once, sent once


def test_carrier_dev_lets_the_shell_set_end_user_tokens_over_the_template(
    database_url: str,
    store: Store,
    tmp_path: Path,
    issuer: Issuer,
    make_tenant: Callable[[str], TenantKey],
) -> None:
    """The template declares CARRIER_JWT_* empty (a deployment's default); a developer who
    exports them gets them under `carrier dev`, not silently the template's."""
    tenant = make_tenant("dev-tokens")
    env = offline_environment(
        DATABASE_URL=database_url,
        CARRIER_HOME=str(tmp_path),
        CARRIER_JWT_JWKS_URL=issuer.url,
        CARRIER_JWT_ISSUER=ISSUER,
        CARRIER_JWT_AUDIENCE=AUDIENCE,
    )
    ada = json.loads((ROOT / "characters" / "ada.json").read_text())
    with carrier_dev(env, tmp_path / "dev.log") as dev:
        made = httpx.post(f"{dev.base}/v1/agents", json=ada, headers=tenant.headers)
        assert made.status_code == 201, made.text
        token = issuer.token({"sub": "grace", "tenant_id": str(tenant.tenant_id)})
        posted = httpx.post(
            f"{dev.base}/v1/agents/{made.json()['id']}/rooms/r1/messages",
            json={"text": "Hello"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert posted.status_code == 202, posted.text


def test_ingest_refuses_a_record_to_the_dead_letter_queue_and_goes_on_with_other_rooms(
    database_url: str, store: Store, agent_id: uuid.UUID
) -> None:
    """A record no retry can fix goes to the dead-letter queue at once, saying why (it was
    consumed and forgotten); a record of another room in the batch is stored; a record
    without its sender's message id, delivered twice, is one message."""
    sample = json.loads((ROOT / "events" / "ingest_sqs.json").read_text())["Records"][0]
    good = {"agent_id": str(agent_id), "room": "r2", "sender": "grace", "text": "Hello!"}

    def record(n: int, body: str, group: str) -> dict[str, Any]:
        attributes = {**sample["attributes"], "MessageGroupId": group}
        return {**sample, "messageId": f"m-{n}", "body": body, "attributes": attributes}

    with Emulator(database_url, retry_interval_scale=RETRY_SCALE, poll=False) as emulator:
        ingest = emulator.functions["IngestFunction"]
        unknown = {**good, "agent_id": str(uuid.uuid4()), "room": "r3"}
        batch = {
            "Records": [
                record(1, "[" * 100_000 + "]" * 100_000, "r1"),
                record(2, json.dumps(unknown), "r3"),
                record(3, json.dumps(good), "r2"),
            ]
        }
        assert emulator.call(ingest, batch) == {"batchItemFailures": []}
        again = {"Records": [record(3, json.dumps(good), "r2")]}
        assert emulator.call(ingest, again) == {"batchItemFailures": []}
        emulator.drain()

        dlq = emulator.queue_url("IngestDLQ")
        refused = emulator.sqs.receive_message(
            QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        reasons = {
            m["Body"][:20]: m["MessageAttributes"]["carrier_refused"]["StringValue"]
            for m in refused
        }
        assert len(reasons) == 2
        assert "no agent" in reasons[json.dumps(unknown)[:20]]
        assert "[" * 20 in reasons  # nested too deep to read
    assert count(store, "SELECT count(*) FROM turns") == 1
    assert count(store, "SELECT count(*) FROM turns WHERE status = 'done'") == 1
