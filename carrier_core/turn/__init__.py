"""The turn, step by step: ingest → decide → act → evaluate → embed.

Each step takes ids and a `Runtime`, persists its result before returning,
and can run in a process of its own. `run_turn` chains them in-process.
"""

from carrier_core.embed import embed_pending
from carrier_core.store.runners import NextTurn, Runner
from carrier_core.turn.act import Acted, act
from carrier_core.turn.context import State, TurnContext
from carrier_core.turn.decide import SAFE_REPLY, Decided, decide
from carrier_core.turn.evaluate import evaluate
from carrier_core.turn.ingest import (
    IncomingMessage,
    Ingested,
    InvalidMessage,
    MessageConflict,
    ingest,
)
from carrier_core.turn.run import (
    TurnResult,
    finish_turn,
    run_room,
    run_steps,
    run_turn,
    turn_result,
)
from carrier_core.turn.schedule import hand_off, next_turn

__all__ = [
    "SAFE_REPLY",
    "Acted",
    "Decided",
    "IncomingMessage",
    "Ingested",
    "InvalidMessage",
    "MessageConflict",
    "NextTurn",
    "Runner",
    "State",
    "TurnContext",
    "TurnResult",
    "act",
    "decide",
    "embed_pending",
    "evaluate",
    "finish_turn",
    "hand_off",
    "ingest",
    "next_turn",
    "run_room",
    "run_steps",
    "run_turn",
    "turn_result",
]
