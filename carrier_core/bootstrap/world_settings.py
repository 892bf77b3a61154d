"""World settings: UPDATE_SETTINGS and the `settings` provider.

As in ElizaOS, a world (a server, a workspace) keeps its own settings in its metadata
(`settings`), and its owner changes them by chat. Plugins declare the settings they read
(`Plugin.settings`) and read them with `TurnContext.world_setting`. Only declared keys are
taken; a secret setting never is, since a chat message is no place for a secret and the
world's metadata is stored in plain text: it belongs in the character's secrets. As for
roles, the model only reads the request ("set the timezone to Lisbon"); who may change
what is checked here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from carrier_core.bootstrap.roles import ask, world_role
from carrier_core.plugin import Action, ActionResult, Provider, ProviderResult, Setting

if TYPE_CHECKING:
    from carrier_core.decision import Decision
    from carrier_core.turn.context import TurnContext

#: The longest value taken for a setting, in characters.
MAX_VALUE_CHARS = 1000


def _has_settings(ctx: TurnContext) -> bool:
    return ctx.room.world_id is not None and bool(ctx.plugins.settings)


def _declared(settings: dict[str, Setting]) -> str:
    lines = [
        f"- {s.name}: {s.description}" + (" (secret)" if s.secret else "")
        for s in settings.values()
    ]
    return "Settings of this world:\n" + "\n".join(lines)


def _value(value: Any) -> str | int | float | bool | None:
    """A value as a setting holds it: text (cut to `MAX_VALUE_CHARS`), a finite number or
    a boolean; None for anything else (a list, an object, NaN, nothing)."""
    if isinstance(value, str):
        return value.strip()[:MAX_VALUE_CHARS] or None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, int | float | bool) else None


def _update_settings(ctx: TurnContext, decision: Decision) -> ActionResult:
    assert ctx.room.world_id is not None  # validated
    store = ctx.runtime.store
    world = store.world(ctx.room.world_id)
    if world_role(ctx) != "OWNER":
        return ActionResult(
            replies=[f"Only the owner of {world.name} can change its settings."],
            error="only the world's owner may change its settings",
        )
    declared = ctx.plugins.settings
    by_key = {name.lower(): setting for name, setting in declared.items()}
    wanted = ask(
        ctx,
        "update_settings",
        _declared(declared),
        'Answer with JSON {"settings": [{"key": "NAME", "value": "new value"}]} listing the'
        " settings the message sets.",
        "settings",
    )
    said: list[str] = []
    changed: dict[str, Any] = {}
    refused: list[dict[str, str]] = []
    for item in wanted:
        key = str(item.get("key", "")).strip()
        setting, value = by_key.get(key.lower()), _value(item.get("value"))
        if setting is None:
            said.append(f"There is no setting named {key or 'that'} here.")
            refused.append({"key": key, "reason": "not a declared setting"})
        elif setting.secret:
            said.append(
                f"{setting.name} is a secret: I won't take it in chat. Put it in the"
                " agent's secrets instead."
            )
            refused.append({"key": setting.name, "reason": "secret"})
        elif value is None:
            said.append(f"What should {setting.name} be?")
            refused.append({"key": setting.name, "reason": "no value"})
        else:
            changed[setting.name] = value
            said.append(f"{setting.name} is now {value}.")
    if changed:
        store.set_world_settings(world.id, changed)
    if not wanted:
        said.append("Which setting should change, and to what?")
    return ActionResult(replies=[" ".join(said)], data={"changed": changed, "refused": refused})


def _settings(ctx: TurnContext) -> ProviderResult:
    """The world's declared settings, each set (with its value) or missing; a secret's
    value is never shown, only whether the agent has it."""
    if not _has_settings(ctx):
        return ProviderResult()
    assert ctx.room.world_id is not None
    stored = ctx.runtime.store.world(ctx.room.world_id).metadata.get("settings") or {}
    lines, shown = [], {}
    for setting in ctx.plugins.settings.values():
        line = f"- {setting.name} ({setting.description}): "
        if setting.secret:
            have = ctx.get_setting(setting.name) is not None
            line += "secret, " + ("set" if have else "missing: put it in the agent's secrets")
        elif stored.get(setting.name) is not None:
            shown[setting.name] = stored[setting.name]
            line += str(stored[setting.name])
        else:
            line += "not set"
            if ctx.get_setting(setting.name) is not None:
                line += " (the agent's own applies)"
            elif setting.required:
                line += " (required)"
        lines.append(line)
    return ProviderResult("\n".join(lines), {"world_settings": shown})


SETTINGS_ACTIONS = [
    Action(
        "UPDATE_SETTINGS",
        "Change this world's settings when its owner asks to.",
        _update_settings,
        validate=_has_settings,
        similes=("UPDATE_SETTING", "SET_SETTING", "CHANGE_SETTINGS", "CONFIGURE"),
        examples=(("Set the timezone to Europe/Lisbon", "TIMEZONE is now Europe/Lisbon."),),
    ),
]

SETTINGS_PROVIDER = Provider(
    "settings",
    "This world's settings, set or missing.",
    _settings,
    "Settings of this world",
    35,
)
