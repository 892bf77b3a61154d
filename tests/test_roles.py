"""Worlds have an owner and roles; UPDATE_ROLE changes them only as ElizaOS allows, and
UPDATE_ENTITY notes what people say about themselves."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from carrier_core import Character, Runtime, run_turn
from carrier_core.bootstrap.roles import can_modify_role
from carrier_core.models import ScriptedModel
from carrier_core.store.store import Store
from carrier_core.world import entity_id_for
from tests.conftest import make_runtime
from tests.test_turn import xml


def said(runtime: Runtime, agent: uuid.UUID, sender: str, text: str) -> list[str]:
    """A message in the group room of world "acme", from `sender` (its login and name)."""
    message: dict[str, Any] = {
        "agent_id": agent,
        "room": "acme-general",
        "world": "acme",
        "room_kind": "group",
        "sender": sender.lower(),
        "sender_name": sender,
        "text": text,
    }
    return run_turn(runtime, message).reply_texts


def roles(store: Store, agent: uuid.UUID) -> dict[str, str]:
    with store._pool.connection() as conn:
        row = conn.execute(
            "SELECT metadata FROM worlds WHERE agent_id = %s AND name = 'acme'", (agent,)
        ).fetchone()
    assert row is not None
    found: dict[str, str] = row["metadata"]["roles"]
    return found


@pytest.mark.parametrize(
    ("actor", "target", "new", "self_change", "allowed"),
    [
        ("OWNER", "NONE", "ADMIN", False, True),
        ("OWNER", "ADMIN", "OWNER", False, True),
        ("OWNER", "OWNER", "NONE", True, False),  # nobody changes their own role
        ("ADMIN", "NONE", "ADMIN", False, True),
        ("ADMIN", "ADMIN", "NONE", False, True),
        ("ADMIN", "NONE", "OWNER", False, False),  # admins make no owners
        ("ADMIN", "OWNER", "NONE", False, False),  # nor touch an owner
        ("NONE", "NONE", "ADMIN", False, False),
        ("NONE", "NONE", "ADMIN", True, False),
    ],
)
def test_who_may_change_a_role(
    actor: str, target: str, new: str, self_change: bool, allowed: bool
) -> None:
    assert can_modify_role(actor, target, new, self_change=self_change) is allowed


def test_roles_change_as_the_rules_allow_whatever_the_message_says(
    store: Store, ada: Character
) -> None:
    runtime = make_runtime(store)  # the offline model reads the requests
    agent = runtime.register_agent(ada)
    grace = str(entity_id_for(agent, "api", "grace"))
    sam = str(entity_id_for(agent, "api", "sam"))
    said(runtime, agent, "Grace", "Ada, hello everyone")  # the first to speak owns the world
    said(runtime, agent, "Sam", "Ada, hi")
    assert roles(store, agent) == {grace: "OWNER"}

    assert said(runtime, agent, "Sam", "Ada, make Sam an admin") == [
        "You may not change Sam's role."
    ]
    assert said(runtime, agent, "Sam", "Ada, make Grace none") == [
        "You may not change Grace's role."
    ]
    assert said(runtime, agent, "Grace", "Ada, make Sam an admin") == ["Sam is now ADMIN."]
    assert roles(store, agent) == {grace: "OWNER", sam: "ADMIN"}
    # An admin may not demote the owner.
    assert said(runtime, agent, "Sam", "Ada, set Grace to none") == [
        "You may not change Grace's role."
    ]
    assert roles(store, agent) == {grace: "OWNER", sam: "ADMIN"}


def test_update_entity_notes_details_about_the_sender_only(
    scripted_runtime: Runtime, scripted: ScriptedModel, ada: Character
) -> None:
    agent = scripted_runtime.register_agent(ada)
    message = {"agent_id": agent, "room": "r", "sender": "u1", "sender_name": "Sam"}
    scripted.add(
        xml("UPDATE_ENTITY", "REPLY", text="Noted."),
        json.dumps(
            {
                "updates": [
                    {"entity": "Sam", "fields": {"pronouns": "they/them", "city": "Lisbon"}},
                    # Not Sam's to say, and Sam owns no world here.
                    {"entity": "Ada", "fields": {"city": "Mars"}},
                ]
            }
        ),
    )
    result = run_turn(scripted_runtime, {**message, "text": "I use they/them, I live in Lisbon"})
    assert result.reply_texts == ["Noted."]
    with scripted_runtime.store._pool.connection() as conn:
        row = conn.execute(
            "SELECT metadata FROM entities WHERE id = %s", (entity_id_for(agent, "api", "u1"),)
        ).fetchone()
    assert row is not None
    assert row["metadata"] == {"pronouns": "they/them", "city": "Lisbon"}
