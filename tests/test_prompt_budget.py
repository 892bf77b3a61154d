"""The decide prompt within a token budget: cut by priority, recorded; token counting."""

from __future__ import annotations

import sys
import types
import uuid

import pytest

from carrier_core import Character, Runtime, run_turn
from carrier_core.decision import Decision, render_decision
from carrier_core.models import HashEmbedding, ModelSet, ScriptedModel, estimate_tokens
from carrier_core.models import tokens as tk
from carrier_core.plugin import Cut, load_plugins
from carrier_core.store.store import Store
from carrier_core.turn.prompt import Section, compose
from tests.conftest import make_runtime

TAIL = "# Task\nAnswer.\n\nFORMAT"


def sections(**texts: str) -> list[Section]:
    """Sections cut as bootstrap's providers of those names say (others by default)."""
    plugins = load_plugins(())
    return [
        Section(name, name.title(), text, p.cut)
        if (p := plugins.provider(name))
        else Section(name, name.title(), text, Cut())
        for name, text in texts.items()
    ]


def lines(prefix: str, n: int) -> str:
    return "\n".join(f"{prefix} {i} " + "word " * 20 for i in range(n))


def test_everything_fits_and_nothing_is_cut() -> None:
    composed = compose(sections(facts="- likes tea", recent_messages="Sam: hi"), TAIL, 10_000, "m")
    assert composed.cut == {}
    assert composed.prompt == "# Facts\n- likes tea\n\n# Recent_Messages\nSam: hi\n\n" + TAIL


def test_sections_are_cut_by_priority_never_the_task_or_the_actions() -> None:
    parts = sections(
        character=lines("bio", 2),
        facts=lines("fact", 3),
        knowledge=lines("know", 4),
        recall=lines("old", 4),
        weather=lines("plugin", 2),
        recent_messages=lines("msg", 6),
        actions="- REPLY: say something",
    )
    full = compose(parts, TAIL, 100_000, "m")
    recall_cost = tk.count_tokens("m", "# Recall\n") + 2
    recall_cost += sum(tk.count_tokens("m", line) + 1 for line in lines("old", 4).splitlines())
    composed = compose(parts, TAIL, full.tokens - recall_cost - 1, "m")
    assert composed.cut["recall"] == "all" and composed.cut["knowledge"] == 1
    assert "old 0" not in composed.prompt and "know 0" in composed.prompt
    assert "know 3" not in composed.prompt  # the least relevant knowledge went first
    assert composed.tokens <= composed.budget

    tiny = compose(parts, TAIL, 50, "m")
    assert tiny.cut["recall"] == tiny.cut["knowledge"] == tiny.cut["weather"] == "all"
    assert tiny.cut["facts"] == "all" and tiny.cut["character"] == "all"
    assert tiny.cut["recent_messages"] == 5  # the oldest went; the latest message stays
    assert "msg 5" in tiny.prompt and "msg 4" not in tiny.prompt
    assert "- REPLY: say something" in tiny.prompt and tiny.prompt.endswith(TAIL)
    assert "actions" not in tiny.cut


def test_a_decide_step_records_what_was_cut(store: Store, ada: Character) -> None:
    scripted = ScriptedModel()
    runtime: Runtime = make_runtime(
        store,
        ModelSet(small=scripted, large=scripted, embedding=HashEmbedding()),
        context_tokens=300,
    )
    agent: uuid.UUID = runtime.register_agent(ada)
    reply = render_decision(Decision(thought="t", actions=["REPLY"], text="ok"))
    scripted.add(reply)
    result = run_turn(runtime, {"agent_id": agent, "room": "r", "sender": "u", "text": "Hi?"})
    assert result.reply_texts == ["ok"]
    [decide] = [s for s in store.turn_steps(result.turn_id) if s.step == "decide"]
    assert decide.detail["prompt_cut"] and "actions" not in decide.detail["prompt_cut"]
    assert decide.detail["prompt_budget"] < 300
    prompt = scripted.requests[0].prompt
    assert "# Task" in prompt and "u: Hi?" in prompt


def test_tokens_are_estimated_when_tiktoken_cannot_load_its_encoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def offline(*args: object) -> object:
        raise ConnectionError("no network")

    fake = types.SimpleNamespace(encoding_for_model=offline, get_encoding=offline)
    monkeypatch.setitem(sys.modules, "tiktoken", fake)
    tk._tiktoken_counter.cache_clear()
    try:
        text = "hello world, " * 10
        assert tk.count_tokens("gpt-4o", text) == estimate_tokens(text) * 5 // 4 + 1
    finally:
        tk._tiktoken_counter.cache_clear()


def test_tiktoken_counts_openai_models_when_its_encoding_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoding = types.SimpleNamespace(encode=lambda text, disallowed_special: text.split())
    fake = types.SimpleNamespace(
        encoding_for_model=lambda model: encoding, get_encoding=lambda name: encoding
    )
    monkeypatch.setitem(sys.modules, "tiktoken", fake)
    tk._tiktoken_counter.cache_clear()
    try:
        assert tk.count_tokens("gpt-4o-mini", "one two three") == 3
        # Other providers' models are always estimated.
        assert tk.count_tokens("claude-3-5-haiku", "one two three") == 4
    finally:
        tk._tiktoken_counter.cache_clear()


def test_context_windows_and_prices_match_by_prefix() -> None:
    """As the model providers declare them: bootstrap's (OpenAI, Anthropic) always, a
    plugin's once it is loaded (Bedrock's, found by its `bedrock:` prefix)."""
    from carrier_core.models.prices import estimate_cost
    from carrier_core.models.select import split_spec

    assert split_spec("bedrock:meta.llama3-1-8b-instruct-v1:0")[0] == "bedrock"
    assert tk.context_window("meta.llama3-1-8b-instruct-v1:0") == 128_000
    assert estimate_cost("meta.llama3-1-8b-instruct-v1:0", 10**6, 10**6) == pytest.approx(0.44)
    assert tk.context_window("gpt-4o-mini-2024-07-18") == 128_000
    assert tk.context_window("claude-3-5-haiku-latest") == 200_000
    assert tk.context_window("something-local") == tk.DEFAULT_CONTEXT_WINDOW
    assert estimate_cost("gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)
    assert estimate_cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
    assert estimate_cost("llama3.2", 10**6, 10**6) == 0
