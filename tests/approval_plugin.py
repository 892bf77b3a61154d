"""A plugin for the approval tests: an action that needs a person's yes, and a model set
whose decide model picks it for any message that asks to "send" something."""

from __future__ import annotations

from carrier_core.decision import Decision, render_decision
from carrier_core.models import Generation, HashEmbedding, ModelRequest, ModelSet, OfflineModel
from carrier_core.models.base import Usage
from carrier_core.plugin import Action, ActionResult, ModelProvider, Plugin
from carrier_core.turn.context import TurnContext

#: What the action did, in order: the test's process runs the handlers, under the emulator too.
SENT: list[str] = []


def _send_funds(ctx: TurnContext, decision: Decision) -> ActionResult:
    SENT.append(ctx.message.content.text)
    return ActionResult(
        replies=["The money is on its way."],
        text="Sent the money.",
        values={"sent": True},
    )


class SendingModel:
    """Decides SEND_FUNDS when asked to send; otherwise answers as the offline model."""

    name = "sending"

    def __init__(self) -> None:
        self._offline = OfflineModel()

    def generate(self, request: ModelRequest) -> Generation:
        if request.task == "decide" and "send" in request.hints.get("message", "").lower():
            decision = Decision(thought="a transfer", actions=["SEND_FUNDS"], text="")
            return Generation(render_decision(decision), Usage(10, 10), self.name)
        return self._offline.generate(request)


def _models(character: object) -> ModelSet:
    return ModelSet(small=OfflineModel(), large=SendingModel(), embedding=HashEmbedding())


plugin = Plugin(
    name="approval",
    actions=[
        Action(
            "SEND_FUNDS",
            "Send money to someone.",
            _send_funds,
            needs_approval=True,
        )
    ],
    models=[ModelProvider("sending", _models)],
)
