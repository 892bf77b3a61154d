"""Who may do what in a world, and what the agent notes about people: UPDATE_ROLE and
UPDATE_ENTITY.

A world's metadata says who owns it and each member's role (ElizaOS's shape:
`ownership.ownerId`, `roles: {entity id: OWNER | ADMIN | NONE}`); whoever speaks first in a
world owns it. Roles change only as ElizaOS allows: nobody changes their own role, an
owner may give anyone any role, an admin may make others admins or take the role away
from non-owners, and everyone else may change nothing. The model only reads the request
("make Grace an admin"); the rules are checked here, so a persuasive message cannot
grant what its sender may not.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from carrier_core.model_output import UnparsableOutput, parse_structured
from carrier_core.models import ModelRequest, ModelRole
from carrier_core.plugin import Action, ActionResult

if TYPE_CHECKING:
    from carrier_core.decision import Decision
    from carrier_core.turn.context import TurnContext

ROLES = ("OWNER", "ADMIN", "NONE")


def can_modify_role(actor: str, target: str, new: str, *, self_change: bool) -> bool:
    """ElizaOS's rule for changing a role: by `actor`, of someone whose role is `target`."""
    if self_change:
        return False
    if actor == "OWNER":
        return True
    if actor == "ADMIN":
        return target != "OWNER" and new != "OWNER"
    return False


def _in_world(ctx: TurnContext) -> bool:
    return ctx.room.world_id is not None


def _people(ctx: TurnContext) -> dict[str, uuid.UUID]:
    """The room's members by name and by id (the model may name them either way)."""
    people: dict[str, uuid.UUID] = {}
    for entity in ctx.runtime.store.participants(ctx.room.id):
        people[entity.name.lower()] = entity.id
        people[str(entity.id)] = entity.id
    return people


def ask(
    ctx: TurnContext, task: str, known: str, instruction: str, field: str
) -> list[dict[str, Any]]:
    """What the message asks for, as a list of objects under `field`, read by the small
    model; `known` is what it may name (people, rooms, settings). An answer that is not
    such a list is nothing asked: the caller says it did not understand."""
    generation = ctx.generate(
        ModelRequest(
            role=ModelRole.SMALL,
            task=task,
            system=f"You help {ctx.agent_name} do what people ask.",
            prompt=(f"{known}\n{ctx.sender} wrote: {ctx.message.content.text}\n\n{instruction}"),
            hints={"message": ctx.message.content.text, "sender": ctx.sender},
        )
    )
    try:
        found = parse_structured(generation.text, (field,), what=task, prefer="json")[field]
    except UnparsableOutput:
        return []
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def world_role(ctx: TurnContext) -> str:
    """The sender's role in the room's world: OWNER, ADMIN or NONE (outside a world too)."""
    if ctx.room.world_id is None:
        return "NONE"
    roles = ctx.runtime.store.world(ctx.room.world_id).metadata.get("roles") or {}
    return str(roles.get(str(ctx.message.entity_id), "NONE"))


def _people_here(ctx: TurnContext) -> str:
    return f"People here: {', '.join(e.name for e in ctx.runtime.store.participants(ctx.room.id))}."


def _update_role(ctx: TurnContext, decision: Decision) -> ActionResult:
    assert ctx.room.world_id is not None  # validated
    store = ctx.runtime.store
    world = store.world(ctx.room.world_id)
    roles: dict[str, str] = dict(world.metadata.get("roles") or {})
    actor = roles.get(str(ctx.message.entity_id), "NONE")
    people = _people(ctx)
    wanted = ask(
        ctx,
        "update_role",
        _people_here(ctx),
        'Answer with JSON {"assignments": [{"entity": "name", "role": "OWNER|ADMIN|NONE"}]}'
        " listing the role changes asked for.",
        "assignments",
    )
    said, changed = [], []
    for item in wanted:
        who, role = str(item.get("entity", "")), str(item.get("role", "")).upper()
        target = people.get(who.lower()) or people.get(who)
        if target is None or role not in ROLES:
            said.append(f"I don't know who {who or 'that'} is here, or what role {role} means.")
            continue
        current = roles.get(str(target), "NONE")
        if not can_modify_role(actor, current, role, self_change=target == ctx.message.entity_id):
            said.append(f"You may not change {who}'s role.")
            continue
        store.set_world_role(world.id, target, role)
        roles[str(target)] = role
        changed.append({"entity": str(target), "role": role})
        said.append(f"{who} is now {role}.")
    if not wanted:
        said.append("Whose role should change, and to what?")
    return ActionResult(replies=[" ".join(said)], data={"changed": changed})


def _update_entity(ctx: TurnContext, decision: Decision) -> ActionResult:
    """Note details someone gives about themselves (or, for a world's owner or admins,
    about others) in their entity's metadata."""
    store = ctx.runtime.store
    may_edit_others = world_role(ctx) in ("OWNER", "ADMIN")
    people = _people(ctx)
    updates = ask(
        ctx,
        "update_entity",
        _people_here(ctx),
        'Answer with JSON {"updates": [{"entity": "name", "fields": {"key": "value"}}]} with'
        " the details about people that the message gives.",
        "updates",
    )
    stored = []
    for item in updates:
        who, fields = str(item.get("entity", "")), item.get("fields")
        target = people.get(who.lower()) or people.get(who)
        if target is None or not isinstance(fields, dict) or not fields:
            continue
        if target != ctx.message.entity_id and not may_edit_others:
            continue
        clean = {str(k)[:100]: json.loads(json.dumps(v, default=str)) for k, v in fields.items()}
        store.update_entity_metadata(target, clean)
        stored.append({"entity": str(target), "fields": sorted(clean)})
    return ActionResult(data={"updated": stored})


ROLE_ACTIONS = [
    Action(
        "UPDATE_ROLE",
        "Change someone's role in this world (OWNER, ADMIN or NONE) when asked to.",
        _update_role,
        validate=_in_world,
        similes=("SET_ROLE", "CHANGE_ROLE", "MAKE_ADMIN"),
    ),
    Action(
        "UPDATE_ENTITY",
        "Note details someone gives about themselves (where they live, their pronouns...).",
        _update_entity,
        similes=("UPDATE_CONTACT", "UPDATE_PROFILE"),
    ),
]
