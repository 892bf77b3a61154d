"""Faults a running deployment meets, with real parts only: `carrier dev` stopped with
Ctrl-C while a room's turns wait, and its Postgres killed while messages stream in.

`carrier dev` runs as a subprocess (tests/dev_server.py) and is talked to over HTTP;
the killed Postgres is a server of the test's own (tests/postgres_process.py). The
agent's text model is the sample plugin's sluggish one, so turns are still under way
when the fault comes.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from carrier_core import Character, load_character
from carrier_core.store.store import Store
from tests.conftest import ROOT
from tests.dev_server import DevServer, carrier_dev, offline_environment
from tests.postgres_process import running_postgres
from tests.test_emulated import rows, turn_spans

pytestmark = pytest.mark.skipif(
    not (ROOT / "template.yaml").is_file(), reason="no template.yaml yet"
)

FINISHED = ("done", "failed")


def sluggish_character(folder: Path) -> tuple[Path, Character]:
    """A character file whose text model takes its time (tests.sample_plugin:sluggish)."""
    path = folder / "sluggish.json"
    path.write_text(
        json.dumps(
            {
                "name": "Sluggish Ada",
                "plugins": ["tests.sample_plugin:sluggish"],
                "settings": {"model_provider": "sluggish"},
            }
        )
    )
    return path, load_character(path)


def dev_environment(database_url: str, home: Path, **overrides: str) -> dict[str, str]:
    """`carrier dev`'s environment: its database and home, and this repository importable
    (the character's plugin is tests.sample_plugin)."""
    return offline_environment(
        DATABASE_URL=database_url, CARRIER_HOME=str(home), PYTHONPATH=str(ROOT), **overrides
    )


@dataclass(frozen=True)
class Answer:
    """One HTTP answer and how long it took."""

    status: int
    body: dict[str, Any]
    headers: httpx.Headers
    seconds: float


class Api:
    """The API of a `carrier dev`, with the key it saved for the local tenant."""

    def __init__(self, dev: DevServer):
        key = (Path(dev.env["CARRIER_HOME"]) / "dev-api-key").read_text().strip()
        self.http = httpx.Client(
            base_url=dev.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def _answer(self, method: str, path: str, **kwargs: Any) -> Answer:
        began = time.monotonic()
        response = self.http.request(method, path, **kwargs)
        return Answer(
            response.status_code, response.json(), response.headers, time.monotonic() - began
        )

    def post(self, agent: uuid.UUID, room: str, text: str) -> Answer:
        body = {"text": text, "sender": "grace"}
        return self._answer("POST", f"/v1/agents/{agent}/rooms/{room}/messages", json=body)

    def accept(self, agent: uuid.UUID, room: str, text: str) -> str:
        """Post a message that must be accepted; its turn's id."""
        answer = self.post(agent, room, text)
        assert answer.status == 202, answer
        return str(answer.body["turn_id"])

    def unfinished(self, turn_ids: list[str]) -> bool:
        """Whether some of these turns are neither done nor failed yet."""
        answers = [self._answer("GET", f"/v1/turns/{turn_id}") for turn_id in turn_ids]
        return any(a.body["status"] not in FINISHED for a in answers)

    def health(self) -> Answer:
        return self._answer("GET", "/v1/health")

    def websocket_url(self, agent: uuid.UUID, room: str) -> str:
        base = str(self.http.base_url).replace("http://", "ws://").rstrip("/")
        token = self.http.headers["Authorization"].removeprefix("Bearer ")
        return f"{base}/v1/ws?agent={agent}&room={room}&token={token}"

    def wait_turn(self, turn_id: str, deadline: float) -> dict[str, Any]:
        """The turn once done or failed; fails at `deadline` (time.monotonic())."""
        while True:
            answer = self._answer("GET", f"/v1/turns/{turn_id}")
            if answer.status == 200 and answer.body["status"] in FINISHED:
                return answer.body
            assert time.monotonic() < deadline, f"turn {turn_id} still: {answer.body}"
            time.sleep(0.1)


# -- carrier dev stopped and started again ------------------------------------------------


def turn_statuses(store: Store) -> list[str]:
    return [r["status"] for r in rows(store, "SELECT status FROM turns")]


def test_turns_waiting_when_carrier_dev_stops_are_answered_in_order_after_it_starts_again(
    database_url: str, store: Store, tmp_path: Path
) -> None:
    """Ctrl-C does not wait for the rooms' runners; the next start takes the held room
    over, and its turns (queued, or stopped mid-way) are answered in arrival order,
    each once, without the client posting anything again."""
    character_file, character = sluggish_character(tmp_path)
    agent = character.agent_id
    env = dev_environment(database_url, tmp_path / "home")
    with carrier_dev(env, tmp_path / "dev-1.log", "--character", str(character_file)) as dev:
        api = Api(dev)
        with ThreadPoolExecutor(20) as pool:
            turn_ids = list(pool.map(lambda n: api.accept(agent, "r1", f"message {n}"), range(20)))
        time.sleep(1)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 10, "Ctrl-C waited for the runners"
    left = [s for s in turn_statuses(store) if s != "done"]
    assert left, "every turn was done before the restart: nothing was left to take over"

    with carrier_dev(env, tmp_path / "dev-2.log", "--character", str(character_file)) as dev:
        api = Api(dev)
        deadline = time.monotonic() + 60
        turns = [api.wait_turn(turn_id, deadline) for turn_id in turn_ids]

    assert [t["status"] for t in turns] == ["done"] * 20, [t["error"] for t in turns]
    assert [len(t["replies"]) for t in turns] == [1] * 20  # a turn taken up again says it once
    room_id = store.turn(uuid.UUID(turn_ids[0])).room_id
    spans = turn_spans(store, room_id)
    assert len(spans) == 20
    # In order of arrival, and none began before the one before it had ended.
    for (_, ended, _), (began, _, _) in itertools.pairwise(spans):
        assert ended <= began


# -- Postgres killed while messages stream in ---------------------------------------------


@dataclass
class Stream:
    """A client posting to its rooms in turn, one message after another, until stopped."""

    api: Api
    agent: uuid.UUID
    rooms: tuple[str, ...]
    #: (when it was sent, time.monotonic(); the answer), in order.
    answers: list[tuple[float, Answer]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    #: What ended the stream early (no answer at all, say): raised when it is joined.
    error: Exception | None = None

    def run(self) -> None:
        try:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                sent = time.monotonic()
                room = self.rooms[n % len(self.rooms)]
                self.answers.append((sent, self.api.post(self.agent, room, f"message {n}")))
                time.sleep(0.05)
        except Exception as exc:
            self.error = exc

    def accepted(self) -> list[str]:
        return [a.body["turn_id"] for _, a in self.answers if a.status == 202]

    def answered_within(self, start: float, end: float) -> list[Answer]:
        """The answers to posts sent after `start` that came back before `end`."""
        return [a for sent, a in self.answers if sent >= start and sent + a.seconds < end]


@contextmanager
def streaming(stream: Stream) -> Iterator[Stream]:
    thread = threading.Thread(target=stream.run, name="stream", daemon=True)
    thread.start()
    try:
        yield stream
    finally:
        stream.stop.set()
        thread.join(timeout=30)
        if stream.error is not None:  # the likely cause of whatever failed meanwhile
            raise AssertionError("the stream of posts broke off") from stream.error
    assert not thread.is_alive(), "a post never came back"


def wait_for(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout:g}s"
        time.sleep(0.05)


def assert_unavailable(answer: Answer) -> None:
    """Told quickly that the database is away, and when to try again."""
    assert answer.status == 503, answer
    assert answer.body["error"]["code"] == "unavailable"
    assert int(answer.headers["Retry-After"]) > 0
    assert answer.seconds < 8, answer


def test_messages_accepted_before_postgres_is_killed_are_answered_once_it_is_back(
    tmp_path: Path,
) -> None:
    """While the database is away, posts and health checks are answered 503 within
    seconds (nothing is accepted, so nothing is owed); once it is back, the API recovers
    within seconds, every accepted message's turn ends, and no room is left blocked."""
    rooms = ("r1", "r2", "r3", "r4")
    character_file, character = sluggish_character(tmp_path)
    agent = character.agent_id
    args = ("--character", str(character_file), "--schedule-interval", "1")
    with running_postgres(tmp_path) as postgres:
        env = dev_environment(postgres.url, tmp_path / "home", CARRIER_RUNNER_LEASE_S="5")
        with carrier_dev(env, tmp_path / "dev.log", *args) as dev:
            api = Api(dev)
            with streaming(Stream(api, agent, rooms)) as stream:
                wait_for("messages accepted", lambda: len(stream.accepted()) >= 8, 30)
                # Killed while a turn is under way (the model is slow: there soon is one).
                wait_for("a turn under way", lambda: api.unfinished(stream.accepted()[-4:]), 30)
                with connect(api.websocket_url(agent, "ws")) as socket:
                    postgres.kill()
                    killed = time.monotonic()
                    assert_unavailable(api.health())
                    # The WebSocket API says so too, in its own terms: an error frame for
                    # a message on an open socket, a 503 for a new connection.
                    frame = {"action": "sendMessage", "text": "hi", "client_message_id": "w1"}
                    socket.send(json.dumps({**frame, "sender": "grace"}))
                    error = json.loads(socket.recv(timeout=30))
                assert (error["type"], error["code"]) == ("error", "unavailable"), error
                assert error["client_message_id"] == "w1"
                with pytest.raises(InvalidStatus) as refused:
                    connect(api.websocket_url(agent, "ws"), open_timeout=30)
                assert refused.value.response.status_code == 503
                wait_for(
                    "posts answered in the outage",
                    lambda: len(stream.answered_within(killed, time.monotonic())) >= 2,
                    30,
                )
                stream.stop.set()  # a post still out may be accepted once Postgres is back
                restarting = time.monotonic()
                postgres.start()
                back = time.monotonic()
                wait_for("health", lambda: api.health().status == 200, 10)
            for answer in stream.answered_within(killed, restarting):
                assert_unavailable(answer)

            deadline = back + 120
            for turn_id in stream.accepted():
                turn = api.wait_turn(turn_id, deadline)
                assert turn["status"] == "done" or turn["error"], turn
            # No room is left blocked: each answers a new message.
            again = [api.accept(agent, room, "still there?") for room in rooms]
            deadline = time.monotonic() + 30
            for turn_id in again:
                assert api.wait_turn(turn_id, deadline)["status"] == "done"


@pytest.mark.skipif(sys.platform != "linux", reason="a child subreaper is Linux's")
def test_the_embedded_postgres_killed_with_its_process_starts_again_while_still_a_zombie(
    tmp_path: Path,
) -> None:
    """kill -9 of a Carrier process and of its embedded postmaster, then a new start before
    anything reaps the postmaster (tests/killed_postmaster.py): pgserver and Postgres took
    the zombie for a live server, and the new process could not reach its database; and
    the killed process stayed on pgserver's list of the server's users, so no later
    process ever stopped the server."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.killed_postmaster", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["zombie_during_second_start"], "the test did not make the fault it is for"
    assert report["returncode"] == 0, report["stderr"]
    assert report["second"], report["stderr"]
    assert report["second"] != report["first"], "the second start joined the killed server"
    # pgserver stops the server when the last process using it exits: the killed one is
    # no longer counted, so the second process stopped the server it started.
    assert not report["first_process_listed_as_user"]
    assert report["second_server_stopped"]
