"""Dynamic and private providers: the model names them in `<providers>`, they run, and the
turn decides again with them, within `max_steps` (issue 13)."""

from __future__ import annotations

import uuid

from carrier_core import Character, Runtime, run_turn
from carrier_core.decision import Decision, render_decision
from carrier_core.models import ScriptedModel
from carrier_core.turn.decide import ASKED_PROVIDERS, decide
from carrier_core.turn.ingest import ingest
from tests.sample_plugin import FORECAST

PLUGIN = "tests.sample_plugin:forecaster"


def xml(*actions: str, text: str = "", providers: tuple[str, ...] = ()) -> str:
    return render_decision(Decision(actions=list(actions), text=text, providers=list(providers)))


def _agent(runtime: Runtime) -> uuid.UUID:
    name = f"Forecaster-{uuid.uuid4().hex[:6]}"
    return runtime.register_agent(Character(name=name, plugins=[PLUGIN]))


def _message(agent: uuid.UUID, text: str) -> dict[str, object]:
    return {"agent_id": agent, "room": "r", "sender": "u", "text": text}


def _decide_prompts(scripted: ScriptedModel) -> list[str]:
    return [r.prompt for r in scripted.requests if r.task == "decide"]


def test_a_named_dynamic_provider_runs_and_the_turn_decides_again_with_it(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = _agent(scripted_runtime)
    scripted.add(
        xml("REPLY", text="Let me look.", providers=("WEATHER_NOW",)),
        xml("REPLY", text="Take an umbrella."),
    )
    result = run_turn(scripted_runtime, _message(agent, "do I need an umbrella?"))

    assert result.status == "done", result.error
    # The first step's text was written without the forecast: it is not said.
    assert result.reply_texts == ["Take an umbrella."]
    first, second = _decide_prompts(scripted)
    # The model is told what it may ask for; the private provider is never listed.
    assert "# Extra context you can ask for\n- weather_now: The weather where" in first
    assert "diary" not in first.lower()
    assert FORECAST not in first
    assert f"# Weather now\n{FORECAST}" in second
    steps = scripted_runtime.store.turn_steps(result.turn_id)
    assert [s.step for s in steps if s.step != "ingest"][:3] == ["decide", "decide", "act:REPLY"]
    asked = next(s for s in steps if s.step == "decide")
    assert asked.detail["providers_asked"] == ["weather_now"]
    assert asked.detail["decides_again"] is True
    assert sum(s.model_calls for s in steps if s.step == "decide") == 2
    state = scripted_runtime.store.turn(result.turn_id).state
    assert state["forecast"] == "rain"
    assert state[ASKED_PROVIDERS] == {"next": ["weather_now"], "again": False}


def test_the_last_step_allowed_never_asks_again_and_its_decision_stands(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    scripted_runtime.settings.max_steps = 1
    agent = _agent(scripted_runtime)
    scripted.add(xml("REPLY", text="Probably not.", providers=("weather_now",)))
    result = run_turn(scripted_runtime, _message(agent, "do I need an umbrella?"))

    assert result.reply_texts == ["Probably not."]
    assert len(_decide_prompts(scripted)) == 1
    [decided] = [s for s in scripted_runtime.store.turn_steps(result.turn_id) if s.step == "decide"]
    assert decided.detail["providers_asked"] == ["weather_now"]
    assert decided.detail["decides_again"] is False


def test_unknown_and_default_provider_names_are_recorded_not_run_again(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = _agent(scripted_runtime)
    scripted.add(xml("REPLY", text="No idea.", providers=("horoscope", "recent_messages")))
    result = run_turn(scripted_runtime, _message(agent, "what do the stars say?"))

    assert result.status == "done" and result.reply_texts == ["No idea."]
    assert len(_decide_prompts(scripted)) == 1
    [decided] = [s for s in scripted_runtime.store.turn_steps(result.turn_id) if s.step == "decide"]
    assert decided.detail["unknown_providers"] == ["horoscope"]
    assert "providers_asked" not in decided.detail


def test_a_private_provider_runs_only_when_named(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = _agent(scripted_runtime)
    scripted.add(xml("REPLY", text="Checking.", providers=("diary",)), xml("REPLY", text="4 pm."))
    result = run_turn(scripted_runtime, _message(agent, "when is my appointment?"))

    assert result.reply_texts == ["4 pm."]
    first, second = _decide_prompts(scripted)
    assert "dentist" not in first and "# Diary\nThe owner's dentist" in second


def test_a_decide_step_run_again_gives_its_stored_answer_without_a_model_call(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    """A retried invocation (another Lambda) of a step that asked for providers still says
    the turn decides again, and the next step composes them from the stored state."""
    agent = _agent(scripted_runtime)
    turn_id = ingest(scripted_runtime, _message(agent, "umbrella?")).turn_id
    scripted.add(xml("REPLY", text="Let me look.", providers=("weather_now",)))
    first = decide(scripted_runtime, turn_id, 1)
    again = decide(scripted_runtime, turn_id, 1)
    assert first.again and again.again and first.to_run == again.to_run == []
    assert len(scripted.requests) == 1

    scripted.add(xml("REPLY", text="Yes."))
    second = decide(scripted_runtime, turn_id, 2)
    # Its REPLY with a text is a simple reply, said by this step itself.
    assert not second.again and second.chosen == ["REPLY"] and second.acted is not None
    assert f"# Weather now\n{FORECAST}" in scripted.requests[-1].prompt
