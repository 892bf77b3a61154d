"""A character's `templates` replace the prompts of the steps they name, and the offline
model answers as the character."""

from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path

import pytest

from carrier_core import Character, Runtime, run_turn
from carrier_core.character import load_character
from carrier_core.models import HashEmbedding, ModelSet, ScriptedModel
from carrier_core.store.store import Store
from tests.conftest import ROOT, make_runtime
from tests.test_turn import message, xml

HANDLER = """MARKER-ZEBRA-7 You are {{agentName}}, talking with {{senderName}}.
{{bio}}
{{providers}}
Actions: {{actionNames}}
{{ notAPlaceholderWeKnow }}
Answer in XML: <response><thought/><actions/><text/></response>"""

SHOULD_RESPOND = """Should {{agentName}} answer {{senderName}}?
{{recentMessages}}
<response><name>{{agentName}}</name><reasoning>...</reasoning>
<action>RESPOND | IGNORE | STOP</action></response>"""

REFLECTION = """REFLECT-MARKER for {{agentName}}
{{recentMessages}}
Known: {{knownFacts}}
People: {{entitiesInRoom}}
Answer in JSON."""


def with_templates(character: Character, **templates: str) -> Character:
    return character.model_copy(update={"templates": templates})


def steps(store: Store, turn_id: uuid.UUID) -> dict[str, dict[str, object]]:
    return {s.step: s.detail for s in store.turn_steps(turn_id)}


def test_the_message_handler_template_is_the_decide_prompt(
    scripted_runtime: Runtime,
    scripted: ScriptedModel,
    ada: Character,
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = scripted_runtime.register_agent(with_templates(ada, messageHandlerTemplate=HANDLER))
    # Only decide answers are scripted: reflection is not due yet (reflection_interval).
    scripted.add(xml("REPLY", text="Hello from the template."))
    with caplog.at_level(logging.WARNING, logger="carrier_core.turn.templates"):
        result = run_turn(scripted_runtime, message(agent, "I sail on weekends"))
        scripted.add(xml("REPLY", text="Again."))
        run_turn(scripted_runtime, message(agent, "And you?"))
    assert result.reply_texts == ["Hello from the template."]
    prompt = scripted.requests[0].prompt
    assert prompt.startswith("MARKER-ZEBRA-7 You are Ada, talking with Sam.")
    assert ada.bio[0] in prompt
    # The providers' sections go where {{providers}} is: the conversation among them.
    assert "# Conversation" in prompt and "I sail on weekends" in prompt
    assert "Actions: REPLY" in prompt
    # Carrier's own task and answer format are replaced, not added.
    assert "# Task" not in prompt
    decide = steps(scripted_runtime.store, result.turn_id)["decide"]
    assert decide["template"] == "messageHandlerTemplate"
    assert decide["template_unknown"] == ["notAPlaceholderWeKnow"]
    # Reported in the log once per process, not once per turn.
    reported = [r for r in caplog.records if "notAPlaceholderWeKnow" in r.getMessage()]
    assert len(reported) == 1 and "messageHandlerTemplate" in reported[0].getMessage()


def test_should_respond_template_decides_in_a_group_before_the_large_model(
    scripted_runtime: Runtime, scripted: ScriptedModel, ada: Character
) -> None:
    agent = scripted_runtime.register_agent(
        with_templates(ada, shouldRespondTemplate=SHOULD_RESPOND)
    )
    scripted.add(
        "<response><name>Ada</name><reasoning>Not for me.</reasoning>"
        "<action>IGNORE</action></response>"
    )
    quiet = run_turn(scripted_runtime, message(agent, "lunch?", room_kind="group"))
    assert quiet.reply_texts == []
    tasks = [r.task for r in scripted.requests]
    assert tasks[0] == "should_respond" and "decide" not in tasks
    assert scripted.requests[0].prompt.startswith("Should Ada answer Sam?")
    assert steps(scripted_runtime.store, quiet.turn_id)["decide"]["should_respond"] == "IGNORE"

    scripted.requests.clear()
    scripted.add(
        "<response><action>RESPOND</action></response>",
        xml("REPLY", text="Sure, Ada is in."),
    )
    answered = run_turn(scripted_runtime, message(agent, "Ada, lunch?", room_kind="group"))
    assert answered.reply_texts == ["Sure, Ada is in."]
    assert [r.task for r in scripted.requests][:2] == ["should_respond", "decide"]


def test_the_reflection_template_is_the_reflection_prompt_and_its_answer_is_read(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    models = ModelSet(small=scripted, large=scripted, embedding=HashEmbedding())
    scripted_runtime = make_runtime(store, models, reflection_interval=1)
    agent = scripted_runtime.register_agent(with_templates(ada, reflectionTemplate=REFLECTION))

    def reflect(request: object) -> str:
        # ElizaOS's template's answer: known facts flagged, people named by entity id.
        found = re.search(r"Sam \(([0-9a-f-]{36})\)", str(getattr(request, "prompt", "")))
        assert found is not None
        sam = found.group(1)
        return json.dumps(
            {
                "thought": "t",
                "facts": [
                    {"claim": "Sam sails on weekends", "type": "fact", "already_known": False},
                    {"claim": "Ada likes people", "type": "fact", "in_bio": True},
                ],
                "relationships": [
                    {"sourceEntityId": sam, "targetEntityId": str(agent), "tags": ["friend"]}
                ],
            }
        )

    scripted.add(xml("REPLY", text="Lovely."), reflect)
    result = run_turn(scripted_runtime, message(agent, "I sail on weekends"))
    reflect_request = scripted.requests[-1]
    assert reflect_request.task == "reflect"
    assert reflect_request.prompt.startswith("REFLECT-MARKER for Ada")
    assert "Sam: I sail on weekends" in reflect_request.prompt
    detail = steps(scripted_runtime.store, result.turn_id)["evaluate:reflection"]
    result_detail = detail["result"]
    assert isinstance(result_detail, dict)
    assert result_detail["facts_found"] == 1  # the bio's own fact is not stored
    assert result_detail["relationships"] == 1
    assert result_detail["template"] == "reflectionTemplate"


def eliza_characters() -> list[Path]:
    folder = ROOT.parent / "shared" / "elizaos-characters"
    return sorted(folder.glob("*.json"))


@pytest.mark.parametrize("path", eliza_characters(), ids=lambda p: p.name)
def test_offline_each_character_says_who_it_is(store: Store, path: Path) -> None:
    runtime = make_runtime(store)
    character = load_character(path)
    agent = runtime.register_agent(character)
    result = run_turn(runtime, message(agent, "Hi, who are you?"))
    [reply] = result.reply_texts
    assert reply.startswith(f"I'm {character.name}.")
    if character.bio:
        assert character.bio[0].strip() in reply


def test_offline_a_message_like_an_example_gets_the_example_s_answer(
    store: Store, ada: Character
) -> None:
    runtime = make_runtime(store)
    agent = runtime.register_agent(ada)
    # Ada's examples: "I had a long day." -> "That sounds tiring. What made it so long?"
    result = run_turn(runtime, message(agent, "I had such a long day at work"))
    assert result.reply_texts == ["That sounds tiring. What made it so long?"]
    # Nothing like an example: ELIZA as before.
    other = run_turn(runtime, message(agent, "My name is Grace", room="elsewhere"))
    assert other.reply_texts == ["Nice to meet you, Grace. What would you like to talk about?"]


def test_two_characters_answer_the_same_greeting_differently(store: Store) -> None:
    runtime = make_runtime(store)
    replies = set()
    for name in ("ada.json", "marvin.json"):
        character = load_character(ROOT / "characters" / name)
        agent = runtime.register_agent(character)
        replies.add(tuple(run_turn(runtime, message(agent, "Who are you?")).reply_texts))
    assert len(replies) == 2
