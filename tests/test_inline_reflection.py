"""Inline reflection (`reflection: inline`) against the separate reflection call.

The fixture is a group conversation of twelve messages between Sam, Alice and Ada that
tells facts (where people live and work, what they like, a pet), one relationship, a fact
said twice and a fact about someone not in the room. Both modes are scripted as a
competent model would answer: the reflection call, when due, with what the messages
since the last one told; the inline decide answer of the same turn with the same. What
this shows is that the plumbing (asking, reading, filing under people, dedupe, the
bookmark, the model calls) gives the same memory either way. It cannot show whether a
real model extracts as well while also answering: that needs a real model.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from carrier_core import Character, Runtime, run_turn
from carrier_core.decision import Decision, render_decision
from carrier_core.models import HashEmbedding, ModelSet, ScriptedModel, offline_models
from carrier_core.store.store import Store
from carrier_core.turn.decide import decide
from carrier_core.turn.evaluate import evaluate
from tests.conftest import make_runtime

Learned = dict[str, list[dict[str, Any]]]

#: (speaker, message, what a competent model notes of it).
CONVERSATION: list[tuple[str, str, Learned]] = [
    ("Sam", "Hi Ada! I live in Lyon.", {"facts": [{"claim": "Sam lives in Lyon", "about": "Sam"}]}),
    (
        "Alice",
        "Hello Ada, I work at a bakery.",
        {"facts": [{"claim": "Alice works at a bakery", "about": "Alice"}]},
    ),
    (
        "Sam",
        "Alice is my sister, by the way.",
        {"relationships": [{"source": "Sam", "target": "Alice", "tags": ["sibling"]}]},
    ),
    ("Alice", "What do you think of sourdough, Ada?", {}),
    (
        "Sam",
        "I really like sailing on weekends.",
        {"facts": [{"claim": "Sam likes sailing", "about": "Sam"}]},
    ),
    (
        "Alice",
        "I have a cat named Miso.",
        {"facts": [{"claim": "Alice has a cat named Miso", "about": "Alice"}]},
    ),
    ("Sam", "Ada, any tips for a first regatta?", {}),
    (
        "Alice",
        "Sam and I grew up in Lyon together.",
        {"facts": [{"claim": "Alice grew up in Lyon", "about": "Alice"}]},
    ),
    # Said again: a model that notes it again must not make a second fact.
    (
        "Sam",
        "As I said, I live in Lyon.",
        {"facts": [{"claim": "Sam lives in Lyon", "about": "Sam"}]},
    ),
    # About someone not in the room: filed under nobody, in both modes.
    (
        "Alice",
        "My friend Bob plays chess.",
        {"facts": [{"claim": "Bob plays chess", "about": "Bob"}]},
    ),
    (
        "Sam",
        "I work at the harbour office.",
        {"facts": [{"claim": "Sam works at the harbour office", "about": "Sam"}]},
    ),
    ("Alice", "Thanks Ada, see you next week!", {}),
]

#: What both modes should end up knowing.
EXPECTED_FACTS = {
    ("Sam", "Sam lives in Lyon"),
    ("Alice", "Alice works at a bakery"),
    ("Sam", "Sam likes sailing"),
    ("Alice", "Alice has a cat named Miso"),
    ("Alice", "Alice grew up in Lyon"),
    ("Sam", "Sam works at the harbour office"),
}
EXPECTED_RELATIONSHIPS = {("Sam", "Alice", ("sibling",))}


def answer(*actions: str, text: str = "", reflection: Learned | None = None) -> str:
    return render_decision(
        Decision(thought="t", actions=list(actions), text=text, reflection=reflection)
    )


def said(agent: uuid.UUID, speaker: str, text: str) -> dict[str, Any]:
    return {
        "agent_id": agent,
        "room": "book-club",
        "room_kind": "group",
        "sender": speaker.lower(),
        "sender_name": speaker,
        "text": text,
    }


def noted(since: int, through: int) -> Learned:
    """What messages since..through (0-based, inclusive) told, as one answer."""
    merged: Learned = {"facts": [], "relationships": [], "names": []}
    for _, _, learned in CONVERSATION[since : through + 1]:
        for field, items in learned.items():
            merged[field].extend(items)
    return merged


def script(mode: str, interval: int) -> list[str]:
    """The model's answers over the conversation, in the order the turns ask for them."""
    answers: list[str] = []
    since = 0
    for index, (_, text, _) in enumerate(CONVERSATION):
        due = index + 1 - since >= interval
        reply = ("REPLY",) if "Ada" in text else ("IGNORE",)
        learned = noted(since, index) if due else None
        if mode == "inline":
            answers.append(answer(*reply, text="Noted.", reflection=learned))
        else:
            answers.append(answer(*reply, text="Noted."))
            if learned is not None:
                answers.append(json.dumps({"thought": "-", **learned}))
        if due:
            since = index + 1
    return answers


def runtime_for(store: Store, scripted: ScriptedModel, **settings: Any) -> Runtime:
    models = ModelSet(small=scripted, large=scripted, embedding=HashEmbedding())
    return make_runtime(store, models, **settings)


def memory_of(runtime: Runtime, agent: uuid.UUID, room_id: uuid.UUID) -> tuple[set[Any], set[Any]]:
    """The facts (whom about, claim) and relationships (source, target, tags) stored."""
    store = runtime.store
    people = {e.id: e.name for e in store.participants(room_id)}
    facts = {
        (people[fact.entity_id], fact.content.text)
        for entity in people
        for fact in store.facts_about(agent, entity)
    }
    relationships = {
        (people[r.source_entity_id], people[r.target_entity_id], tuple(r.tags))
        for r in store.relationships(agent)
    }
    return facts, relationships


@pytest.mark.parametrize("interval", [1, 3])
def test_inline_and_evaluator_store_the_same_facts_and_inline_makes_one_call_a_turn(
    store: Store, ada: Character, interval: int
) -> None:
    outcome = {}
    for mode in ("evaluator", "inline"):
        scripted = ScriptedModel(script(mode, interval))
        runtime = runtime_for(store, scripted, reflection=mode, reflection_interval=interval)
        agent = runtime.register_agent(ada, handle=f"ada-{mode}")
        calls = []
        for speaker, text, _ in CONVERSATION:
            result = run_turn(runtime, said(agent, speaker, text))
            assert result.status == "done", result.error
            calls.append(sum(s.model_calls for s in store.turn_steps(result.turn_id)))
        assert not scripted.script, "every scripted answer was asked for"
        room_id = store.turn(result.turn_id).room_id
        outcome[mode] = (calls, memory_of(runtime, agent, room_id))
    due = [(i + 1) % interval == 0 for i in range(len(CONVERSATION))]
    assert outcome["evaluator"][0] == [2 if d else 1 for d in due]
    assert outcome["inline"][0] == [1] * len(CONVERSATION)
    assert (
        outcome["inline"][1]
        == outcome["evaluator"][1]
        == (
            EXPECTED_FACTS,
            EXPECTED_RELATIONSHIPS,
        )
    )


def test_the_decide_prompt_asks_only_when_reflection_is_due(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    runtime = runtime_for(store, scripted, reflection="inline")
    agent = runtime.register_agent(ada)
    scripted.add(*script("inline", 3)[:3])
    turns = [run_turn(runtime, said(agent, s, t)) for s, t, _ in CONVERSATION[:3]]
    asked = ["<facts>" in r.prompt for r in scripted.requests]
    assert asked == [False, False, True]
    assert "from the latest 3 messages by people other than Ada" in scripted.requests[2].prompt
    [decided] = [s for s in store.turn_steps(turns[2].turn_id) if s.step == "decide"]
    assert decided.detail["reflection_asked"] == 3
    # The first two turns had nothing to store: the evaluator did not run for them.
    assert "evaluate:reflection" not in {s.step for s in store.turn_steps(turns[0].turn_id)}
    [reflected] = [s for s in store.turn_steps(turns[2].turn_id) if s.step.startswith("evaluate")]
    assert (reflected.step, reflected.model_calls) == ("evaluate:reflection", 0)
    assert reflected.detail["result"] == {
        "inline": True,
        "facts_found": 2,
        "facts_stored": 2,
        "relationships": 1,
    }


def test_a_retried_decide_or_evaluate_stores_nothing_twice(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    runtime = runtime_for(store, scripted, reflection="inline", reflection_interval=1)
    agent = runtime.register_agent(ada)
    lyon = {"facts": [{"claim": "Sam lives in Lyon", "about": "Sam"}]}
    scripted.add(answer("REPLY", text="Lyon is lovely.", reflection=lyon))
    result = run_turn(runtime, said(agent, "Sam", "Ada, I live in Lyon."))
    sam = store.turn_scene(result.turn_id).message.entity_id
    again = decide(runtime, result.turn_id, 1)
    assert again.decision.reflection == lyon
    evaluate(runtime, result.turn_id)
    assert len(scripted.requests) == 1  # the retries asked the model nothing
    assert [f.content.text for f in store.facts_about(agent, sam)] == ["Sam lives in Lyon"]
    reflected = [s for s in store.turn_steps(result.turn_id) if s.step == "evaluate:reflection"]
    assert [s.detail["result"]["facts_stored"] for s in reflected] == [1, 0]


def test_a_near_duplicate_fact_is_not_stored_again(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    runtime = runtime_for(store, scripted, reflection="inline", reflection_interval=1)
    agent = runtime.register_agent(ada)
    scripted.add(
        answer("REPLY", text="ok", reflection={"facts": [{"claim": "Sam likes tea"}]}),
        answer("REPLY", text="ok", reflection={"facts": [{"claim": "sam likes TEA"}]}),
    )
    first = run_turn(runtime, said(agent, "Sam", "Ada, I like tea."))
    run_turn(runtime, said(agent, "Sam", "Ada, did I say I like tea?"))
    sam = store.turn_scene(first.turn_id).message.entity_id
    assert [f.content.text for f in store.facts_about(agent, sam)] == ["Sam likes tea"]


def test_malformed_facts_are_recorded_and_the_turn_still_answers(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    runtime = runtime_for(store, scripted, reflection="inline", reflection_interval=1)
    agent = runtime.register_agent(ada)
    scripted.add(
        "<response><actions>REPLY</actions><text>Hello!</text>"
        "<facts>Sam lives in Lyon</facts><relationships>[]</relationships></response>"
    )
    result = run_turn(runtime, said(agent, "Sam", "Ada, I live in Lyon."))
    assert (result.status, result.reply_texts) == ("done", ["Hello!"])
    [reflected] = [s for s in store.turn_steps(result.turn_id) if s.step == "evaluate:reflection"]
    assert reflected.status == "error"
    assert reflected.detail["error"].startswith(
        "ReflectionError: reflection: 'facts' is not a JSON list: Expecting value"
    )
    # The messages count as read: the next turn is asked about its own message only.
    scripted.add(answer("REPLY", text="ok", reflection={}))
    run_turn(runtime, said(agent, "Sam", "Ada, hello again."))
    assert "from the latest message by" in scripted.requests[-1].prompt


def test_a_silent_turn_still_learns(store: Store, scripted: ScriptedModel, ada: Character) -> None:
    runtime = runtime_for(store, scripted, reflection="inline", reflection_interval=1)
    agent = runtime.register_agent(ada)
    scripted.add(answer("IGNORE", reflection={"facts": [{"claim": "Sam owns a boat"}]}))
    result = run_turn(runtime, said(agent, "Sam", "I just bought a boat."))
    assert result.replies == []
    sam = store.turn_scene(result.turn_id).message.entity_id
    assert [f.content.text for f in store.facts_about(agent, sam)] == ["Sam owns a boat"]


def test_a_later_decide_step_keeps_what_the_first_one_noted(
    store: Store, scripted: ScriptedModel, ada: Character
) -> None:
    runtime = runtime_for(store, scripted, reflection="inline", reflection_interval=1, max_steps=2)
    agent = runtime.register_agent(ada)
    noted_first = {"facts": [{"claim": "Sam likes stories"}]}
    scripted.add(
        answer("REPLY", "CONTINUE", text="Once upon a time", reflection=noted_first),
        answer("REPLY", text="The end."),
    )
    result = run_turn(runtime, said(agent, "Sam", "Ada, I like stories: tell me one."))
    assert ["<facts>" in r.prompt for r in scripted.requests] == [True, False]
    sam = store.turn_scene(result.turn_id).message.entity_id
    assert [f.content.text for f in store.facts_about(agent, sam)] == ["Sam likes stories"]


def test_the_offline_model_answers_inline_in_the_one_call(store: Store, ada: Character) -> None:
    runtime = make_runtime(store, offline_models(), reflection="inline", reflection_interval=1)
    agent = runtime.register_agent(ada)
    result = run_turn(runtime, said(agent, "Sam", "Ada, I live in Lyon."))
    assert result.status == "done" and result.reply_texts
    sam = store.turn_scene(result.turn_id).message.entity_id
    assert [f.content.text for f in store.facts_about(agent, sam)] == ["Sam lives in Lyon"]
    calls = [s.model_calls for s in store.turn_steps(result.turn_id)]
    assert sum(calls) == 1


def test_an_unknown_reflection_mode_is_refused_naming_the_setting() -> None:
    from pydantic import ValidationError

    from carrier_core import Settings

    with pytest.raises(ValidationError, match=r"reflection\n.*'evaluator' or 'inline'"):
        Settings(reflection="sometimes")  # type: ignore[arg-type]
