"""The offline model and embeddings: deterministic, structured, good enough to recall."""

from __future__ import annotations

import json
import math

from carrier_core.decision import parse_decision
from carrier_core.models import HashEmbedding, ModelRequest, ModelRole, OfflineModel


def _decide(message: str, **hints: str) -> str:
    request = ModelRequest(
        ModelRole.LARGE,
        "decide",
        "sys",
        "prompt",
        {"message": message, "sender": "Sam", "agent": "Ada", **hints},
    )
    return OfflineModel().generate(request).text


def test_decisions_are_valid_and_deterministic() -> None:
    first = _decide("I feel tired today")
    assert first == _decide("I feel tired today")
    decision = parse_decision(first)
    assert decision.actions == ["REPLY"]
    assert decision.text == "Why do you say you are tired today?"


def test_names_and_likes_are_answered_and_recalled_from_facts() -> None:
    assert "Nice to meet you, Grace" in parse_decision(_decide("Hi, my name is Grace")).text
    recalled = parse_decision(
        _decide("What do you remember about me?", facts="- Sam's name is Grace\n- Sam likes tea")
    )
    assert recalled.text == "Here is what I remember: Sam's name is Grace; Sam likes tea."
    assert "don't know much" in parse_decision(_decide("Do you remember me?")).text


def test_group_rooms_are_ignored_unless_the_agent_is_named() -> None:
    assert parse_decision(_decide("lunch anyone?", room_kind="group")).actions == ["IGNORE"]
    assert parse_decision(_decide("Ada, lunch?", room_kind="group")).actions == ["REPLY"]


def test_reflection_extracts_facts_about_speakers_only() -> None:
    conversation = (
        "Sam: my name is Grace and I like sailing\nAda: I like robots\nBo: I live in Oslo"
    )
    raw = (
        OfflineModel()
        .generate(
            ModelRequest(
                ModelRole.SMALL, "reflect", "", "", {"conversation": conversation, "agent": "Ada"}
            )
        )
        .text
    )
    result = json.loads(raw)
    assert result["facts"] == [
        {"claim": "Sam's name is Grace", "about": "Sam"},
        {"claim": "Sam likes sailing", "about": "Sam"},
        {"claim": "Bo lives in Oslo", "about": "Bo"},
    ]
    assert {r["source"] for r in result["relationships"]} == {"Sam", "Bo"}


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_hash_embeddings_are_unit_length_and_related_texts_are_closer() -> None:
    model = HashEmbedding()
    question, fact, other, empty = model.embed(
        ["what is my name?", "Sam's name is Grace", "the weather in Oslo is cold", "the a of"]
    ).vectors
    for vector in (question, fact, other, empty):
        assert len(vector) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-9)
    assert _cosine(question, fact) > _cosine(question, other) + 0.2
    assert model.embed(["same"]).vectors == model.embed(["same"]).vectors
