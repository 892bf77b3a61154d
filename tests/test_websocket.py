"""The WebSocket client API: `carrier dev`'s /v1/ws on a real server, and the cloud handler.

Locally everything is real but AWS: uvicorn serves the emulator's app, a `websockets`
client talks to it, the functions run on moto (SQS, Step Functions), and their pushes
go through moto's Management API to the open socket. The cloud handler is also called
directly with API Gateway's events (events/websocket_*.json).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from carrier_aws.local.emulator import Emulator
from carrier_aws.push import Pusher
from carrier_core import Character, Runtime
from carrier_core.frames import Frame
from carrier_core.memory import MemoryKind
from carrier_core.store.connections import Connection
from carrier_core.store.store import Store
from carrier_core.tenants import create_key
from carrier_core.turn.run import run_turn
from carrier_core.world import entity_id_for, room_id_for
from tests.conftest import ROOT, TenantKey
from tests.jwks import AUDIENCE, ISSUER, Issuer
from tests.test_turn import count

RETRY_SCALE = 0.01
#: The API key the example events carry (as in tests/test_emulated.py).
EVENT_KEY = "carrier_EXAMPLE_KEY_replace_with_yours"
WAIT_S = 10.0


@pytest.fixture
def emulator(database_url: str, store: Store) -> Iterator[Emulator]:
    with Emulator(database_url, retry_interval_scale=RETRY_SCALE) as emu:
        yield emu


@pytest.fixture
def server(emulator: Emulator) -> Iterator[str]:
    with serve(emulator) as base:
        yield base


@contextmanager
def serve(emulator: Emulator) -> Iterator[str]:
    """The emulator's app on a real server, as `carrier dev` serves it: its ws:// base."""
    config = uvicorn.Config(emulator.app, host="127.0.0.1", port=0, log_level="warning")
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not served.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = served.servers[0].sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}/v1/ws"
    served.should_exit = True
    thread.join(WAIT_S)


@pytest.fixture
def tenant(make_tenant: Callable[[str], TenantKey]) -> TenantKey:
    return make_tenant("acme")


@pytest.fixture
def agent_id(runtime: Runtime, ada: Character, tenant: TenantKey) -> uuid.UUID:
    return runtime.register_agent(ada, tenant.tenant_id)


def url(base: str, agent: uuid.UUID | str, room: str, token: str) -> str:
    return f"{base}?agent={agent}&room={room}&token={token}"


def frames_until_done(socket: ClientConnection) -> list[Frame]:
    frames: list[Frame] = []
    while not frames or frames[-1]["type"] not in ("turn.done", "turn.failed"):
        frames.append(json.loads(socket.recv(timeout=WAIT_S)))
    return frames


def connections(store: Store) -> int:
    with store.connection() as conn:
        row = conn.execute("SELECT count(*) AS n FROM connections").fetchone()
    assert row is not None
    return int(row["n"])


def wait_for(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_sent_message_comes_back_as_accepted_progress_reply_and_done_on_the_rooms_sockets(
    emulator: Emulator, server: str, agent_id: uuid.UUID, tenant: TenantKey, store: Store
) -> None:
    with (
        connect(url(server, agent_id, "r1", tenant.key)) as talker,
        connect(url(server, agent_id, "r1", tenant.key)) as listener,
        connect(url(server, agent_id, "elsewhere", tenant.key)) as other_room,
    ):
        assert connections(store) == 3
        talker.send(
            json.dumps(
                {
                    "action": "sendMessage",
                    "text": "My name is Grace",
                    "sender": "grace",
                    "client_message_id": "c-1",
                }
            )
        )
        said = frames_until_done(talker)
        heard = frames_until_done(listener)
        with pytest.raises(TimeoutError):
            other_room.recv(timeout=0.2)

    accepted, decided, reply, acted, done = said
    turn_id = accepted["turn_id"]
    assert accepted == {
        "type": "accepted",
        "event": "MESSAGE_RECEIVED",
        "message_id": accepted["message_id"],
        "turn_id": turn_id,
        "status": "queued",
        "client_message_id": "c-1",
    }
    assert decided == {
        "type": "turn.progress",
        "turn_id": turn_id,
        "step": "decided",
        "decide_step": 1,
        "respond": True,
        "actions": ["REPLY"],
    }
    [stored] = store.turn_memories(uuid.UUID(turn_id), MemoryKind.MESSAGE)
    assert reply == {
        "type": "reply",
        "event": "MESSAGE_SENT",
        "turn_id": turn_id,
        "id": str(stored.id),
        "text": "Nice to meet you, Grace. What would you like to talk about?",
        "actions": ["REPLY"],
        "attachments": [],
    }
    assert stored.content.text == reply["text"]
    assert acted == {
        "type": "turn.progress",
        "turn_id": turn_id,
        "step": "action",
        "action": "REPLY",
        "event": "ACTION_COMPLETED",
    }
    assert done == {"type": "turn.done", "event": "RUN_ENDED", "turn_id": turn_id}
    # The other socket of the room hears the turn, not the sender's accepted frame.
    assert heard == said[1:]
    # Every frame came through moto's patched Management API: if the patch stops being
    # called, nothing reaches the sockets and this fails.
    assert emulator.hooked_pushes == {"sent": len(said) + len(heard)}
    wait_for(lambda: connections(store) == 0)


def test_a_bad_token_or_another_tenants_agent_is_refused_and_nothing_is_stored(
    server: str,
    agent_id: uuid.UUID,
    tenant: TenantKey,
    make_tenant: Callable[[str], TenantKey],
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stranger = make_tenant("globex")
    refusals = {
        url(server, agent_id, "r1", "carrier_not-a-key"): 401,
        f"{server}?agent={agent_id}&room=r1": 401,
        url(server, agent_id, "r1", stranger.key): 404,
        url(server, uuid.uuid4(), "r1", tenant.key): 404,
        url(server, "no-such-handle", "r1", tenant.key): 404,
        f"{server}?room=r1&token={tenant.key}": 422,
        f"{server}?agent={agent_id}&token={tenant.key}": 422,
        url(server, agent_id, "r%001", tenant.key): 422,  # a NUL in the room key
    }
    for address, status in refusals.items():
        with pytest.raises(InvalidStatus) as refused:
            connect(address, open_timeout=WAIT_S)
        assert refused.value.response.status_code == status, address
        error = json.loads(refused.value.response.body or b"{}")["error"]
        assert error["code"] == {401: "unauthorized", 404: "not_found"}.get(
            status, "invalid_request"
        )
    assert connections(store) == 0
    # A refusal is an answer, not a server error: `carrier dev` logs none per refusal.
    assert not [r for r in caplog.records if r.name == "uvicorn.error"], caplog.text


def test_a_bad_frame_gets_an_error_frame_and_the_connection_stays_usable(
    server: str, agent_id: uuid.UUID, tenant: TenantKey
) -> None:
    bad = [
        ("not json", "invalid_request"),
        (json.dumps(["a list"]), "invalid_request"),
        (json.dumps({"action": "dance"}), "invalid_request"),
        (json.dumps({"action": "sendMessage", "sender": "grace"}), "invalid_request"),
        (json.dumps({"action": "sendMessage", "text": "no sender"}), "invalid_request"),
        (
            json.dumps({"action": "sendMessage", "text": "x", "sender": "g", "bogus": 1}),
            "invalid_request",
        ),
        # An empty id would protect nothing: posting it twice made two messages.
        (
            json.dumps(
                {"action": "sendMessage", "text": "x", "sender": "g", "client_message_id": ""}
            ),
            "invalid_request",
        ),
        (
            json.dumps(
                {
                    "action": "sendMessage",
                    "text": "x" * 9000,
                    "sender": "grace",
                    "client_message_id": "long",
                }
            ),
            "invalid_message",
        ),
    ]
    with connect(url(server, agent_id, "r1", tenant.key)) as socket:
        for frame, code in bad:
            socket.send(frame)
            error = json.loads(socket.recv(timeout=WAIT_S))
            assert error["type"] == "error" and error["code"] == code, (frame, error)
            assert error["message"]
        assert error["client_message_id"] == "long"
        # What could not be read is said: where the JSON broke, a number too long to read.
        for frame, words in (
            ('{"action": "sendMessage", "text": ', "a frame is one JSON object: Expecting value"),
            ('{"n": ' + "1" * 5000 + "}", "frame: Exceeds the limit (4300 digits)"),
        ):
            socket.send(frame)
            assert words in json.loads(socket.recv(timeout=WAIT_S))["message"]
        socket.send(json.dumps({"action": "sendMessage", "text": "Hello", "sender": "grace"}))
        frames = frames_until_done(socket)
    assert frames[0]["type"] == "accepted" and frames[-1]["type"] == "turn.done"


def test_a_binary_frame_closes_the_connection_as_api_gateway_does(
    server: str, agent_id: uuid.UUID, tenant: TenantKey, store: Store
) -> None:
    """API Gateway's WebSocket API takes text frames only; `carrier dev` read a binary one
    as UTF-8 with its bad bytes replaced, so a client working here failed in the cloud."""
    frame = b'{"action": "sendMessage", "text": "caf\xe9", "sender": "grace"}'
    with connect(url(server, agent_id, "r1", tenant.key)) as socket:
        socket.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=WAIT_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    assert count(store, "SELECT count(*) FROM memories WHERE kind = 'message'") == 0


def test_a_frame_nested_too_deeply_gets_an_error_frame_and_the_connection_stays_open(
    server: str, agent_id: uuid.UUID, tenant: TenantKey
) -> None:
    """5,000 `[` are too deep for Python's JSON reader (a RecursionError, not a ValueError),
    and 300 levels inside a message's attachments too deep to store: each is a bad frame."""
    message = (
        '{"action": "sendMessage", "text": "x", "sender": "grace", "client_message_id": "deep"'
    )
    deep = [
        ("[" * 5000, "invalid_request", "nested too deeply"),
        ("[" * 5000 + "]" * 5000, "invalid_request", "nested too deeply"),
        (message + ', "attachments": [' + "[" * 5000 + "]" * 5000 + "]}", "invalid_request", ""),
        (
            message + ', "attachments": [{"a": ' + "[" * 300 + "]" * 300 + "}]}",
            "invalid_message",
            "attachments: Value error, nested more than 64 levels deep",
        ),
    ]
    with connect(url(server, agent_id, "r1", tenant.key)) as socket:
        for frame, code, words in deep:
            socket.send(frame)
            error = json.loads(socket.recv(timeout=WAIT_S))
            assert error["type"] == "error" and error["code"] == code, (frame[:80], error)
            assert words in error["message"]
        assert error["client_message_id"] == "deep"
        socket.send(json.dumps({"action": "sendMessage", "text": "Hello", "sender": "grace"}))
        frames = frames_until_done(socket)
    assert frames[0]["type"] == "accepted" and frames[-1]["type"] == "turn.done"


def test_closing_the_socket_removes_its_connection_row(
    server: str, agent_id: uuid.UUID, tenant: TenantKey, store: Store
) -> None:
    with connect(url(server, agent_id, "r1", tenant.key)):
        wait_for(lambda: connections(store) == 1)
        with store.connection() as conn:
            row = conn.execute("SELECT agent_id, room, room_id, sender FROM connections").fetchone()
        assert row == {
            "agent_id": agent_id,
            "room": "r1",
            "room_id": room_id_for(agent_id, "api", "r1"),
            "sender": "",
        }
    wait_for(lambda: connections(store) == 0)


def test_revoking_the_key_silences_its_open_connections(
    server: str, agent_id: uuid.UUID, tenant: TenantKey, store: Store
) -> None:
    spare = create_key(store, tenant.tenant_id, name="spare")
    with (
        connect(url(server, agent_id, "r1", spare.secret)) as revoked,
        connect(url(server, agent_id, "r1", tenant.key)) as live,
    ):
        wait_for(lambda: connections(store) == 2)
        assert store.revoke_key(tenant.tenant_id, spare.key.id)
        revoked.send(json.dumps({"action": "sendMessage", "text": "Hi", "sender": "grace"}))
        refused = json.loads(revoked.recv(timeout=WAIT_S))
        assert (refused["type"], refused["code"]) == ("error", "unauthorized")
        live.send(json.dumps({"action": "sendMessage", "text": "Hi", "sender": "grace"}))
        assert frames_until_done(live)[-1]["type"] == "turn.done"
        with pytest.raises(TimeoutError):  # the turn was not pushed to the revoked one
            revoked.recv(timeout=0.2)


def jwt_environment(issuer: Issuer) -> dict[str, str]:
    """The functions' settings for end-user tokens from the test issuer."""
    return {
        "CARRIER_JWT_JWKS_URL": issuer.url,
        "CARRIER_JWT_ISSUER": ISSUER,
        "CARRIER_JWT_AUDIENCE": AUDIENCE,
    }


def test_an_end_user_speaks_as_themselves_and_hears_only_their_own_rooms(
    database_url: str, store: Store, agent_id: uuid.UUID, tenant: TenantKey, issuer: Issuer
) -> None:
    jwt = jwt_environment(issuer)
    claims = {"tenant_id": str(tenant.tenant_id)}
    grace = issuer.token({**claims, "sub": "grace"})
    eve = issuer.token({**claims, "sub": "eve"})
    with (
        Emulator(database_url, retry_interval_scale=RETRY_SCALE, environment=jwt) as emulator,
        serve(emulator) as server,
    ):
        with connect(url(server, agent_id, "g1", grace)) as socket:
            socket.send(json.dumps({"action": "sendMessage", "text": "Hi", "sender": "eve"}))
            assert json.loads(socket.recv(timeout=WAIT_S))["code"] == "forbidden"
            socket.send(json.dumps({"action": "sendMessage", "text": "Hi"}))
            frames = frames_until_done(socket)
        assert [f["type"] for f in frames] == [
            "accepted",
            "turn.progress",
            "reply",
            "turn.progress",
            "turn.done",
        ]
        sender = store.memory(uuid.UUID(frames[0]["message_id"])).entity_id
        assert sender == entity_id_for(agent_id, "api", "grace")
        # Eve naming "g1" listens to a g1 of her own: Grace's turns there never reach her.
        with (
            connect(url(server, agent_id, "g1", eve)) as eves,
            connect(url(server, agent_id, "g1", grace)) as graces,
        ):
            wait_for(lambda: connections(store) == 2)
            graces.send(json.dumps({"action": "sendMessage", "text": "My secret"}))
            assert frames_until_done(graces)[-1]["type"] == "turn.done"
            with pytest.raises(TimeoutError):
                eves.recv(timeout=0.3)


def test_an_end_users_connection_goes_quiet_when_their_token_expires(
    database_url: str, store: Store, agent_id: uuid.UUID, tenant: TenantKey, issuer: Issuer
) -> None:
    jwt = jwt_environment(issuer)
    claims = {"tenant_id": str(tenant.tenant_id), "sub": "grace"}
    with (
        Emulator(database_url, retry_interval_scale=RETRY_SCALE, environment=jwt) as emulator,
        serve(emulator) as server,
    ):
        # Made once the server is up, so its few seconds are not spent starting it.
        short = issuer.token({**claims, "exp": int(time.time()) + 3})
        with connect(url(server, agent_id, "g1", short)) as socket:
            socket.send(json.dumps({"action": "sendMessage", "text": "Hi"}))
            assert frames_until_done(socket)[-1]["type"] == "turn.done"
            time.sleep(max(0.0, int(time.time()) + 1 - time.time()) + 3)  # past `exp`
            socket.send(json.dumps({"action": "sendMessage", "text": "Hi again"}))
            refused = json.loads(socket.recv(timeout=WAIT_S))
            assert (refused["type"], refused["code"]) == ("error", "unauthorized")


def event(name: str, key: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (ROOT / "events" / name).read_text().replace(EVENT_KEY, key)
    )
    return loaded


def test_the_cloud_handler_takes_api_gateway_events_and_forgets_a_gone_connection(
    database_url: str, runtime: Runtime, ada: Character, tenant: TenantKey, store: Store
) -> None:
    agent_id = runtime.register_agent(ada, tenant.tenant_id)
    with Emulator(database_url, retry_interval_scale=RETRY_SCALE, poll=False) as emulator:
        function = emulator.functions["WebSocketFunction"]
        connected = event("websocket_connect.json", tenant.key)
        connection_id = connected["requestContext"]["connectionId"]
        assert connected["queryStringParameters"]["agent"] == str(agent_id)

        refused = event("websocket_connect.json", "carrier_not-a-key")
        answer = emulator.call(function, refused)
        assert answer["statusCode"] == 401
        assert json.loads(answer["body"])["error"]["code"] == "unauthorized"
        assert store.live_connection(connection_id) is None

        assert emulator.call(function, connected) == {"statusCode": 200}
        stored = store.live_connection(connection_id)
        assert stored is not None and stored.room == "lobby" and stored.sender == ""
        assert stored.endpoint == emulator.environment["WEBSOCKET_ENDPOINT"]
        assert stored.endpoint.endswith(".execute-api.us-east-1.amazonaws.com/live")

        # The message is taken and its room's runner started; its accepted frame is pushed
        # through moto, where no socket of that id is open: GoneException, and the
        # connection is forgotten.
        answer = emulator.call(function, event("websocket_send_message.json", tenant.key))
        assert answer == {"statusCode": 200}
        with store.connection() as conn:
            turns = conn.execute("SELECT count(*) AS n FROM turns").fetchone()
        assert turns is not None and turns["n"] == 1
        [runner] = emulator.executions()
        assert runner["name"].startswith("room-") and "-g" in runner["name"]
        assert emulator.hooked_pushes == {"gone": 1}
        assert store.live_connection(connection_id) is None

        assert emulator.call(function, event("websocket_disconnect.json", tenant.key)) == {
            "statusCode": 200
        }
        # An event API Gateway would not send is refused, naming what it lacks.
        for wrong, missing in [
            ({"body": "{}"}, "requestContext.routeKey, requestContext.connectionId"),
            ({"requestContext": {"routeKey": "$default"}}, "requestContext.connectionId"),
        ]:
            with pytest.raises(
                ValueError, match=f"not an API Gateway WebSocket event: no {missing}"
            ):
                emulator.call(function, wrong)


def test_a_push_that_fails_is_logged_and_the_step_goes_on(
    runtime: Runtime,
    agent_id: uuid.UUID,
    tenant: TenantKey,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    turn = run_turn(
        runtime,
        {"agent_id": agent_id, "room": "r1", "sender": "grace", "text": "Hi", "source": "api"},
    )
    room_id = room_id_for(agent_id, "api", "r1")
    # Nothing listens on this port: the push fails, does not raise, and the row stays.
    dead = Connection("dead=", tenant.tenant_id, agent_id, room_id, "r1", "", "http://127.0.0.1:9")
    store.add_connection(dead)
    built: list[Frame] = []

    def frames() -> list[Frame]:
        built.append({"type": "turn.done", "turn_id": str(turn.turn_id)})
        return built[-1:]

    pusher = Pusher()
    monkeypatch.delenv("WEBSOCKET_ENDPOINT", raising=False)
    assert pusher.to_turn(runtime, turn.turn_id, frames) == 0
    assert built == []  # pushing is off: not even the frames are built
    monkeypatch.setenv("WEBSOCKET_ENDPOINT", "http://127.0.0.1:9")
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    assert pusher.to_turn(runtime, turn.turn_id, frames) == 0
    assert len(built) == 1
    assert store.live_connection("dead=") is not None
