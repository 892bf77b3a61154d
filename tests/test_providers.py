"""Real model providers through the real SDKs, against a fake API on 127.0.0.1.

No key and no internet: the `openai` and `anthropic` clients are pointed at
`tests/fake_llm.py`, which speaks their wire formats, including the failures
(429 with Retry-After, 500, a timeout, malformed JSON, 401, context too long).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from carrier_core import Character, Runtime, run_turn
from carrier_core.config import Settings
from carrier_core.decision import parse_decision
from carrier_core.models import (
    EmbeddingDimensionMismatch,
    ModelAuthError,
    ModelBadRequest,
    ModelContextTooLong,
    ModelRateLimited,
    ModelRequest,
    ModelRole,
    ModelUnavailable,
)
from carrier_core.models import anthropic as an
from carrier_core.models import openai as oa
from carrier_core.models.select import FallbackModel, primary_provider
from carrier_core.store.store import Store
from tests.conftest import make_runtime
from tests.fake_llm import FakeLLM, Reply, error, fake_llm

pytest.importorskip("openai")
pytest.importorskip("anthropic")

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
MESSAGES = "/v1/messages"
KEY_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with fake_llm() as server:
        yield server


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in ("MODEL_PROVIDER", "LARGE_MODEL", "SMALL_MODEL", "EMBEDDING_MODEL"):
        monkeypatch.delenv(f"CARRIER_{name}", raising=False)


def request(task: str = "decide", prompt: str = "Hello?") -> ModelRequest:
    return ModelRequest(role=ModelRole.LARGE, task=task, system="You are Ada.", prompt=prompt)


def openai_client(fake: FakeLLM, *, timeout: float = 5.0, retries: int = 2) -> Any:
    return oa.make_client(
        api_key="sk-test", base_url=fake.url + "/v1", timeout=timeout, max_retries=retries
    )


def anthropic_client(fake: FakeLLM, *, timeout: float = 5.0, retries: int = 2) -> Any:
    return an.make_client(
        api_key="ak-test", base_url=fake.url, timeout=timeout, max_retries=retries
    )


# -- OpenAI -------------------------------------------------------------------


def test_openai_decides_through_a_forced_tool_call(fake: FakeLLM) -> None:
    model = oa.OpenAIChatModel(openai_client(fake), "gpt-4o-mini")
    generation = model.generate(request())
    decision = parse_decision(generation.text)
    assert decision.actions == ["REPLY"] and decision.text == "Hello from the fake OpenAI."
    assert (generation.provider, generation.model) == ("openai", "gpt-4o-mini")
    assert (generation.usage.input_tokens, generation.usage.output_tokens) == (120, 30)
    [seen] = fake.requests(CHAT)
    assert seen.headers["authorization"] == "Bearer sk-test"
    assert seen.body["tool_choice"] == {"type": "function", "function": {"name": "respond"}}
    assert seen.body["messages"][0] == {"role": "system", "content": "You are Ada."}
    assert seen.body["max_completion_tokens"] == 1024


def test_a_plain_task_is_answered_as_text(fake: FakeLLM) -> None:
    model = oa.OpenAIChatModel(openai_client(fake), "gpt-4o-mini")
    text = model.generate(request(task="reply")).text
    assert "compatible server" in text
    assert "tools" not in fake.requests(CHAT)[0].body


def test_a_429_with_retry_after_is_waited_for_and_retried(fake: FakeLLM) -> None:
    fake.queue(CHAT, error(429, "slow down", "rate_limit_error", **{"Retry-After": "0.6"}))
    model = oa.OpenAIChatModel(openai_client(fake), "gpt-4o-mini")
    assert parse_decision(model.generate(request()).text).actions == ["REPLY"]
    first, second = fake.requests(CHAT)
    assert second.at - first.at >= 0.55


def test_a_500_is_retried_then_succeeds(fake: FakeLLM) -> None:
    fake.queue(CHAT, error(500, "boom", "server_error"))
    model = oa.OpenAIChatModel(openai_client(fake), "gpt-4o-mini")
    assert model.generate(request()).text
    assert len(fake.requests(CHAT)) == 2


def test_retries_running_out_on_429_is_rate_limited(fake: FakeLLM) -> None:
    fake.queue(CHAT, *[error(429, "slow down", **{"Retry-After": "0"}) for _ in range(2)])
    model = oa.OpenAIChatModel(openai_client(fake, retries=1), "gpt-4o-mini")
    with pytest.raises(ModelRateLimited):
        model.generate(request())
    assert len(fake.requests(CHAT)) == 2


def test_a_timeout_is_unavailable(fake: FakeLLM) -> None:
    fake.queue(CHAT, Reply(delay=1.5, body={}))
    model = oa.OpenAIChatModel(openai_client(fake, timeout=0.3, retries=0), "gpt-4o-mini")
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="timed out"):
        model.generate(request())
    assert time.monotonic() - started < 1.4


def test_malformed_json_is_unavailable(fake: FakeLLM) -> None:
    fake.queue(CHAT, Reply(raw=b'{"choices": [ {"mess'))
    model = oa.OpenAIChatModel(openai_client(fake, retries=0), "gpt-4o-mini")
    with pytest.raises(ModelUnavailable, match="malformed"):
        model.generate(request())


def test_a_401_is_an_auth_error_and_not_retried(fake: FakeLLM) -> None:
    fake.queue(CHAT, error(401, "Incorrect API key provided: sk-t***", "invalid_request_error"))
    model = oa.OpenAIChatModel(openai_client(fake), "gpt-4o-mini")
    with pytest.raises(ModelAuthError, match=r"authentication failed \(401\); check the API key"):
        model.generate(request())
    assert len(fake.requests(CHAT)) == 1


def test_a_400_is_a_bad_request_and_context_overflow_is_told_apart(fake: FakeLLM) -> None:
    fake.queue(CHAT, error(400, "Invalid value for 'model'"))
    fake.queue(CHAT, error(400, "This model's maximum context length is 128000 tokens"))
    model = oa.OpenAIChatModel(openai_client(fake), "gpt-4o-mini")
    with pytest.raises(ModelBadRequest) as bad:
        model.generate(request())
    assert type(bad.value) is ModelBadRequest
    with pytest.raises(ModelContextTooLong):
        model.generate(request())


def test_context_too_long_is_trimmed_and_retried_once(fake: FakeLLM) -> None:
    fake.queue(CHAT, error(400, "maximum context length exceeded", "context_length_exceeded"))
    model = oa.OpenAIChatModel(openai_client(fake), "gpt-4o-mini")
    chained = FallbackModel("large", [("openai", lambda: model)])
    long = ModelRequest(
        role=ModelRole.LARGE,
        task="decide",
        system="s",
        prompt="x" * 500,
        shorter_prompt="short",
    )
    generation = chained.generate(long)
    assert generation.trimmed
    _first, second = fake.requests(CHAT)
    assert second.body["messages"][1]["content"] == "short"
    # Twice too long: raised after the one retry.
    fake.queue(CHAT, *[error(400, "maximum context length exceeded") for _ in range(2)])
    with pytest.raises(ModelContextTooLong):
        chained.generate(long)
    assert len(fake.requests(CHAT)) == 4


def test_embeddings_ask_for_the_column_size(fake: FakeLLM) -> None:
    model = oa.OpenAIEmbedding(openai_client(fake), "text-embedding-3-small", 384)
    result = model.embed(["a", "b"])
    assert [len(v) for v in result.vectors] == [384, 384]
    assert fake.requests(EMBED)[0].body["dimensions"] == 384
    assert result.usage.input_tokens == 10


def test_a_fixed_size_embedding_model_that_does_not_fit_is_named(fake: FakeLLM) -> None:
    model = oa.OpenAIEmbedding(openai_client(fake), "nomic-embed-text", 384, provider="x")
    assert model.dimensions == 768  # its own size, whatever the column wants
    assert "dimensions" not in str(fake.seen)


# -- Anthropic ----------------------------------------------------------------


def test_anthropic_decides_through_forced_tool_use(fake: FakeLLM) -> None:
    model = an.AnthropicModel(anthropic_client(fake), "claude-3-5-haiku-latest")
    generation = model.generate(request())
    assert parse_decision(generation.text).text == "Hello from the fake Anthropic."
    assert (generation.usage.input_tokens, generation.usage.output_tokens) == (200, 40)
    [seen] = fake.requests(MESSAGES)
    # The key travels as x-api-key (or, in newer SDKs, as a bearer token).
    assert "ak-test" in (seen.headers.get("x-api-key"), seen.headers.get("authorization", "")[7:])
    assert seen.body["system"] == "You are Ada."
    assert seen.body["tool_choice"] == {"type": "tool", "name": "respond"}
    assert seen.body["tools"][0]["input_schema"]["required"] == ["thought", "actions", "text"]


def test_anthropic_429_with_retry_after_then_500_then_success(fake: FakeLLM) -> None:
    fake.queue(
        MESSAGES,
        error(429, "rate limited", "rate_limit_error", **{"retry-after": "0.5"}),
        error(529, "overloaded", "overloaded_error", **{"retry-after": "0"}),
    )
    model = an.AnthropicModel(anthropic_client(fake), "claude-3-5-haiku-latest")
    assert model.generate(request()).text
    first, second, _third = fake.requests(MESSAGES)
    assert second.at - first.at >= 0.45


def test_anthropic_401_and_malformed_json_and_timeout(fake: FakeLLM) -> None:
    fake.queue(MESSAGES, error(401, "invalid x-api-key", "authentication_error"))
    model = an.AnthropicModel(anthropic_client(fake, timeout=0.3, retries=0), "claude-x")
    with pytest.raises(ModelAuthError):
        model.generate(request())
    fake.queue(MESSAGES, Reply(raw=b"{not json"))
    with pytest.raises(ModelUnavailable, match="malformed"):
        model.generate(request())
    fake.queue(MESSAGES, Reply(delay=1.0, body={}))
    with pytest.raises(ModelUnavailable, match="timed out"):
        model.generate(request())
    fake.queue(MESSAGES, error(400, "prompt is too long: 210000 tokens > 200000 maximum"))
    with pytest.raises(ModelContextTooLong):
        model.generate(request())


# -- choosing providers, and whole turns --------------------------------------


def test_the_provider_is_chosen_from_the_environment() -> None:
    settings = Settings(database_url="postgresql://unused")
    assert primary_provider(settings, env={}) == "offline"
    assert primary_provider(settings, env={"OPENAI_API_KEY": "k"}) == "openai"
    assert primary_provider(settings, env={"ANTHROPIC_API_KEY": "k"}) == "anthropic"
    assert primary_provider(settings, env={"OPENAI_BASE_URL": "http://h/v1"}) == (
        "openai-compatible"
    )
    explicit = Settings(database_url="postgresql://unused", model_provider="offline")
    assert primary_provider(explicit, env={"OPENAI_API_KEY": "k"}) == "offline"
    character = Character(name="x", settings={"model_provider": "anthropic"})
    assert primary_provider(settings, character, env={"OPENAI_API_KEY": "k"}) == "anthropic"


def provider_runtime(store: Store, **overrides: Any) -> Runtime:
    settings: dict[str, Any] = {"model_timeout_s": 2.0, "model_max_retries": 0, **overrides}
    return make_runtime(store, None, **settings)


def turn(runtime: Runtime, ada: Character, text: str = "Hello there") -> Any:
    agent = runtime.register_agent(ada)
    result = run_turn(runtime, {"agent_id": agent, "room": "r", "sender": "u", "text": text})
    return agent, result


def ledger(store: Store, agent: uuid.UUID) -> list[dict[str, Any]]:
    with store._pool.connection() as conn:
        rows = conn.execute(
            "SELECT provider, model, role, step, status, error, input_tokens, output_tokens,"
            " cost_usd, turn_id FROM model_calls WHERE agent_id = %s ORDER BY id",
            (agent,),
        ).fetchall()
    return [dict(r) for r in rows]


def test_a_turn_with_openai(
    fake: FakeLLM, store: Store, ada: Character, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
    runtime = provider_runtime(store)
    agent, result = turn(runtime, ada)
    assert result.status == "done", result.error
    assert result.reply_texts == ["Hello from the fake OpenAI."]
    assert fake.requests(CHAT)[0].body["model"] == "gpt-4o"
    assert all(s.body["dimensions"] == 384 for s in fake.requests(EMBED))
    rows = ledger(store, agent)
    decide = [r for r in rows if r["step"] == "decide" and r["role"] == "large"]
    assert [(r["provider"], r["model"], r["status"]) for r in decide] == [
        ("openai", "gpt-4o", "ok")
    ]
    assert decide[0]["input_tokens"] == 120 and decide[0]["cost_usd"] > 0
    assert decide[0]["turn_id"] == result.turn_id
    assert {r["provider"] for r in rows if r["role"] == "embedding"} == {"openai"}


def test_a_turn_with_anthropic_and_role_models(
    fake: FakeLLM, store: Store, ada: Character, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ak-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
    runtime = provider_runtime(store, large_model="claude-3-5-haiku-latest")
    agent, result = turn(runtime, ada)
    assert result.reply_texts == ["Hello from the fake Anthropic."]
    assert fake.requests(MESSAGES)[0].body["model"] == "claude-3-5-haiku-latest"
    assert not fake.requests(EMBED)  # Anthropic embeds offline unless told otherwise
    assert ledger(store, agent)[0]["provider"] in ("anthropic", "offline")


def test_an_openai_compatible_server_without_a_key(
    fake: FakeLLM, store: Store, ada: Character, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
    runtime = provider_runtime(store, large_model="llama3.2", embedding_model="all-minilm")
    _, result = turn(runtime, ada)
    assert result.reply_texts == ["Hello from the fake compatible server."]
    seen = fake.requests(CHAT)[0]
    assert "tools" not in seen.body and seen.body["max_tokens"] == 1024
    assert all("dimensions" not in s.body for s in fake.requests(EMBED))


def test_an_outage_falls_back_to_the_next_provider(
    fake: FakeLLM, store: Store, ada: Character, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
    fake.handlers[CHAT] = lambda seen: error(503, "down for maintenance")
    runtime = provider_runtime(store, model_fallback="offline")
    agent, result = turn(runtime, ada)
    assert result.status == "done" and result.reply_texts
    decide_rows = [
        r for r in ledger(store, agent) if r["step"] == "decide" and r["role"] == "large"
    ]
    assert [(r["provider"], r["status"]) for r in decide_rows] == [
        ("openai", "error"),
        ("offline", "ok"),
    ]
    assert "ModelUnavailable" in decide_rows[0]["error"]
    [step] = [s for s in store.turn_steps(result.turn_id) if s.step == "decide"]
    assert "503" in step.detail["fallbacks"][0]


def test_an_outage_without_fallback_fails_the_turn_with_its_reason(
    fake: FakeLLM, store: Store, ada: Character, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
    fake.handlers[CHAT] = lambda seen: error(500, "boom")
    runtime = provider_runtime(store)
    agent, result = turn(runtime, ada)
    assert result.status == "failed"
    assert result.error is not None and "decide: ModelUnavailable" in result.error
    rows = ledger(store, agent)
    assert [r["status"] for r in rows if r["step"] == "decide" and r["role"] == "large"] == [
        "error"
    ]


def test_an_auth_error_is_not_fallen_back_from(
    fake: FakeLLM, store: Store, ada: Character, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
    fake.handlers[CHAT] = lambda seen: error(401, "Incorrect API key provided")
    runtime = provider_runtime(store, model_fallback="offline")
    _, result = turn(runtime, ada)
    assert result.status == "failed"
    assert "ModelAuthError" in (result.error or "") and "check the API key" in (result.error or "")
    assert "sk-wrong" not in (result.error or "")
    assert len(fake.requests(CHAT)) == 1


def test_the_daily_budget_stops_calls_before_they_are_made(
    fake: FakeLLM, store: Store, ada: Character, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
    runtime = provider_runtime(store, daily_budget_usd=0.001)
    agent, first = turn(runtime, ada)
    assert first.status == "done"  # 120 + 30 tokens of gpt-4o: $0.0006
    calls = len(fake.requests(CHAT))
    for index in range(2):
        result = run_turn(
            runtime, {"agent_id": agent, "room": "r", "sender": "u", "text": f"more {index}"}
        )
    assert result.status == "failed" and "ModelBudgetExceeded" in (result.error or "")
    assert "daily model budget" in (result.error or "")
    assert len(fake.requests(CHAT)) == calls + 1


def test_an_embedding_model_of_another_size_is_refused_clearly(
    fake: FakeLLM, store: Store, ada: Character, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url + "/v1")
    runtime = provider_runtime(store, embedding_model="nomic-embed-text")
    with pytest.raises(EmbeddingDimensionMismatch, match=r"768.*384.*carrier reembed"):
        runtime.models_for(ada)
    # Without an embedding model named, a local server keeps the offline embedding.
    assert provider_runtime(store).models_for(ada).embedding.name.startswith("carrier-offline")


@pytest.mark.parametrize("provider", ["openai", "anthropic", "openai-compatible"])
def test_a_missing_key_for_an_explicit_provider_is_an_auth_error(
    store: Store, provider: str
) -> None:
    runtime = provider_runtime(store, model_provider=provider)
    with pytest.raises(ModelAuthError, match=r"OPENAI_BASE_URL|API_KEY|api_key"):
        runtime.models_for(Character(name="x"))


def test_usage_is_recorded_for_offline_turns_too(store: Store, ada: Character) -> None:
    runtime = provider_runtime(store, model_provider="offline")
    agent, _result = turn(runtime, ada)
    rows = ledger(store, agent)
    assert {(r["provider"], r["status"]) for r in rows} == {("offline", "ok")}
    assert json.dumps([r["cost_usd"] for r in rows]).count("0.0") == len(rows)


def test_tool_arguments_cut_short_are_passed_on_as_text_not_retried(fake: FakeLLM) -> None:
    cut = '{"thought": "t", "actions": ["REPLY"], "text": "Hello there, this answer was cu'
    body = {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "respond", "arguments": cut},
                        }
                    ],
                },
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1024, "total_tokens": 1034},
    }
    fake.queue(CHAT, Reply(body=body))
    model = oa.OpenAIChatModel(openai_client(fake, retries=0), "gpt-4o-mini")
    generation = model.generate(request())
    assert generation.text == cut
    assert generation.usage.output_tokens == 1024  # billed, so recorded


def test_a_key_a_server_quotes_back_is_cut_from_the_error(fake: FakeLLM) -> None:
    """An OpenAI-compatible proxy may answer with the headers it got: the error is logged,
    stored with the turn and shown to clients, so the key must not be in it."""
    key = "sk-proj-QUOTEDBACK1234567"
    fake.queue(CHAT, error(400, f"bad request; got header Authorization: Bearer {key}"))
    fake.queue(CHAT, error(500, f"upstream refused api_key={key}"))
    client = oa.make_client(api_key=key, base_url=fake.url + "/v1", timeout=5, max_retries=0)
    model = oa.OpenAIChatModel(client, "gpt-4o-mini")
    for kind in (ModelBadRequest, ModelUnavailable):
        with pytest.raises(kind) as failed:
            model.generate(request())
        assert key not in str(failed.value) and "[redacted]" in str(failed.value)
        # Nor in the SDK's exception, which a logged traceback would print.
        assert failed.value.__cause__ is None and failed.value.__suppress_context__
    anthropic_key = "sk-ant-api03-QUOTEDBACK7654321"
    fake.queue(MESSAGES, error(400, f"invalid x-api-key: {anthropic_key}"))
    claude = an.AnthropicModel(
        an.make_client(api_key=anthropic_key, base_url=fake.url, timeout=5, max_retries=0),
        "claude-x",
    )
    with pytest.raises(ModelBadRequest) as failed:
        claude.generate(request())
    assert anthropic_key not in str(failed.value)
