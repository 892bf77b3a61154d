"""SEND_MESSAGE: the agent says something in another of its rooms, or to someone it knows.

As ElizaOS's SEND_MESSAGE, the target is a room (`targetType: room`) or a person
(`targetType: user`), read from the message by the small model. A person is reached in
their direct room with the agent, if they have one: the agent never opens a conversation
nobody started. Only the agent's own rooms are searched, so a message can reach neither
another agent's rooms nor another tenant's (and `act` refuses any room that is not the
agent's, whatever an action asks). In an end user's room, only that end user's rooms are
(`carrier_core.world.end_user_scope`): the model is not shown where others talk, and
`act` refuses their rooms too. The message goes the way a reply goes: stored as the
agent's message in the target room with this turn's id, pushed to that room's
connections and delivered to the webhooks covering it; the turn's own room hears a short
confirmation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carrier_core.bootstrap.roles import ask
from carrier_core.plugin import Action, ActionResult, OutgoingMessage
from carrier_core.store.agents import SeveralPeople
from carrier_core.world import Room, RoomKind, end_user_scope

if TYPE_CHECKING:
    from carrier_core.decision import Decision
    from carrier_core.turn.context import TurnContext

#: How many rooms and people the model is shown as reachable (the most recently active).
SHOWN = 20


def _reachable(ctx: TurnContext) -> str:
    """The rooms and people the model may name, most recently active first."""
    within = end_user_scope(ctx.room.name)
    rooms, people = ctx.runtime.store.reachable(
        ctx.turn.agent_id, ctx.room.source, SHOWN, within=within
    )
    rooms = [name.removeprefix(within) for name in rooms]  # as the end user names them
    return (
        f"Rooms you can post in: {', '.join(rooms) or 'none'}.\n"
        f"People you can message directly: {', '.join(people) or 'none'}."
    )


def _target(ctx: TurnContext, target: str, kind: str) -> tuple[Room, str] | None:
    """Where a message for `target` goes, and how to name it: a person's direct room (by
    their name, "@" or not, or id) or a room (by its key, "#ops" and "ops" alike), looked
    up in the order `kind` says. In an end user's room, among their own rooms only, named
    by the keys they gave them (or by the stored key, which the prompt's room section
    shows)."""
    store, agent_id, source = ctx.runtime.store, ctx.turn.agent_id, ctx.room.source
    within = end_user_scope(ctx.room.name)
    several: SeveralPeople | None = None
    try:
        person = store.direct_room(agent_id, target.lstrip("@"), source, within)
    except SeveralPeople as exc:
        if kind == "user":
            raise
        person, several = None, exc  # a room of that name settles it
    room = (
        None
        if person is not None and kind == "user"
        else store.room_named(
            agent_id, within + target.lstrip("#").removeprefix(within), source, within
        )
    )
    if room is not None:
        return room, room.name.removeprefix(within)
    if several is not None:
        raise several
    if person is not None:
        return person, target.lstrip("@")
    return None


def _send_message(ctx: TurnContext, decision: Decision) -> ActionResult:
    wanted = ask(
        ctx,
        "send_message",
        _reachable(ctx),
        'Answer with JSON {"messages": [{"target": "room or person", "targetType": "room|user",'
        ' "text": "the message to send"}]} for each message the sender asks you to send'
        " elsewhere.",
        "messages",
    )
    found = [
        (str(m.get("target", "")).strip(), str(m.get("targetType", "")), str(m.get("text", "")))
        for m in wanted
    ]
    found = [(target, kind, text.strip()) for target, kind, text in found if text.strip()]
    if not found:
        return ActionResult(replies=["Where should I send what, exactly?"])
    here, sent, unreachable, unclear = [], [], [], []
    for target, kind, text in found:
        try:
            reached = _target(ctx, target, kind) if target else None
        except SeveralPeople:
            unclear.append(target)
            continue
        if reached is None:
            unreachable.append(target or "(no target)")
        elif reached[0].id == ctx.room.id:
            here.append(text)  # sending here is just saying it
        else:
            sent.append((*reached, text))
    if unreachable or unclear:
        told, problems = [], []
        if unreachable:
            names = ", ".join(unreachable)
            told.append(f"I can't reach {names} from here.")
            problems.append(f"no room or person the agent can reach: {names}")
        if unclear:
            several = ", ".join(unclear)
            told.append(f"More than one person is called {several}: who do you mean?")
            problems.append(f"more than one person is called {several}")
        return ActionResult(
            replies=told if ctx.room.kind is RoomKind.DM else [],
            error="; ".join(problems),
            data={"unreachable": unreachable, "ambiguous": unclear},
        )
    return ActionResult(
        replies=[*here, *(f"Sent to {name}." for _, name, _ in sent)],
        sent=[OutgoingMessage(room.id, text) for room, _, text in sent],
        data={"sent_to": [{"room": room.name, "room_id": str(room.id)} for room, _, _ in sent]},
    )


MESSAGING_ACTIONS = [
    Action(
        "SEND_MESSAGE",
        "Send a message to another room, or to someone you know in your direct conversation"
        " with them, when asked to pass something on.",
        _send_message,
        similes=("SEND_DM", "DIRECT_MESSAGE", "POST_MESSAGE", "MESSAGE_ROOM", "NOTIFY"),
        examples=(
            ("Tell the ops room the deploy is done", "Sent to ops."),
            ("Let Grace know I'll be late", "Sent to Grace."),
        ),
    ),
]
