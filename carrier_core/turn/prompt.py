"""The decide prompt: provider sections, then the task and the answer format."""

from __future__ import annotations

from carrier_core.models import ModelRequest, ModelRole
from carrier_core.turn.context import TurnContext
from carrier_core.world import RoomKind

_FORMAT = """Answer in this XML form and nothing else:
<response>
<thought>your private reasoning, one or two sentences</thought>
<actions>comma-separated action names, in the order to run them</actions>
<providers>names of extra context you need, if any</providers>
<text>what you say, if you say anything</text>
</response>"""


def decide_request(ctx: TurnContext) -> ModelRequest:
    titles = {p.name: p.title or p.name for p in ctx.plugins.providers}
    sections = [f"# {titles[name]}\n{text}" for name, text in ctx.state.texts.items()]
    if ctx.room.kind is RoomKind.GROUP:
        task = (
            f"Several people talk here. Decide whether {ctx.agent_name} should answer "
            f"{ctx.sender}'s latest message. If it is not for {ctx.agent_name}, or adds nothing, "
            "choose IGNORE and write no text. Otherwise choose REPLY and write the answer."
        )
    else:
        task = (
            f"Write {ctx.agent_name}'s answer to {ctx.sender}'s latest message and choose REPLY, "
            "adding other actions if they help."
        )
    prompt = "\n\n".join([*sections, f"# Task\n{task}", _FORMAT])
    return ModelRequest(
        role=ModelRole.LARGE,
        task="decide",
        system=ctx.character.system or f"You are {ctx.agent_name}. Stay in character.",
        prompt=prompt,
        hints={
            "message": ctx.message.content.text,
            "sender": ctx.sender,
            "agent": ctx.agent_name,
            "room_kind": ctx.room.kind.value,
            "facts": ctx.state.texts.get("facts", ""),
            "knowledge": ctx.state.texts.get("knowledge", ""),
        },
    )
