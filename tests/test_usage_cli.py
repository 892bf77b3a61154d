"""`carrier chat` with a real provider's SDK (against the fake API), `carrier usage` and
`carrier reembed`, as processes against the test database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

from carrier_core import Character, Runtime, run_turn
from carrier_core.models import (
    EmbeddingDimensionMismatch,
    Embeddings,
    ModelSet,
    OfflineModel,
    Usage,
)
from carrier_core.reembed import reembed
from carrier_core.store.base import EMBEDDING_DIMENSIONS
from carrier_core.store.store import Store
from tests.conftest import CHARACTERS, make_runtime
from tests.fake_llm import FakeLLM, fake_llm

pytest.importorskip("openai")


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with fake_llm() as server:
        yield server


def carrier(
    database_url: str, *args: str, stdin: str = "", **env_vars: str
) -> subprocess.CompletedProcess[str]:
    unset = {"OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"}
    env = {k: v for k, v in os.environ.items() if k not in unset and not k.startswith("CARRIER_")}
    env.update(DATABASE_URL=database_url, **env_vars)
    return subprocess.run(
        [sys.executable, "-m", "carrier_core.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_openai_key_chat_then_usage(store: Store, database_url: str, fake: FakeLLM) -> None:
    ada = str(CHARACTERS / "ada.json")
    chat = carrier(
        database_url,
        "chat",
        "--character",
        ada,
        "--user",
        "grace",
        stdin="Hello\n",
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=fake.url + "/v1",
        CARRIER_MODEL_MAX_RETRIES="0",
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.splitlines() == ["Hello from the fake OpenAI."]
    assert "model: openai gpt-4o" in chat.stderr
    assert "sk-test" not in chat.stderr + chat.stdout

    usage = carrier(database_url, "usage", "--days", "1")
    assert usage.returncode == 0, usage.stderr
    header, *rows, total = usage.stdout.splitlines()
    assert header.split()[:3] == ["day", "agent", "calls"]
    assert any("Ada" in row for row in rows)
    assert total.startswith("total") and float(total.split()[-1]) > 0
    assert carrier(database_url, "usage", "--agent", "nobody").stdout.startswith("No model calls")


class TinyEmbedding:
    """An 8-dimensional embedding model, standing in for a model of another size."""

    name = "tiny-8"
    dimensions = 8
    provider = "test"

    def embed(self, texts: Sequence[str]) -> Embeddings:
        vectors = [[1.0, float(len(t) % 7), 0, 0, 0, 0, 0, 1.0] for t in texts]
        return Embeddings(vectors, Usage(len(texts)), self.name, self.provider)


def test_reembed_resizes_the_column_and_embeds_every_memory(
    runtime: Runtime, store: Store, ada: Character
) -> None:
    agent = runtime.register_agent(ada)
    run_turn(runtime, {"agent_id": agent, "room": "r", "sender": "u", "text": "My name is Grace"})
    tiny = make_runtime(store, ModelSet(OfflineModel(), OfflineModel(), TinyEmbedding()))
    seen: list[tuple[int, int]] = []
    try:
        done = reembed(tiny, batch_size=2, progress=lambda d, t: seen.append((d, t)))
        assert store.embedding_dimensions == 8
        total = sum(store.count_memories(agent).values())
        assert done == total and seen[0] == (0, total) and seen[-1] == (total, total)
        with store._pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM memories WHERE embedding IS NULL"
                " OR vector_dims(embedding) <> 8"
            ).fetchone()
            assert row is not None and row["n"] == 0
            index = conn.execute(
                "SELECT 1 FROM pg_indexes WHERE indexname = 'memories_fragment_embedding'"
            ).fetchone()
        assert index is not None
        rows = store.usage(days=1)
        assert rows and rows[0].calls >= 1
        # The old model no longer fits: a clear error naming both sizes.
        plain = make_runtime(store, None, model_provider="offline")
        with pytest.raises(EmbeddingDimensionMismatch, match=r"384.*8.*carrier reembed"):
            plain.models_for(ada)
    finally:
        store.resize_embeddings(EMBEDDING_DIMENSIONS)


def test_reembed_command_shows_progress(store: Store, database_url: str, ada: Character) -> None:
    runtime = make_runtime(store, None, model_provider="offline")
    runtime.register_agent(ada)
    result = carrier(database_url, "reembed", "--batch", "3", CARRIER_MODEL_PROVIDER="offline")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^re-embedding .* (\d+)/\1 memories$", result.stderr, re.MULTILINE)
    assert "(384 dimensions)" in result.stderr
    missing = carrier(database_url, "reembed", "--agent", "nobody")
    assert missing.returncode == 1 and "no agent named 'nobody'" in missing.stderr
