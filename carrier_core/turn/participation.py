"""Room participation: whether the agent follows a room, has muted it, or takes part as usual,
and the rules that answer a message without a model call where the answer is certain.

The state is the agent's own per room (`rooms.metadata.participation`), set by the
FOLLOW_ROOM, UNFOLLOW_ROOM, MUTE_ROOM and UNMUTE_ROOM actions:

- muted: a message that does not name the agent is left unanswered, with no model call;
- followed (a group room): every message is answered, as in a direct conversation;
- otherwise, in a group room, a message addressed to others (it @mentions someone, never the
  agent) is left unanswered with no model call; any other goes to the one decide call,
  which may choose IGNORE.
"""

from __future__ import annotations

import re
from enum import StrEnum

from carrier_core.world import Room, RoomKind

#: Where the state is kept in the room's metadata.
KEY = "participation"

_MENTION = re.compile(r"(?<![\w@])@([\w.-]+)")


class Participation(StrEnum):
    FOLLOWED = "followed"
    MUTED = "muted"


def participation(room: Room) -> Participation | None:
    value = room.metadata.get(KEY)
    return Participation(value) if value in set(Participation) else None


def names_agent(text: str, names: set[str]) -> bool:
    """Whether the text names the agent: one of its names as a word, or an @mention of it."""
    lowered = text.lower()
    for name in filter(None, (n.strip().lower() for n in names)):
        if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", lowered):
            return True
    return False


def unanswered_by_rule(room: Room, text: str, names: set[str]) -> str | None:
    """Why this message is left unanswered without asking the model, or None to decide."""
    state = participation(room)
    if names_agent(text, names):
        return None
    if state is Participation.MUTED:
        return "the room is muted and the message does not name the agent"
    if room.kind is RoomKind.GROUP and state is None and _MENTION.search(text):
        return "in a group room, the message is addressed to someone else"
    return None


def always_answers(room: Room) -> bool:
    """A direct conversation, or a group room the agent follows: the agent answers."""
    return room.kind is RoomKind.DM or participation(room) is Participation.FOLLOWED
