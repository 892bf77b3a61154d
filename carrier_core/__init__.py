"""Carrier: the ElizaOS agent turn loop, stateless, on Postgres and pgvector.

from carrier_core import Runtime, load_character, run_turn

with Runtime.open() as runtime:
    agent_id = runtime.register_agent(load_character("characters/ada.json"))
    result = run_turn(runtime, {"agent_id": agent_id, "room": "demo",
                                "sender": "me", "text": "Hello!"})
    print(result.reply_texts)
"""

from carrier_core.character import Character, CharacterError, load_character, parse_character
from carrier_core.config import Settings
from carrier_core.runtime import Runtime
from carrier_core.turn import IncomingMessage, InvalidMessage, TurnResult, run_turn

__all__ = [
    "Character",
    "CharacterError",
    "IncomingMessage",
    "InvalidMessage",
    "Runtime",
    "Settings",
    "TurnResult",
    "load_character",
    "parse_character",
    "run_turn",
]
