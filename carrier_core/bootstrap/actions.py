"""The bootstrap actions: speak, stay silent, do nothing more, or keep going."""

from __future__ import annotations

from carrier_core.decision import Decision
from carrier_core.models import ModelRequest, ModelRole
from carrier_core.plugin import Action, ActionResult
from carrier_core.turn.context import TurnContext


def _reply(ctx: TurnContext, decision: Decision) -> ActionResult:
    """Say the decided text; if the decision carried none, ask the model for it."""
    if decision.text.strip():
        return ActionResult(replies=[decision.text.strip()])
    conversation = str(ctx.state.values.get("conversation", ""))
    generation = ctx.generate(
        ModelRequest(
            role=ModelRole.LARGE,
            task="reply",
            system=ctx.character.system or f"You are {ctx.agent_name}.",
            prompt=(
                f"{conversation}\n\nWrite {ctx.agent_name}'s next message to {ctx.sender}."
                " Answer with the message text only."
            ),
            hints={"message": ctx.message.content.text, "sender": ctx.sender},
        )
    )
    return ActionResult(replies=[generation.text.strip()])


def _nothing(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult()


def _continue(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(continue_turn=True)


def _steps_left(ctx: TurnContext) -> bool:
    return ctx.turn.steps_taken < ctx.runtime.settings.max_steps


ACTIONS = [
    Action(
        "REPLY",
        "Answer with the text you wrote. Pick this whenever you should say something.",
        _reply,
        similes=("RESPOND", "RESPONSE", "GREET", "ANSWER"),
    ),
    Action(
        "IGNORE",
        "Say nothing: the message is not for you, or the conversation is over.",
        _nothing,
        similes=("STOP", "STOP_TALKING", "NO_RESPONSE"),
    ),
    Action("NONE", "Take no action beyond what you say.", _nothing, similes=("NO_ACTION",)),
    Action(
        "CONTINUE",
        "You have more to say or do after this: think again after this step.",
        _continue,
        validate=_steps_left,
        similes=("FOLLOW_UP", "ELABORATE", "KEEP_GOING"),
    ),
]
