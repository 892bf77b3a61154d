"""Room participation end to end with the scripted model: FOLLOW_ROOM, UNFOLLOW_ROOM,
MUTE_ROOM and UNMUTE_ROOM persist the agent's state in the room, and the loop answers
without a model call where the rules make the answer certain. The scripted model raises
when called with nothing scripted, so a call that should not happen fails the test."""

from __future__ import annotations

import uuid

import pytest

from carrier_core import Character, Runtime
from carrier_core.models.scripted import ScriptedModel
from carrier_core.turn.decide import MAX_ACTIONS
from carrier_core.turn.participation import names_agent, unanswered_by_rule
from carrier_core.turn.run import run_turn
from carrier_core.world import Room, RoomKind
from tests.test_turn import message, xml


@pytest.fixture
def agent(scripted_runtime: Runtime, ada: Character) -> uuid.UUID:
    return scripted_runtime.register_agent(ada)


def group(agent: uuid.UUID, text: str) -> dict[str, object]:
    return message(agent, text, room_kind="group")


def state(runtime: Runtime, turn_id: uuid.UUID) -> object:
    room = runtime.store.room(runtime.store.turn(turn_id).room_id)
    return room.metadata.get("participation")


def test_a_muted_room_makes_no_model_call_until_the_agent_is_named(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("MUTE_ROOM"))
    muted = run_turn(scripted_runtime, group(agent, "Ada, please stay out of this"))
    assert state(scripted_runtime, muted.turn_id) == "muted"
    assert len(scripted.requests) == 1

    quiet = run_turn(scripted_runtime, group(agent, "so, lunch at noon?"))
    assert (quiet.status, quiet.replies) == ("done", [])
    assert len(scripted.requests) == 1  # no model call in a muted room
    [decide] = [s for s in scripted_runtime.store.turn_steps(quiet.turn_id) if s.step == "decide"]
    assert decide.model_calls == 0 and "muted" in decide.detail["unanswered"]
    # The message is still remembered, and embedded after the turn.
    assert scripted_runtime.store.unembedded(agent, 10) == []

    scripted.add(xml("UNMUTE_ROOM", text="I'm back."))
    back = run_turn(scripted_runtime, group(agent, "ada, you can talk again"))
    assert [r.content.text for r in back.replies] == ["I'm back."]
    assert state(scripted_runtime, back.turn_id) is None


def test_a_followed_group_room_is_always_answered(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("IGNORE"))
    assert run_turn(scripted_runtime, group(agent, "lunch?")).replies == []

    scripted.add(xml("FOLLOW_ROOM", text="Happy to join in."))
    followed = run_turn(scripted_runtime, group(agent, "Ada, join us here"))
    assert state(scripted_runtime, followed.turn_id) == "followed"

    scripted.add(xml("IGNORE"), "Noon works for me.")  # IGNORE is overruled; REPLY asks
    answered = run_turn(scripted_runtime, group(agent, "lunch?"))
    assert [r.content.text for r in answered.replies] == ["Noon works for me."]
    # Even a message for someone else is answered in a followed room.
    scripted.add(xml("REPLY", text="Count me in."))
    assert run_turn(scripted_runtime, group(agent, "@bo are you in?")).replies

    scripted.add(xml("UNFOLLOW_ROOM"))
    unfollowed = run_turn(scripted_runtime, group(agent, "Ada, you can stop now"))
    assert state(scripted_runtime, unfollowed.turn_id) is None


def test_in_a_group_a_message_for_someone_else_makes_no_model_call(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    elsewhere = run_turn(scripted_runtime, group(agent, "@bo did you book the table?"))
    assert (elsewhere.status, elsewhere.replies, scripted.requests) == ("done", [], [])

    scripted.add(xml("REPLY", text="Yes, at noon."))
    asked = run_turn(scripted_runtime, group(agent, "@ada did you book the table?"))
    assert [r.content.text for r in asked.replies] == ["Yes, at noon."]
    # No mention at all: the one decide call chooses (here, to stay silent).
    scripted.add(xml("IGNORE"))
    assert run_turn(scripted_runtime, group(agent, "what a day")).replies == []
    assert [r.task for r in scripted.requests if r.task != "reflect"] == ["decide", "decide"]


def test_an_action_that_does_not_fit_the_rooms_state_is_not_run(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    """UNMUTE_ROOM in a room that is not muted, FOLLOW_ROOM in a direct conversation:
    their validation refuses them, and nothing changes."""
    scripted.add(xml("UNMUTE_ROOM", text="Sure."))
    done = run_turn(scripted_runtime, group(agent, "Ada, unmute yourself"))
    assert state(scripted_runtime, done.turn_id) is None
    scripted.add(xml("FOLLOW_ROOM", text="Okay."))
    direct = run_turn(scripted_runtime, message(agent, "follow this chat"))
    assert state(scripted_runtime, direct.turn_id) is None


def test_the_rules() -> None:
    names = {"Ada", "", "ada-lovelace"}
    assert names_agent("hey ADA!", names) and names_agent("@ada-lovelace hi", names)
    assert not names_agent("Adam is here", names) and not names_agent("canada", names)
    room = Room(id=uuid.uuid4(), agent_id=uuid.uuid4(), name="r", kind=RoomKind.GROUP)
    assert unanswered_by_rule(room, "@bo hi", names) is not None
    assert unanswered_by_rule(room, "@bo and @ada hi", names) is None
    assert unanswered_by_rule(room, "mail me at bo@example.com", names) is None
    dm = room.model_copy(update={"kind": RoomKind.DM})
    assert unanswered_by_rule(dm, "@bo hi", names) is None


def test_action_names_are_matched_whatever_their_case_and_punctuation(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("mute-room"))
    muted = run_turn(scripted_runtime, group(agent, "Ada, shh"))
    assert state(scripted_runtime, muted.turn_id) == "muted"
    scripted.add(xml("Unmute Room", text="Hello again."))
    back = run_turn(scripted_runtime, group(agent, "Ada, speak"))
    assert state(scripted_runtime, back.turn_id) is None
    decision = scripted_runtime.store.turn(back.turn_id).decision
    assert decision is not None and decision["actions"] == ["REPLY", "UNMUTE_ROOM"]


def test_a_decision_runs_at_most_max_actions_of_what_it_names(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    names = [f"NO_SUCH_{n}" for n in range(5000)]
    scripted.add(xml("REPLY", *names, text="Hi."))
    result = run_turn(scripted_runtime, message(agent, "hello"))
    assert (result.status, result.reply_texts) == ("done", ["Hi."])
    decision = scripted_runtime.store.turn(result.turn_id).decision
    assert decision is not None and decision["actions"] == ["REPLY", *names[: MAX_ACTIONS - 1]]
    acts = [s for s in scripted_runtime.store.turn_steps(result.turn_id) if s.step != "decide"]
    assert len([s for s in acts if s.step.startswith("act:")]) == MAX_ACTIONS
