"""One identity per agent: a tenant names each agent by a handle (the slug of its name) as
well as by its id, so the API, `carrier dev` and `carrier chat` all reach the same agent."""

from __future__ import annotations

import io
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from carrier_core import Character, Runtime
from carrier_core.api.app import create_app
from carrier_core.character import handle_for
from carrier_core.cli import main
from carrier_core.memory import MemoryKind
from carrier_core.store.agents import AgentConflict
from carrier_core.store.migrate import migrate, migrations
from carrier_core.turn.run import run_turn
from tests.conftest import CHARACTERS, TenantKey, run_inline
from tests.test_chat_completions import serving
from tests.test_migrations import fresh_database  # noqa: F401 (a fixture)


@pytest.fixture
def acme(make_tenant: Callable[[str], TenantKey]) -> TenantKey:
    return make_tenant("acme")


@pytest.fixture
def client(runtime: Runtime, acme: TenantKey) -> Iterator[TestClient]:
    app = create_app(lambda: runtime, run_inline(runtime))
    with TestClient(app, headers=acme.headers) as test_client:
        yield test_client


def test_handles_are_slugs_of_names() -> None:
    assert handle_for("Ada") == "ada"
    assert handle_for("Dr. Zoë Hart") == "dr-zoe-hart"
    assert handle_for("C-3PO") == "c-3po"
    assert handle_for("日本") == "agent"
    assert handle_for("x" * 47 + "-y") == "x" * 47


def test_a_second_agent_of_one_name_is_refused_and_put_replaces_the_first(
    client: TestClient, runtime: Runtime
) -> None:
    made = client.post("/v1/agents", json={"name": "Ada", "bio": ["first"]})
    assert made.status_code == 201
    ada = made.json()
    assert ada["handle"] == "ada"

    again = client.post("/v1/agents", json={"name": "Ada", "bio": ["second"]})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert "'ada'" in again.json()["error"]["message"]
    assert "PUT /v1/agents/ada" in again.json()["error"]["message"]
    assert [a["id"] for a in client.get("/v1/agents").json()["data"]] == [ada["id"]]

    # What it remembers stays when its character is replaced by handle.
    posted = client.post(
        "/v1/agents/ada/rooms/lobby/messages", json={"text": "Hello", "sender": "grace"}
    )
    assert posted.status_code == 202
    replaced = client.put("/v1/agents/ada", json={"name": "Ada", "bio": ["second"]})
    assert replaced.status_code == 200
    assert (replaced.json()["id"], replaced.json()["character"]["bio"]) == (ada["id"], ["second"])
    messages = client.get("/v1/agents/ada/rooms/lobby/messages").json()["data"]
    assert "Hello" in [m["text"] for m in messages]

    # By id too; a renamed agent keeps its handle.
    renamed = client.put(f"/v1/agents/{ada['id']}", json={"name": "Ada Lovelace"})
    assert (renamed.json()["handle"], renamed.json()["name"]) == ("ada", "Ada Lovelace")
    assert client.get("/v1/agents/ada").json()["id"] == ada["id"]


def test_put_with_a_new_handle_makes_the_agent(client: TestClient) -> None:
    made = client.put("/v1/agents/tutor", json={"name": "Ada"})
    assert made.status_code == 201
    assert (made.json()["handle"], made.json()["name"]) == ("tutor", "Ada")
    again = client.put("/v1/agents/tutor", json={"name": "Ada", "bio": ["patient"]})
    assert (again.status_code, again.json()["id"]) == (200, made.json()["id"])

    bad = client.put("/v1/agents/Not_A_Handle", json={"name": "Ada"})
    assert bad.status_code == 422
    assert "Not_A_Handle" in bad.json()["error"]["message"]
    missing = client.put(f"/v1/agents/{uuid.uuid4()}", json={"name": "Ada"})
    assert missing.status_code == 404
    assert [a["handle"] for a in client.get("/v1/agents").json()["data"]] == ["tutor"]


def test_a_handle_is_the_tenants_own(
    client: TestClient, runtime: Runtime, make_tenant: Callable[[str], TenantKey]
) -> None:
    ours = client.put("/v1/agents/ada", json={"name": "Ada"}).json()
    globex = make_tenant("globex")
    theirs = client.put("/v1/agents/ada", json={"name": "Ada"}, headers=globex.headers).json()
    assert theirs["id"] != ours["id"]
    assert client.get("/v1/agents/ada").json()["id"] == ours["id"]
    # Another tenant's agent is not there, by handle or by id.
    assert client.get(f"/v1/agents/{theirs['id']}").status_code == 404
    nobody = make_tenant("initech")
    assert client.get("/v1/agents/ada", headers=nobody.headers).status_code == 404


def test_the_api_and_a_character_file_reach_the_same_agent(
    client: TestClient, runtime: Runtime, acme: TenantKey, ada: Character
) -> None:
    """The walkthrough: an agent made over the API, then the same character file loaded by
    `carrier chat` or `carrier dev` (register_agent): one Ada, one memory."""
    made = client.put("/v1/agents/ada", json=ada.to_document()).json()
    assert runtime.register_agent(ada, acme.tenant_id) == uuid.UUID(made["id"])
    assert len(client.get("/v1/agents").json()["data"]) == 1

    # A character file whose own id is not that agent's is refused, not merged.
    stranger = ada.model_copy(update={"id": uuid.uuid4()})
    with pytest.raises(AgentConflict, match="'ada'"):
        runtime.register_agent(stranger, acme.tenant_id)


def test_a_message_reaches_the_agent_by_handle_on_every_surface(
    client: TestClient, runtime: Runtime, acme: TenantKey, ada: Character
) -> None:
    agent_id = runtime.register_agent(ada, acme.tenant_id)
    accepted = client.post(
        "/v1/agents/ada/rooms/r1/messages", json={"text": "Hello", "sender": "grace"}
    ).json()
    turn = client.get(f"/v1/turns/{accepted['turn_id']}").json()
    assert turn["status"] == "done" and turn["replies"]
    models = client.get("/v1/models").json()["data"]
    assert [(m["id"], m["name"]) for m in models] == [("ada", "Ada")]
    completion = client.post(
        "/v1/chat/completions",
        json={"model": "ada", "messages": [{"role": "user", "content": "Hello"}]},
    )
    assert completion.status_code == 200
    assert completion.json()["choices"][0]["message"]["content"].startswith("Hello")
    stored = runtime.store.memories_page(agent_id, kinds=[MemoryKind.MESSAGE], limit=10)
    assert len(stored) == 4  # two messages in, two replies


def test_agents_stored_before_handles_get_them(fresh_database: str) -> None:  # noqa: F811
    """Migration 0010: each agent gets the slug of its name; a tenant's later agents of one
    slug (the API made a new one per POST) get the start of their id after it."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in migrations():
            if version < 10:
                conn.execute(sql.encode())
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, name))
        first, second, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        for agent_id, name, age in [(first, "Ada", 2), (second, "Ada", 1), (other, "Dr. Who?", 1)]:
            conn.execute(
                "INSERT INTO agents (id, tenant_id, name, character, created_at)"
                " SELECT %s, id, %s, %s, now() - make_interval(days => %s)"
                " FROM tenants WHERE name = 'local'",
                (agent_id, name, json.dumps({"name": name}), age),
            )
    assert migrate(fresh_database) == [v for v, _, _ in migrations() if v >= 10]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        rows = dict(conn.execute("SELECT id, handle FROM agents").fetchall())
    assert rows == {first: "ada", second: f"ada-{str(second)[:8]}", other: "dr-who"}


def test_agents_are_listed_shown_reset_and_removed_from_the_command_line(
    database_url: str,
    runtime: Runtime,
    ada: Character,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    agent_id = runtime.register_agent(ada)
    run_turn(runtime, {"agent_id": agent_id, "room": "r", "sender": "grace", "text": "Hi"})
    assert runtime.store.count_memories(agent_id)[MemoryKind.FRAGMENT] > 0

    assert main(["agents", "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["handle", "name", "tenant", "memories", "id"]
    assert row.split()[:3] == ["ada", "Ada", "local"] and row.split()[-1] == str(agent_id)

    assert main(["agents", "show", "ada"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["id"], shown["memories"]["message"]) == (str(agent_id), 2)

    assert main(["agents", "reset-memory", "ada"]) == 2  # no terminal to confirm: --yes
    assert "--yes" in capsys.readouterr().err
    assert main(["agents", "reset-memory", "ada", "--yes"]) == 0
    kept = runtime.store.count_memories(agent_id)
    assert MemoryKind.MESSAGE not in kept and kept[MemoryKind.FRAGMENT] > 0
    assert runtime.store.agent_rooms(agent_id, limit=10) == []

    assert main(["agents", "remove", "nobody", "--yes"]) == 2
    assert "no agent 'nobody'" in capsys.readouterr().err
    assert main(["agents", "remove", str(agent_id), "--yes"]) == 0
    assert runtime.store.agents() == []


def test_chat_over_the_api_talks_to_the_agent_the_api_made(
    runtime: Runtime,
    acme: TenantKey,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The walkthrough's complaint: Ada made with the API, then `carrier chat --api` with
    ada.json, must be one agent, so what one was told the other remembers."""
    ada_file = CHARACTERS / "ada.json"
    with serving(create_app(lambda: runtime, run_inline(runtime))) as url:
        made = httpx.put(
            f"{url}/v1/agents/ada",
            json=json.loads(ada_file.read_text()),
            headers=acme.headers,
        ).json()
        monkeypatch.setattr(sys, "stdin", io.StringIO("My name is Grace\n"))
        code = main(
            ["chat", "--character", str(ada_file), "--api", url, "--key", acme.key, "--user", "g"]
        )
    assert code == 0, capsys.readouterr().err
    assert "Grace" in capsys.readouterr().out
    agent_id = uuid.UUID(made["id"])
    assert runtime.store.count_memories(agent_id)[MemoryKind.MESSAGE] == 2


def test_two_character_files_of_one_name_are_refused_by_carrier_dev(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"name": "Ada", "bio": ["one"]}))
    second.write_text(json.dumps({"name": "ADA", "bio": ["two"]}))
    assert main(["dev", "--character", str(first), "--character", str(second)]) == 2
    err = capsys.readouterr().err
    assert f"{first} and {second} are both agent 'ada'" in err
