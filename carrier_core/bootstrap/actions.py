"""The bootstrap actions: speak, stay silent, do nothing more, keep going, and follow,
unfollow, mute or unmute the room (`carrier_core.turn.participation`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from carrier_core.models import ModelRequest, ModelRole
from carrier_core.plugin import Action, ActionResult
from carrier_core.turn.participation import KEY, Participation, participation
from carrier_core.world import RoomKind

if TYPE_CHECKING:
    from carrier_core.decision import Decision
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


def _participate(state: Participation | None) -> Callable[[TurnContext, Decision], ActionResult]:
    def handler(ctx: TurnContext, decision: Decision) -> ActionResult:
        ctx.runtime.store.set_room_metadata(ctx.room.id, KEY, state and state.value)
        return ActionResult()

    return handler


def _is(*states: Participation | None, group: bool = False) -> Callable[[TurnContext], bool]:
    """Valid only when the room's state is one of these (and, for `group`, in a group)."""

    def valid(ctx: TurnContext) -> bool:
        in_kind = not group or ctx.room.kind is RoomKind.GROUP
        return in_kind and participation(ctx.room) in states

    return valid


ACTIONS = [
    Action(
        "REPLY",
        "Answer with the text you wrote. Pick this whenever you should say something.",
        _reply,
        similes=("RESPOND", "RESPONSE", "GREET", "ANSWER"),
        simple=True,
    ),
    Action(
        "IGNORE",
        "Say nothing: the message is not for you, or the conversation is over.",
        _nothing,
        similes=("STOP", "STOP_TALKING", "NO_RESPONSE"),
        silent=True,
    ),
    Action(
        "NONE", "Take no action beyond what you say.", _nothing, similes=("NO_ACTION",), silent=True
    ),
    Action(
        "CONTINUE",
        "You have more to say or do after this: think again after this step.",
        _continue,
        validate=_steps_left,
        similes=("FOLLOW_UP", "ELABORATE", "KEEP_GOING"),
        silent=True,
    ),
    Action(
        "FOLLOW_ROOM",
        "Take part in this group room from now on: answer every message in it.",
        _participate(Participation.FOLLOWED),
        validate=_is(None, Participation.MUTED, group=True),
        similes=("FOLLOW_CHANNEL", "JOIN_CONVERSATION", "PARTICIPATE"),
    ),
    Action(
        "UNFOLLOW_ROOM",
        "Stop answering every message here: answer only what concerns you.",
        _participate(None),
        validate=_is(Participation.FOLLOWED),
        similes=("UNFOLLOW_CHANNEL", "LEAVE_CONVERSATION"),
    ),
    Action(
        "MUTE_ROOM",
        "Go quiet in this room: answer only when someone names you.",
        _participate(Participation.MUTED),
        validate=_is(None, Participation.FOLLOWED),
        similes=("MUTE_CHANNEL", "SILENCE_ROOM", "BE_QUIET"),
    ),
    Action(
        "UNMUTE_ROOM",
        "Take part in this room again after it was muted.",
        _participate(None),
        validate=_is(Participation.MUTED),
        similes=("UNMUTE_CHANNEL", "UNSILENCE_ROOM"),
    ),
]
