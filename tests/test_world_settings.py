"""World settings end to end with the scripted model: plugins declare them, the world's
owner sets them by chat (UPDATE_SETTINGS), the settings provider shows them and an action
reads them next turn; nobody else may change them, and undeclared keys and secrets are
refused."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from carrier_core import Character, Runtime
from carrier_core.decision import Decision
from carrier_core.models import ScriptedModel
from carrier_core.plugin import Action, ActionResult, Plugin, Setting
from carrier_core.turn.context import TurnContext
from carrier_core.turn.run import TurnResult, run_turn
from tests.test_turn import xml


def _greet(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(replies=[f"{ctx.world_setting('GREETING')}, {ctx.sender}!"])


#: A plugin that reads a greeting per world (with the agent's own as the default) and
#: declares a secret and a required setting.
greeter = Plugin(
    name="greeter",
    actions=[Action("GREET", "Greet someone as this world likes.", _greet)],
    settings=[
        Setting("GREETING", "How to greet people here"),
        Setting("CHANNEL", "Where announcements go", required=True),
        Setting("API_TOKEN", "The greeting service's token", secret=True),
    ],
)


@pytest.fixture
def agent(scripted_runtime: Runtime, ada: Character) -> uuid.UUID:
    character = ada.model_copy(
        update={
            "plugins": ["tests.test_world_settings:greeter"],
            "settings": {**ada.settings, "GREETING": "Hello"},
        }
    )
    return scripted_runtime.register_agent(character)


def said(runtime: Runtime, agent: uuid.UUID, sender: str, text: str) -> TurnResult:
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
    return run_turn(runtime, message)


def settings_of(runtime: Runtime, agent: uuid.UUID) -> dict[str, Any]:
    with runtime.store.connection() as conn:
        row = conn.execute(
            "SELECT metadata FROM worlds WHERE agent_id = %s AND name = 'acme'", (agent,)
        ).fetchone()
    assert row is not None
    found: dict[str, Any] = row["metadata"].get("settings", {})
    return found


def last_decide(scripted: ScriptedModel) -> str:
    return [r for r in scripted.requests if r.task == "decide"][-1].prompt


def asked(**values: object) -> str:
    return json.dumps({"settings": [{"key": k, "value": v} for k, v in values.items()]})


def test_the_owner_sets_a_setting_that_the_provider_shows_and_an_action_reads_next_turn(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("GREET"))  # Grace speaks first: she owns the world
    assert said(scripted_runtime, agent, "Grace", "Ada, greet me").reply_texts == [
        "Hello, Grace!"  # the agent's own setting, as the world has none
    ]
    decide = last_decide(scripted)
    assert "- GREETING (How to greet people here): not set (the agent's own applies)" in decide
    assert "- CHANNEL (Where announcements go): not set (required)" in decide
    assert "- API_TOKEN (The greeting service's token): secret, missing" in decide
    assert "UPDATE_SETTINGS" in decide

    scripted.add(xml("UPDATE_SETTINGS"), asked(greeting="Bom dia", CHANNEL="#news"))
    changed = said(scripted_runtime, agent, "Grace", "Ada, greet with Bom dia, post in #news")
    assert changed.reply_texts == ["GREETING is now Bom dia. CHANNEL is now #news."]
    assert scripted.requests[-1].task == "update_settings"
    assert settings_of(scripted_runtime, agent) == {"GREETING": "Bom dia", "CHANNEL": "#news"}

    scripted.add(xml("GREET"))
    assert said(scripted_runtime, agent, "Sam", "Ada, greet me").reply_texts == ["Bom dia, Sam!"]
    decide = last_decide(scripted)
    assert "- GREETING (How to greet people here): Bom dia" in decide
    assert "- CHANNEL (Where announcements go): #news" in decide


def test_only_the_owner_may_change_settings(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("IGNORE"))
    said(scripted_runtime, agent, "Grace", "Ada, hello")  # Grace owns the world
    scripted.add(xml("UPDATE_SETTINGS"))  # the request is not even read
    refused = said(scripted_runtime, agent, "Sam", "Ada, set the greeting to Yo")
    assert refused.reply_texts == ["Only the owner of acme can change its settings."]
    [step] = [
        s
        for s in scripted_runtime.store.turn_steps(refused.turn_id)
        if s.step == "act:UPDATE_SETTINGS"
    ]
    assert (step.status, step.detail["error"]) == (
        "error",
        "only the world's owner may change its settings",
    )
    assert settings_of(scripted_runtime, agent) == {}


def test_undeclared_keys_and_secrets_are_refused(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("UPDATE_SETTINGS"), asked(COLOR="blue", API_TOKEN="sk-123", GREETING="Hey"))
    result = said(scripted_runtime, agent, "Grace", "Ada, color blue, token sk-123, greet Hey")
    assert result.reply_texts == [
        "There is no setting named COLOR here. API_TOKEN is a secret: I won't take it in chat."
        " Put it in the agent's secrets instead. GREETING is now Hey."
    ]
    assert settings_of(scripted_runtime, agent) == {"GREETING": "Hey"}
    [step] = [
        s for s in scripted_runtime.store.turn_steps(result.turn_id) if s.step.startswith("act:")
    ]
    assert step.detail["data"] == {
        "changed": {"GREETING": "Hey"},
        "refused": [
            {"key": "COLOR", "reason": "not a declared setting"},
            {"key": "API_TOKEN", "reason": "secret"},
        ],
    }


def test_outside_a_world_there_are_no_settings_to_change(
    scripted_runtime: Runtime, scripted: ScriptedModel, agent: uuid.UUID
) -> None:
    scripted.add(xml("UPDATE_SETTINGS"))
    message = {"agent_id": agent, "room": "dm", "sender": "sam", "text": "set greeting to Yo"}
    result = run_turn(scripted_runtime, message)
    assert result.reply_texts == []
    assert "UPDATE_SETTINGS" not in last_decide(scripted)
    [step] = [
        s for s in scripted_runtime.store.turn_steps(result.turn_id) if s.step.startswith("act:")
    ]
    assert (step.status, step.detail["reason"]) == ("skipped", "its validate declined")
