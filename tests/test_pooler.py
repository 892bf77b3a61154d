"""Carrier through PgBouncer in transaction pooling mode, which refuses startup `options`
and keeps no session between transactions, as RDS Proxy does: turns, `carrier chat` and
`carrier dev` all work through it with prepared statements off.

`.ci/run` also runs the turn tests whole through it (CARRIER_TEST_PGBOUNCER=1).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from carrier_core import Character, Runtime, Settings, run_turn
from carrier_core.models import offline_models
from carrier_core.store.store import Store
from tests.conftest import CHARACTERS
from tests.dev_server import carrier_chat, carrier_dev, offline_environment
from tests.pgbouncer import pgbouncer_binary, running_pgbouncer

FINISHED = ("done", "failed")


@pytest.fixture(scope="module")
def pooled_url(database_url: str, session_store: Store) -> Iterator[str]:
    """PgBouncer before the tests' database, once it is migrated."""
    if pgbouncer_binary() is None:
        if os.environ.get("CI"):
            pytest.fail(
                "PgBouncer is not installed: .ci/run installs it (apt-get install pgbouncer)"
            )
        pytest.skip("PgBouncer is not installed (apt-get install pgbouncer)")
    with running_pgbouncer(database_url) as url:
        yield url


def test_the_pooler_refuses_startup_options_as_rds_proxy_does(pooled_url: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(pooled_url, options="-c hnsw.iterative_scan=relaxed_order")


def test_conversations_in_several_rooms_at_once_through_the_pooler(
    pooled_url: str, store: Store, ada: Character
) -> None:
    settings = Settings(
        database_url=pooled_url, prepared_statements=False, pool_size=6, reflection_interval=1
    )
    with Runtime.open(settings, offline_models()) as runtime:
        agent = runtime.register_agent(ada)
        results: dict[str, list[str]] = {}

        def talk(room: str) -> None:
            said = ["My name is Grace", "I like sailing", "What do you remember about me?"]
            results[room] = [
                " ".join(
                    run_turn(
                        runtime, {"agent_id": agent, "room": room, "sender": room, "text": text}
                    ).reply_texts
                )
                for text in said
            ]

        threads = [threading.Thread(target=talk, args=(f"room-{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        # Every session setting is the database's: recall finds the facts through the
        # filtered HNSW search, whichever server connection each statement got.
        with runtime.store.connection() as conn:
            row = conn.execute("SELECT current_setting('hnsw.iterative_scan') AS m").fetchone()
        assert row is not None and row["m"] == "relaxed_order"
    assert sorted(results) == [f"room-{n}" for n in range(4)]
    for room, replies in results.items():
        assert replies[0] == "Nice to meet you, Grace. What would you like to talk about?"
        assert "likes sailing" in replies[2], (room, replies)


def test_carrier_chat_and_carrier_dev_run_through_the_pooler(
    pooled_url: str, store: Store, tmp_path: Path
) -> None:
    env = offline_environment(
        DATABASE_URL=pooled_url, CARRIER_PREPARED_STATEMENTS="false", CARRIER_HOME=str(tmp_path)
    )
    ada = str(CHARACTERS / "ada.json")
    replies = carrier_chat(env, "--character", ada, "--user", "grace", said="My name is Grace\n")
    assert replies == ["Nice to meet you, Grace. What would you like to talk about?"]

    with carrier_dev(env, tmp_path / "dev.log", "--character", ada) as dev:
        key = (tmp_path / "dev-api-key").read_text().strip()
        client = httpx.Client(base_url=dev.base, headers={"Authorization": f"Bearer {key}"})
        agent = "4c06e977-0451-5371-b115-515d4ebb5741"  # Ada's id, from her name
        posted = client.post(
            f"/v1/agents/{agent}/rooms/pooled/messages",
            json={"text": "I live in Lisbon", "sender": "grace"},
        )
        assert posted.status_code == 202, posted.text
        turn_id = uuid.UUID(posted.json()["turn_id"])
        deadline = time.monotonic() + 30
        while (turn := client.get(f"/v1/turns/{turn_id}").json())["status"] not in (
            "done",
            "failed",
        ):
            assert time.monotonic() < deadline, turn
            time.sleep(0.1)
    assert turn["status"] == "done" and len(turn["replies"]) == 1, turn
