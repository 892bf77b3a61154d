"""An agent's settings as plugins read them: ElizaOS's `runtime.getSetting(key)`.

ElizaOS plugins find their keys with one call, whatever the character file's generation
put them in, so Carrier reads them in ElizaOS's order (`AgentRuntime.getSetting` in
@elizaos/core's runtime.ts, v0.25 and v1 alike): the character's top-level `secrets`,
then `settings`, then `settings.secrets`, then the process environment. As there, a
missing, null or empty value (anything JavaScript's `||` skips) falls through to the next
place, the strings "true" and "false" are booleans, and nothing found is None.

A stored character holds `SECRET` in place of each secret's value; the value is fetched
from the secret store only when a lookup reaches one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from carrier_core.character import SECRET, Character, SecretPath

#: Where `get_setting` looks, in order, before the environment.
SETTING_ORDER: tuple[tuple[str, ...], ...] = (("secrets",), ("settings",), ("settings", "secrets"))


def _unset(value: Any) -> bool:
    """What JavaScript's `||` passes over: undefined, null, false, 0 and ""."""
    if value is None or isinstance(value, bool):
        return not value
    if isinstance(value, int | float | str):
        return not value
    return False


def _holder(document: Mapping[str, Any], where: tuple[str, ...]) -> Mapping[str, Any]:
    holder: Any = document
    for key in where:
        holder = holder.get(key) if isinstance(holder, Mapping) else None
    return holder if isinstance(holder, Mapping) else {}


def get_setting(
    character: Character,
    key: str,
    stored: Callable[[], Mapping[SecretPath, Any]],
    environ: Mapping[str, str] = os.environ,
) -> Any:
    """The setting `key` of an agent, in ElizaOS's order; `stored` gives the agent's values
    from the secret store, called only when the setting found is a stored secret."""
    read: list[Mapping[SecretPath, Any]] = []

    def once() -> Mapping[SecretPath, Any]:
        if not read:
            read.append(stored())
        return read[0]

    document = {"secrets": character.secrets or {}, "settings": character.settings}
    for where in SETTING_ORDER:
        value = _reveal(_holder(document, where).get(key), (*where, key), once)
        if not _unset(value):
            return _booleans(value)
    value = environ.get(key)
    return None if _unset(value) else _booleans(value)


def _reveal(value: Any, path: SecretPath, stored: Callable[[], Mapping[SecretPath, Any]]) -> Any:
    """The value with its stored secrets in place of their markers, nested ones included
    (`settings.discord` with its `BOT_TOKEN`, `settings.accounts` with each `password`); a
    marker with nothing stored is None."""
    if value == SECRET:
        return stored().get(path)
    if isinstance(value, dict):
        return {name: _reveal(item, (*path, name), stored) for name, item in value.items()}
    if isinstance(value, list):
        return [_reveal(item, (*path, str(n)), stored) for n, item in enumerate(value)]
    return value


def _booleans(value: Any) -> Any:
    """ElizaOS's reading of the strings "true" and "false" (env files hold only strings)."""
    return {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value
