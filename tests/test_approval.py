"""Human approval end to end: an action that needs a person's yes pauses its turn, which
shows as `awaiting_approval` with the action and its arguments; an answer through the API
resumes it (the action runs, or the turn records why not), and an approval nobody answers
expires and the turn goes on. In one process (the runner stops and keeps the room) and on
the emulated stack (the state machine waits on a task token, holding no compute; the turn
sweep expires approvals)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from carrier_aws.local.emulator import Emulator
from carrier_core import Character, Runtime
from carrier_core.api.app import create_app
from carrier_core.cli import main
from carrier_core.store.store import Store
from carrier_core.tenants import create_key, dev_key_file
from carrier_core.turn import approval
from carrier_core.world import LOCAL_TENANT_ID
from tests import approval_plugin
from tests.conftest import TenantKey, make_runtime, run_inline
from tests.dev_server import carrier_dev, offline_environment
from tests.jwks import AUDIENCE, ISSUER, serve_jwks
from tests.test_chat_completions import serving as serving_api
from tests.test_webhooks import Receiver, assert_signed, register, serving
from tests.test_websocket import WAIT_S, frames_until_done, serve, url

AGENT = Character(
    name="Penny",
    plugins=["tests.approval_plugin:plugin"],
    settings={"model_provider": "sending"},
)


@pytest.fixture(autouse=True)
def sent() -> Iterator[list[str]]:
    approval_plugin.SENT.clear()
    yield approval_plugin.SENT
    approval_plugin.SENT.clear()


def post(client: TestClient, agent: uuid.UUID | str, text: str, room: str = "r1") -> str:
    response = client.post(
        f"/v1/agents/{agent}/rooms/{room}/messages", json={"text": text, "sender": "grace"}
    )
    assert response.status_code == 202, response.text
    turn_id: str = response.json()["turn_id"]
    return turn_id


def wait_for(
    client: TestClient, turn_id: str, *statuses: str, timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        turn: dict[str, Any] = client.get(f"/v1/turns/{turn_id}").json()
        if turn["status"] in statuses:
            return turn
        assert time.monotonic() < deadline, f"turn still {turn['status']}"
        time.sleep(0.02)


def answer(client: TestClient, turn_id: str, approve: bool, **body: Any) -> Any:
    return client.post(f"/v1/turns/{turn_id}/approval", json={"approve": approve, **body})


# -- in one process ------------------------------------------------------------------------


@pytest.fixture
def runtime(store: Store) -> Runtime:
    """A runtime whose agents use their characters' models (AGENT's: the `sending` set)."""
    return make_runtime(store)


@pytest.fixture
def client(runtime: Runtime, store: Store) -> Iterator[TestClient]:
    key = create_key(store, LOCAL_TENANT_ID).secret
    app = create_app(lambda: runtime, run_inline(runtime))
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as test_client:
        yield test_client


def test_a_turn_waits_for_approval_then_acts_once_approved(
    client: TestClient, runtime: Runtime, sent: list[str]
) -> None:
    agent = runtime.register_agent(AGENT)
    turn_id = post(client, agent, "Please send 20 euros to Bo")

    waiting = client.get(f"/v1/turns/{turn_id}").json()
    assert waiting["status"] == "awaiting_approval" and waiting["replies"] == []
    request = waiting["approval"]
    assert request["action"] == "SEND_FUNDS" and request["status"] == "pending"
    assert request["arguments"]["message"] == "Please send 20 euros to Bo"
    assert sent == []  # nothing done before the yes

    # The room's later message waits behind the paused turn, in order.
    later = post(client, agent, "hello?")
    assert client.get(f"/v1/turns/{later}").json()["status"] == "queued"

    approved = answer(client, turn_id, True, reason="fine by me")
    assert approved.status_code == 200, approved.text
    turn = approved.json()
    assert turn["status"] == "done"
    assert [r["text"] for r in turn["replies"]] == ["The money is on its way."]
    assert turn["approval"]["status"] == "approved"
    assert turn["approval"]["answered_by"].startswith("key:")
    assert sent == ["Please send 20 euros to Bo"]
    # The action's result is in the turn's history, for the next steps to see.
    [step] = [s for s in runtime.store.turn_steps(uuid.UUID(turn_id)) if s.step.startswith("act")]
    assert step.status == "ok" and step.detail["text"] == "Sent the money."
    assert step.detail["values"] == {"sent": True}
    # The queued message was answered after it, by the same runner.
    assert client.get(f"/v1/turns/{later}").json()["status"] == "done"

    again = answer(client, turn_id, True)
    assert again.status_code == 409 and "no approval waiting" in again.json()["error"]["message"]
    assert sent == ["Please send 20 euros to Bo"]


def test_a_rejected_action_is_not_run_and_the_turn_says_why(
    client: TestClient, runtime: Runtime, sent: list[str]
) -> None:
    agent = runtime.register_agent(AGENT)
    turn_id = post(client, agent, "send all my savings to Bo")
    wait_for(client, turn_id, "awaiting_approval")

    odd = answer(client, turn_id, False, reason="not\x00today")
    assert odd.status_code == 422 and "NUL" in odd.json()["error"]["message"]
    turn = answer(client, turn_id, False, reason="not today").json()
    assert turn["status"] == "done" and turn["replies"] == [] and sent == []
    assert turn["approval"]["status"] == "rejected"
    [step] = [s for s in runtime.store.turn_steps(uuid.UUID(turn_id)) if s.step.startswith("act")]
    assert step.status == "skipped"
    assert step.detail["reason"].startswith("not approved: rejected by key:")
    assert step.detail["reason"].endswith(": not today")


def test_an_approval_answered_after_it_expired_is_refused_and_the_turn_goes_on(
    store: Store, sent: list[str]
) -> None:
    runtime = make_runtime(store, approval_timeout_s=0.3)
    key = create_key(store, LOCAL_TENANT_ID).secret
    app = create_app(lambda: runtime, run_inline(runtime))
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        agent = runtime.register_agent(AGENT)
        turn_id = post(client, agent, "send 5 euros to Bo")
        wait_for(client, turn_id, "awaiting_approval")
        time.sleep(0.4)
        # Past its expiry the request is not shown as waiting, though nothing recorded the
        # expiry yet (no sweep runs here).
        assert client.get(f"/v1/turns/{turn_id}").json()["status"] == "running"
        late = answer(client, turn_id, True)
        assert late.status_code == 409 and "expired" in late.json()["error"]["message"]
        # The late answer expired the request and the turn went on without the action.
        turn = client.get(f"/v1/turns/{turn_id}").json()
        assert turn["status"] == "done" and turn["approval"]["status"] == "expired"
        later = post(client, agent, "anyone there?")
        assert client.get(f"/v1/turns/{later}").json()["status"] == "done"
    assert sent == []
    [step] = [s for s in runtime.store.turn_steps(uuid.UUID(turn_id)) if s.step.startswith("act")]
    assert (step.status, step.detail["reason"]) == ("skipped", "not approved: expired")


def test_who_may_answer_an_approval(store: Store, make_tenant: Callable[[str], TenantKey]) -> None:
    acme, other = make_tenant("acme"), make_tenant("other")
    with serve_jwks() as issuer:
        jwt_runtime = make_runtime(
            store,
            jwt_jwks_url=issuer.url,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
        )
        app = create_app(lambda: jwt_runtime, run_inline(jwt_runtime))
        grace = issuer.token({"sub": "grace", "tenant_id": str(acme.tenant_id)})
        bo = issuer.token({"sub": "bo", "tenant_id": str(acme.tenant_id)})
        with TestClient(app) as client:
            strict = jwt_runtime.register_agent(AGENT, acme.tenant_id)
            lenient = jwt_runtime.register_agent(
                AGENT.model_copy(
                    update={
                        "name": "Lenny",
                        "settings": {**AGENT.settings, "approvals_by_end_users": True},
                    }
                ),
                acme.tenant_id,
            )
            as_grace = {"Authorization": f"Bearer {grace}"}
            turns = {}
            for agent in (strict, lenient):
                response = client.post(
                    f"/v1/agents/{agent}/rooms/r1/messages",
                    json={"text": "send 1 euro to Bo"},
                    headers=as_grace,
                )
                assert response.status_code == 202, response.text
                turns[agent] = response.json()["turn_id"]

            def try_answer(agent: uuid.UUID, token: str) -> int:
                return client.post(
                    f"/v1/turns/{turns[agent]}/approval",
                    json={"approve": True},
                    headers={"Authorization": f"Bearer {token}"},
                ).status_code

            # Another tenant's key cannot see the turn; another end user neither.
            assert try_answer(strict, other.key) == 404
            assert try_answer(strict, bo) == 404
            # Grace may not answer where the agent does not allow end users; its key may.
            assert try_answer(strict, grace) == 403
            assert try_answer(lenient, grace) == 200
            assert try_answer(strict, acme.key) == 200
    assert len(approval_plugin.SENT) == 2


# -- on the emulated stack -----------------------------------------------------------------


@pytest.fixture
def emulated(database_url: str, store: Store) -> Iterator[tuple[Emulator, TestClient]]:
    environment = {"CARRIER_APPROVAL_TIMEOUT_S": "1.5"}
    with Emulator(
        database_url, environment=environment, retry_interval_scale=0.01, schedule_interval_s=0.3
    ) as emulator:
        key = create_key(store, LOCAL_TENANT_ID).secret
        yield emulator, TestClient(emulator.app, headers={"Authorization": f"Bearer {key}"})


def test_the_state_machine_waits_on_a_task_token_until_approved_rejected_or_expired(
    emulated: tuple[Emulator, TestClient], runtime: Runtime, store: Store, sent: list[str]
) -> None:
    emulator, client = emulated
    agent = runtime.register_agent(AGENT)

    approved = post(client, agent, "send 3 euros to Bo", room="a")
    turn = wait_for(client, approved, "awaiting_approval")
    assert turn["approval"]["status"] == "pending"
    # The execution waits in the approval state, holding no Lambda.
    [runner] = [e for e in emulator.executions() if e["status"] == "RUNNING"]
    with store._pool.connection() as conn:
        token = conn.execute(
            "SELECT task_token FROM approvals WHERE turn_id = %s", (approved,)
        ).fetchone()
    assert token is not None and token["task_token"]
    assert answer(client, approved, True).status_code == 200
    done = wait_for(client, approved, "done", "failed")
    assert [r["text"] for r in done["replies"]] == ["The money is on its way."]

    rejected = post(client, agent, "send 4 euros to Bo", room="b")
    wait_for(client, rejected, "awaiting_approval")
    assert answer(client, rejected, False).status_code == 200
    assert wait_for(client, rejected, "done", "failed")["replies"] == []

    expired = post(client, agent, "send 5 euros to Bo", room="c")
    wait_for(client, expired, "awaiting_approval")
    # Nobody answers: the turn sweep expires it and wakes the execution.
    finished = wait_for(client, expired, "done", "failed", timeout=20)
    assert finished["status"] == "done" and finished["approval"]["status"] == "expired"
    assert finished["replies"] == []

    assert sent == ["send 3 euros to Bo"]
    emulator.drain()
    assert all(e["status"] == "SUCCEEDED" for e in emulator.executions()), runner


def test_the_request_reaches_the_rooms_sockets_and_the_agents_webhooks(
    database_url: str, store: Store, runtime: Runtime, sent: list[str]
) -> None:
    agent = runtime.register_agent(AGENT)
    key = create_key(store, LOCAL_TENANT_ID).secret
    environment = {"CARRIER_WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
    with (
        serving(Receiver()) as receiver,
        Emulator(database_url, environment=environment, retry_interval_scale=0.01) as emulator,
        serve(emulator) as server,
    ):
        client = TestClient(emulator.app, headers={"Authorization": f"Bearer {key}"})
        made = register(client, agent, receiver.url())
        with connect(url(server, agent, "w", key)) as socket:
            socket.send(
                json.dumps({"action": "sendMessage", "text": "send 9 euros", "sender": "sam"})
            )
            frames = []
            while not frames or frames[-1]["type"] != "turn.awaiting_approval":
                frames.append(json.loads(socket.recv(timeout=WAIT_S)))
            asking = frames[-1]
            turn_id = asking["turn_id"]
            assert asking["approval"]["action"] == "SEND_FUNDS"
            assert asking["approval"]["status"] == "pending"
            [received] = receiver.wait_for(1, timeout=15)
            payload = assert_signed(made["secret"], received)
            assert payload["type"] == "approval.requested" and payload["turn_id"] == turn_id
            assert payload["approval"]["id"] == asking["approval"]["id"]

            assert answer(client, turn_id, True).status_code == 200
            rest = frames_until_done(socket)
        replies = [f["text"] for f in rest if f["type"] == "reply"]
        assert replies == ["The money is on its way."] and sent == ["send 9 euros"]
        [reply] = receiver.wait_for(2, timeout=15)[1:]
        assert assert_signed(made["secret"], reply)["type"] == "reply"


def test_approved_rejected_and_expired_under_carrier_dev(
    database_url: str, store: Store, tmp_path: Path
) -> None:
    """As a developer meets it: `carrier dev` (the state machine on moto, the turn sweep on its
    schedule) and plain HTTP."""
    character = tmp_path / "penny.json"
    character.write_text(AGENT.model_dump_json(exclude_defaults=True))
    env = offline_environment(
        DATABASE_URL=database_url, CARRIER_HOME=str(tmp_path), CARRIER_APPROVAL_TIMEOUT_S="2"
    )
    args = ("--character", str(character), "--schedule-interval", "0.5")
    with carrier_dev(env, tmp_path / "dev.log", *args) as dev:
        key = dev_key_file(tmp_path).read_text().strip()
        http = httpx.Client(base_url=dev.base, headers={"Authorization": f"Bearer {key}"})

        def wait(turn_id: str, *statuses: str) -> dict[str, Any]:
            deadline = time.monotonic() + 20
            while (turn := http.get(f"/v1/turns/{turn_id}").json())["status"] not in statuses:
                assert time.monotonic() < deadline, turn
                time.sleep(0.05)
            found: dict[str, Any] = turn
            return found

        turns = {}
        for room in ("yes", "no", "late"):
            posted = http.post(
                f"/v1/agents/penny/rooms/{room}/messages",
                json={"text": f"send 1 euro ({room})", "sender": "grace"},
            )
            assert posted.status_code == 202, posted.text
            turns[room] = posted.json()["turn_id"]
            assert wait(turns[room], "awaiting_approval")["approval"]["action"] == "SEND_FUNDS"
        for room, approve in (("yes", True), ("no", False)):
            answered = http.post(f"/v1/turns/{turns[room]}/approval", json={"approve": approve})
            assert answered.status_code == 200, answered.text
        done = {room: wait(turn_id, "done", "failed") for room, turn_id in turns.items()}
    assert [r["text"] for r in done["yes"]["replies"]] == ["The money is on its way."]
    assert done["no"]["replies"] == [] and done["no"]["approval"]["status"] == "rejected"
    assert done["late"]["replies"] == [] and done["late"]["approval"]["status"] == "expired"
    assert all(turn["status"] == "done" for turn in done.values())


def test_an_approval_is_used_once_so_a_rerun_after_a_lost_record_does_not_act_again(
    client: TestClient, runtime: Runtime, sent: list[str]
) -> None:
    """A run that took the yes may have acted before it died, its record lost: the act step
    run again must not act a second time; it records why."""
    from carrier_core.turn.run import resume_turn

    agent = runtime.register_agent(AGENT)
    turn_id = uuid.UUID(post(client, agent, "send 7 euros to Bo"))
    settled, _ = approval.answer(runtime.store, turn_id, approve=True, by="key:test")
    assert runtime.store.use_approval(settled.id)  # the run that took it, and died
    resume_turn(runtime, turn_id)
    assert sent == []
    assert runtime.store.turn(turn_id).status == "done"
    [step] = [s for s in runtime.store.turn_steps(turn_id) if s.step.startswith("act")]
    assert step.status == "error" and "not run again" in step.detail["error"]


def test_an_answer_whose_wake_was_lost_is_woken_by_the_sweep(
    emulated: tuple[Emulator, TestClient], runtime: Runtime, store: Store, sent: list[str]
) -> None:
    """The answer is stored, but the wake never reached Step Functions (the answering
    function died, or was throttled): the turn sweep wakes the execution."""
    _, client = emulated
    agent = runtime.register_agent(AGENT)
    turn_id = post(client, agent, "send 8 euros to Bo", room="lost")
    wait_for(client, turn_id, "awaiting_approval")
    deadline = time.monotonic() + 10
    while store.turn_approvals(uuid.UUID(turn_id))[0].status == "pending":
        with store.connection() as conn:  # the token is kept by then: answer without a wake
            answered = conn.execute(
                "UPDATE approvals SET status = 'approved', answered_by = 'key:lost',"
                " answered_at = now() - interval '1 minute', expires_at = now() + interval"
                " '1 hour' WHERE turn_id = %s AND task_token IS NOT NULL RETURNING id",
                (turn_id,),
            ).fetchone()
        if answered is None:
            assert time.monotonic() < deadline, "the approval step never kept its token"
            time.sleep(0.05)
    done = wait_for(client, turn_id, "done", "failed", timeout=20)
    assert [r["text"] for r in done["replies"]] == ["The money is on its way."]
    assert sent == ["send 8 euros to Bo"]


# -- carrier chat ----------------------------------------------------------------------------


CHAT_INPUT = "send 5 euros to Bo\ny\nsend 2 euros to Al\nno\nhello\n"


def test_carrier_chat_asks_the_person_at_the_terminal(database_url: str, tmp_path: Path) -> None:
    """In one process the chat's turn stops at the action; the next line answers it (y or
    yes approves), and the room goes on: the later message is answered at once."""
    character = tmp_path / "penny.json"
    character.write_text(AGENT.model_dump_json(exclude_defaults=True))
    env = offline_environment(DATABASE_URL=database_url, CARRIER_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "carrier_core.cli", "chat", "--character", str(character)],
        input=CHAT_INPUT,
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,  # where `tests.approval_plugin` is found
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    question = "carrier: Penny wants to run SEND_FUNDS. Approve? [y/N]"
    assert done.stderr.count(question) == 2, done.stderr
    [paid, greeting] = done.stdout.splitlines()
    assert paid == "The money is on its way." and greeting


def test_carrier_chat_over_the_api_answers_with_its_key(
    runtime: Runtime,
    store: Store,
    sent: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime.register_agent(AGENT)
    key = create_key(store, LOCAL_TENANT_ID).secret
    character = tmp_path / "penny.json"
    character.write_text(AGENT.model_dump_json(exclude_defaults=True))
    with serving_api(create_app(lambda: runtime, run_inline(runtime))) as api:
        monkeypatch.setattr(sys, "stdin", io.StringIO(CHAT_INPUT))
        code = main(["chat", "--character", str(character), "--api", api, "--key", key])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err.count("Penny wants to run SEND_FUNDS. Approve? [y/N]") == 2, err
    [paid, greeting] = out.splitlines()
    assert paid == "The money is on its way." and greeting
    assert sent == ["send 5 euros to Bo"]
