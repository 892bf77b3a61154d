"""Multi-step with results: each action's result (`text`, `values`, `data`, or `error`) is
kept in the turn's history; a later action of the same step reads it
(`ctx.action_results()`), and the next decide step's prompt shows it (ACTION_STATE)."""

from __future__ import annotations

from carrier_core import Character, Runtime
from carrier_core.decision import Decision
from carrier_core.models.scripted import ScriptedModel
from carrier_core.plugin import Action, ActionResult, Plugin
from carrier_core.turn.context import TurnContext
from carrier_core.turn.run import run_turn
from tests.test_turn import message, xml


def _find(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(text="Found 3 flights to Oslo.", values={"flights": 3}, data={"ids": [7]})


def _book(ctx: TurnContext, decision: Decision) -> ActionResult:
    [found] = [r for r in ctx.action_results() if r["action"] == "FIND_FLIGHTS"]
    return ActionResult(replies=[f"Booking the first of {found['values']['flights']}."])


def _fail(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(replies=["No seats left."], error="sold out")


plugin = Plugin(
    name="travel",
    actions=[
        Action("FIND_FLIGHTS", "Look flights up.", _find),
        Action("BOOK_FLIGHT", "Book the flight found.", _book),
        Action("CHECK_SEATS", "Check seats.", _fail),
    ],
)


def test_later_actions_and_the_next_decide_step_see_what_earlier_actions_did(
    scripted_runtime: Runtime, scripted: ScriptedModel
) -> None:
    agent = scripted_runtime.register_agent(
        Character(name="Ada", plugins=["tests.test_action_results:plugin"])
    )
    scripted.add(
        xml("FIND_FLIGHTS", "BOOK_FLIGHT", "CHECK_SEATS", "CONTINUE"),
        xml("REPLY", text="All done."),
    )
    result = run_turn(scripted_runtime, message(agent, "get me to Oslo"))

    assert result.reply_texts == ["Booking the first of 3.", "No seats left.", "All done."]
    second_prompt = scripted.requests[1].prompt
    assert '- FIND_FLIGHTS (ok); Found 3 flights to Oslo.; values: {"flights": 3}' in second_prompt
    assert "- CHECK_SEATS (error): said 1 message(s); sold out" in second_prompt
    steps = {s.step: s for s in scripted_runtime.store.turn_steps(result.turn_id)}
    assert steps["act:FIND_FLIGHTS"].detail["data"] == {"ids": [7]}
    assert (steps["act:CHECK_SEATS"].status, steps["act:CHECK_SEATS"].detail["error"]) == (
        "error",
        "sold out",
    )
