"""Inline reflection (`reflection: inline`): the decide call also says what to remember.

By default the reflection evaluator makes a model call of its own, after the reply, every
`reflection_interval` messages from others. With this setting the decide prompt of the
turn where reflection is due asks, in the same call that answers, for the facts,
relationships and names those messages tell (the shapes the evaluator's prompt asks
for), and the evaluator stores what the decision carries, with the same code, after the
reply: every turn is then one text call, and storing (which embeds each fact) costs the
reply no time. Nothing is stored by the decide step itself, so a retried decide step has
nothing to repeat.

Only a turn's first decide step is asked: a later step (CONTINUE, dynamic providers)
keeps what the first one answered rather than pay for the same answer again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carrier_core.turn.context import TurnContext

#: The answer's extra tags in the decide prompt's XML form.
FORMAT = """<facts>a JSON list: [{"claim": "a short sentence naming the person", "about": "person's name"}]</facts>
<relationships>a JSON list: [{"source": "name", "target": "name", "tags": ["friend", ...]}]</relationships>
<names>a JSON list: [{"about": "name as shown in the conversation", "name": "name they asked for"}]</names>"""  # noqa: E501


@dataclass(frozen=True)
class InlineAsk:
    """This decide step asks what to remember of the messages not yet reflected on."""

    #: How many messages from others that is; the turn's message is the latest.
    count: int
    #: Those messages, one `speaker: text` a line (a hint for the offline model).
    conversation: str

    def task(self, agent: str) -> str:
        """The instruction added to the decide prompt's task."""
        which = "latest message" if self.count == 1 else f"latest {self.count} messages"
        return (
            f"Also note what is worth remembering from the {which} by people other than "
            f"{agent}: facts that are stated, lasting, about a person in the conversation and "
            "not already among the known facts; how people relate; and who said what they "
            'are called ("my name is ...", "call me ..."). Write [] where there is nothing.'
        )


def inline_ask(ctx: TurnContext, step: int) -> InlineAsk | None:
    """What decide step `step` asks to remember, or None: reflection is not inline, this is
    not the turn's first step, or fewer than `reflection_interval` messages from others
    (up to the turn's own) wait to be reflected on."""
    settings, store = ctx.runtime.settings, ctx.runtime.store
    if settings.reflection != "inline" or step != 1:
        return None
    count, _ = store.messages_since_reflection(ctx.room.id, through_seq=ctx.message.seq)
    if count < settings.reflection_interval:
        return None
    recent = ctx.recent_messages()
    theirs = [m for m in recent if m.memory.entity_id != ctx.message.agent_id][-count:]
    conversation = "\n".join(f"{m.speaker}: {m.memory.content.text}" for m in theirs)
    return InlineAsk(count, conversation)
