"""Plugins: discovery by entry point and path, failing actions, failing and slow providers."""

from __future__ import annotations

import sys
import textwrap
import types
import uuid
from pathlib import Path

import pytest

from carrier_core import Character, Runtime, run_turn
from carrier_core.decision import Decision, render_decision
from carrier_core.models import ScriptedModel
from carrier_core.plugin import Cut, Plugin, PluginError, load_plugins
from carrier_core.turn.act import FAILED_ACTION_REPLY


def xml(*actions: str, text: str = "") -> str:
    return render_decision(Decision(actions=list(actions), text=text))


def _agent(runtime: Runtime, plugins: list[str]) -> uuid.UUID:
    return runtime.register_agent(Character(name=f"Plug-{uuid.uuid4().hex[:6]}", plugins=plugins))


def _say(runtime: Runtime, agent: uuid.UUID, text: str, **extra: str):  # type: ignore[no-untyped-def]
    return run_turn(runtime, {"agent_id": agent, "room": "r", "sender": "u", "text": text, **extra})


def test_bootstrap_gives_the_core_actions_providers_and_reflection() -> None:
    plugins = load_plugins(())
    assert {
        "REPLY",
        "IGNORE",
        "NONE",
        "CONTINUE",
        "UPDATE_ROLE",
        "UPDATE_ENTITY",
        "FOLLOW_ROOM",
        "UNFOLLOW_ROOM",
        "MUTE_ROOM",
        "UNMUTE_ROOM",
        "SEND_MESSAGE",
        "UPDATE_SETTINGS",
        "CHOOSE_OPTION",
    } <= set(plugins.actions)
    assert [p.name for p in plugins.providers] == [
        "character",
        "time",
        "entities",
        "settings",
        "facts",
        "relationships",
        "knowledge",
        "recall",
        "recent_messages",
        "attachments",
        "choice",
        "action_state",
        "dynamic_providers",
        "actions",
    ]
    silent = {a.name for a in plugins.actions.values() if a.silent}
    assert silent == {"IGNORE", "NONE", "CONTINUE"}
    assert [e.name for e in plugins.evaluators] == ["reflection"]
    assert plugins.action("respond") is plugins.actions["REPLY"]


def test_unknown_plugin_names_are_skipped_with_a_reason() -> None:
    plugins = load_plugins(("@elizaos/plugin-solana", "no.such.module:plugin"))
    assert [p.name for p in plugins.plugins] == ["bootstrap"]
    reasons = dict(plugins.skipped)
    assert "no plugin named '@elizaos/plugin-solana'" in reasons["@elizaos/plugin-solana"]
    assert "No module named 'no'" in reasons["no.such.module:plugin"]


def test_an_unknown_model_provider_is_named() -> None:
    with pytest.raises(
        PluginError, match="no model provider named 'gpt9'; known: anthropic, offline, openai"
    ):
        load_plugins(()).model_set("gpt9", Character(name="x"))


def test_plugins_are_found_through_the_entry_point_group(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scripted_runtime: Runtime,
    scripted: ScriptedModel,
) -> None:
    (tmp_path / "weather_plugin.py").write_text(
        textwrap.dedent("""
        from carrier_core.plugin import Plugin, Provider, ProviderResult

        def forecast(ctx):
            return ProviderResult("Sunny, 21 degrees.", {"forecast": "sunny"})

        plugin = Plugin(name="weather", providers=[Provider("weather", "Forecast.", forecast,
                                                           "Weather", 25)])
    """)
    )
    dist = tmp_path / "weather_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: weather-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[carrier.plugins]\nweather = weather_plugin:plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    agent = _agent(scripted_runtime, ["weather"])
    scripted.add(xml("REPLY", text="Take sunglasses."))
    result = _say(scripted_runtime, agent, "what's the weather?")
    assert result.reply_texts == ["Take sunglasses."]
    assert "# Weather\nSunny, 21 degrees." in scripted.requests[0].prompt
    assert scripted_runtime.store.turn(result.turn_id).state["forecast"] == "sunny"


def test_a_plugin_action_runs_by_simile_and_its_data_is_recorded(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = _agent(scripted_runtime, ["tests.sample_plugin:plugin"])
    scripted.add(xml("YELL", text="hello"))
    result = _say(scripted_runtime, agent, "say hi loudly")
    assert result.reply_texts == ["hello", "HELLO"]  # REPLY goes first for the text
    steps = {s.step: s for s in scripted_runtime.store.turn_steps(result.turn_id)}
    assert steps["act:SHOUT"].detail["data"] == {"shouted": True}


def test_the_next_decide_step_sees_what_the_actions_did(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    """Multi-step: SHOUT returns data and CONTINUE asks for another step, whose prompt shows
    the results of the first step's actions (the action_state provider). The first step
    shows none; actions show their examples."""
    scripted_runtime.settings.max_steps = 2
    agent = _agent(scripted_runtime, ["tests.sample_plugin:plugin"])
    scripted.add(xml("SHOUT", "CONTINUE", text="hello"), xml("REPLY", text="Done shouting."))
    result = _say(scripted_runtime, agent, "say hi loudly, then tell me")
    assert result.reply_texts == ["hello", "HELLO", "Done shouting."]
    first, second = (r.prompt for r in scripted.requests if r.task == "decide")
    assert "Results of your actions so far" not in first
    assert (
        "- SHOUT: Say it loudly.\n  e.g. someone: say hi loudly / " in first
        and ": HI! (SHOUT)" in first
    )
    assert '- SHOUT (ok): said 1 message(s); data: {"shouted": true}' in second
    assert "- REPLY (ok): said 1 message(s)" in second


def test_a_failing_action_is_recorded_and_the_user_hears_of_it(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = _agent(scripted_runtime, ["tests.sample_plugin:plugin"])
    scripted.add(xml("EXPLODE"))
    result = _say(scripted_runtime, agent, "launch!")
    assert result.status == "done"
    assert result.reply_texts == [FAILED_ACTION_REPLY.format(action="EXPLODE")]
    steps = {s.step: s for s in scripted_runtime.store.turn_steps(result.turn_id)}
    assert steps["act:EXPLODE"].status == "error"
    assert steps["act:EXPLODE"].detail["error"] == "RuntimeError: the rocket exploded on the pad"
    assert scripted_runtime.store.memory(result.message_id).content.text == "launch!"


def test_failing_and_slow_providers_are_left_out_and_named(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    scripted_runtime.settings.provider_timeout_s = 0.3
    agent = _agent(scripted_runtime, ["tests.sample_plugin:plugin"])
    scripted.add(xml("REPLY", text="still here"))
    result = _say(scripted_runtime, agent, "hello")
    assert result.reply_texts == ["still here"]
    decide = next(
        s for s in scripted_runtime.store.turn_steps(result.turn_id) if s.step == "decide"
    )
    assert decide.detail["provider_errors"] == {
        "broken": "ConnectionError: weather service unreachable",
        "slow": "timed out after 0.3s",
    }
    assert "far too late" not in scripted.requests[0].prompt
    assert "Conversation" in scripted.requests[0].prompt


def test_a_plugin_that_fails_on_import_is_skipped_and_named() -> None:
    plugins = load_plugins(("tests.broken_plugin:plugin",))
    assert dict(plugins.skipped)["tests.broken_plugin:plugin"] == (
        "RuntimeError: plugin needs a library that is not installed"
    )


def test_a_hanging_provider_never_starves_later_turns(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    scripted_runtime.settings.provider_timeout_s = 0.2
    agent = _agent(scripted_runtime, ["tests.sample_plugin:hanging"])
    for n in range(10):
        scripted.add(xml("REPLY", text=f"reply {n}"))
        result = _say(scripted_runtime, agent, f"message {n}")
        assert result.reply_texts == [f"reply {n}"]
    prompt = [r for r in scripted.requests if r.task == "decide"][-1].prompt
    assert "# About you" in prompt and "# Conversation" in prompt and "message 9" in prompt
    decide = next(
        s for s in scripted_runtime.store.turn_steps(result.turn_id) if s.step == "decide"
    )
    assert decide.detail["provider_errors"] == {"hang": "timed out after 0.2s"}


def test_wrong_return_types_from_plugins_are_named_and_the_turn_goes_on(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = _agent(scripted_runtime, ["tests.sample_plugin:careless"])
    scripted.add(xml("REPLY", "STRINGY", "VOID", "TOUCHY", text="hello"))
    result = _say(scripted_runtime, agent, "hi")
    assert result.status == "done", result.error
    assert result.reply_texts == [
        "hello",
        FAILED_ACTION_REPLY.format(action="STRINGY"),
        FAILED_ACTION_REPLY.format(action="VOID"),
        FAILED_ACTION_REPLY.format(action="TOUCHY"),
    ]
    steps = {s.step: s for s in scripted_runtime.store.turn_steps(result.turn_id)}
    assert steps["decide"].detail["provider_errors"] == {
        "none": "returned NoneType, not a ProviderResult",
        "junk": "returned a ProviderResult with text of type int and values of type list:"
        " text must be a str, values a dict",
    }
    # An action whose validate raises is not offered, and fails its step if picked anyway;
    # the other actions are offered as ever.
    prompt = scripted.requests[0].prompt
    assert "- STRINGY:" in prompt and "- REPLY:" in prompt and "TOUCHY" not in prompt
    assert steps["act:TOUCHY"].detail["error"] == "validate: RuntimeError: validate blew up"
    assert steps["act:STRINGY"].detail["error"] == (
        "TypeError: handler's replies must be a list of strings"
    )
    assert steps["act:VOID"].detail["error"] == (
        "TypeError: handler returned NoneType, not an ActionResult"
    )
    assert steps["evaluate:void"].detail["error"] == (
        "TypeError: handler returned NoneType, not a dict"
    )
    state = scripted_runtime.store.turn(result.turn_id).state
    assert state["nested"] == {"a": 1}
    assert state["ids"] == [str(result.turn_id)]
    assert isinstance(state["when"], str)


def test_extension_metadata_in_the_wrong_shape_is_named() -> None:
    """A plugin still giving `models` as a {name: factory} mapping is skipped with the
    shape it needs; a cut policy that cannot be applied fails where it is written."""
    old_style = Plugin(name="old", models={"old": lambda character: None})  # type: ignore[arg-type]
    sys.modules["tests.old_style_plugin"] = types.SimpleNamespace(plugin=old_style)  # type: ignore[assignment]
    try:
        plugins = load_plugins(("tests.old_style_plugin:plugin",))
    finally:
        del sys.modules["tests.old_style_plugin"]
    assert dict(plugins.skipped)["tests.old_style_plugin:plugin"] == (
        "plugin 'old': models must be ModelProvider(name, build, ...), not str"
    )
    with pytest.raises(
        ValueError, match=r"Cut\.end must be 'tail', 'head' or 'whole', not 'middle'"
    ):
        Cut(end="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Cut\.keep_lines must be 0 or more, not -1"):
        Cut(keep_lines=-1)
