"""Carrier: the ElizaOS agent turn loop, stateless, on Postgres and pgvector.

from carrier_core import Runtime, load_character, run_turn

with Runtime.open() as runtime:
    agent_id = runtime.register_agent(load_character("characters/ada.json"))
    result = run_turn(runtime, {"agent_id": agent_id, "room": "demo",
                                "sender": "me", "text": "Hello!"})
    print(result.reply_texts)

The names here are imported on first use: importing one module of the package (as each
Lambda function does) does not import the whole runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # `X as X`: re-exported, for type checkers (at run time `__getattr__` finds them).
    from carrier_core.character import Character as Character
    from carrier_core.character import CharacterError as CharacterError
    from carrier_core.character import load_character as load_character
    from carrier_core.character import parse_character as parse_character
    from carrier_core.config import Settings as Settings
    from carrier_core.runtime import Runtime as Runtime
    from carrier_core.turn.ingest import IncomingMessage as IncomingMessage
    from carrier_core.turn.ingest import InvalidMessage as InvalidMessage
    from carrier_core.turn.run import TurnResult as TurnResult
    from carrier_core.turn.run import run_turn as run_turn

_HOMES = {
    "carrier_core.character": ("Character", "CharacterError", "load_character", "parse_character"),
    "carrier_core.config": ("Settings",),
    "carrier_core.runtime": ("Runtime",),
    "carrier_core.turn.ingest": ("IncomingMessage", "InvalidMessage"),
    "carrier_core.turn.run": ("TurnResult", "run_turn"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
