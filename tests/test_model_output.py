"""Reading decisions and reflections out of real-world model output."""

from __future__ import annotations

import pytest

from carrier_core.decision import Decision, parse_decision, render_decision
from carrier_core.model_output import UnparsableOutput, parse_structured


def test_xml_decision() -> None:
    raw = (
        "<response><thought>greet them</thought><actions>REPLY, continue</actions>"
        "<providers>facts</providers><text>Hi &amp; welcome</text></response>"
    )
    assert parse_decision(raw) == Decision(
        thought="greet them",
        actions=["REPLY", "CONTINUE"],
        providers=["facts"],
        text="Hi & welcome",
    )


def test_xml_in_a_code_fence_after_chatter() -> None:
    raw = (
        "Sure! Here you go:\n```xml\n<response>\n<actions>REPLY</actions>\n"
        "<text>Yes.</text>\n</response>\n```"
    )
    decision = parse_decision(raw)
    assert decision.actions == ["REPLY"]
    assert decision.text == "Yes."
    assert decision.thought == ""


def test_json_decision_with_list_actions() -> None:
    raw = '```json\n{"thought": "t", "actions": ["reply"], "text": "Hello"}\n```'
    assert parse_decision(raw) == Decision(thought="t", actions=["REPLY"], text="Hello")


def test_missing_closing_tag_and_missing_fields() -> None:
    decision = parse_decision("<actions>IGNORE</actions><text>unfinished")
    assert decision.actions == ["IGNORE"]
    assert decision.text == "unfinished"
    assert decision.providers == []


@pytest.mark.parametrize("raw", ["", "I think I will say hello.", "{not json", "<b>bold</b>"])
def test_output_without_structure_is_unparsable(raw: str) -> None:
    with pytest.raises(UnparsableOutput, match="decision: no JSON object or XML fields"):
        parse_decision(raw)


def test_render_then_parse_round_trips() -> None:
    decision = Decision(thought="a < b", actions=["REPLY", "NONE"], text="x & y <z>")
    assert parse_decision(render_decision(decision)) == decision


def test_json_object_is_found_after_a_broken_one() -> None:
    raw = 'first try {"facts": [ broken\nthen {"facts": [{"claim": "c"}], "relationships": []}'
    found = parse_structured(raw, ("facts",), what="reflection", prefer="json")
    assert found["facts"] == [{"claim": "c"}]


def test_json_quoted_inside_an_xml_answer_is_text() -> None:
    raw = '<response><actions>REPLY</actions><text>Set {"debug": true} in the config.</text>'
    assert parse_decision(raw).text == 'Set {"debug": true} in the config.'


def test_a_json_object_without_any_expected_field_is_not_an_answer() -> None:
    with pytest.raises(UnparsableOutput):
        parse_decision('{"debug": true}')


def test_json_nested_deeper_than_python_reads_is_unparsable_not_a_crash() -> None:
    deep = '{"actions": ["REPLY"], "text": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(UnparsableOutput):
        parse_decision(deep)
    # In an XML answer's tag it is text, as any JSON that does not decode.
    nested = "[" * 5000 + "]" * 5000
    decision = parse_decision(f"<actions>REPLY</actions><text>ok</text><facts>{nested}</facts>")
    assert decision.text == "ok"
