"""Plugins for tests/test_plugin_events.py: one hears every event, keeps a service and has an
init; one's listeners fail; one's init fails."""

from __future__ import annotations

import uuid
from typing import Any

from carrier_core.decision import Decision
from carrier_core.events import Event, EventType
from carrier_core.plugin import Action, ActionResult, Evaluator, Plugin
from carrier_core.runtime import Runtime
from carrier_core.services import Service
from carrier_core.turn.context import TurnContext

#: What `listening` heard, in order: (event name, turn id, what it was about). Handlers run
#: in the test's process, under the emulator too, so the test reads them here.
HEARD: list[tuple[str, uuid.UUID, dict[str, Any]]] = []
#: The runtimes `listening`'s init was called with, in order.
INITS: list[Runtime] = []
#: The tally service's instances started, and those stopped.
TALLIES: dict[str, list[Tally]] = {"started": [], "stopped": []}


def _hear(event: Event) -> None:
    HEARD.append((event.type.value, event.turn.id, dict(event.data)))


class Tally:
    """A service's instance: counts what the TALLY action asks it to."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.count = 0


def _start_tally(runtime: Runtime) -> Tally:
    tally = Tally(runtime)
    TALLIES["started"].append(tally)
    return tally


def _stop_tally(tally: Tally) -> None:
    TALLIES["stopped"].append(tally)


def _tally(ctx: TurnContext, decision: Decision) -> ActionResult:
    tally: Tally = ctx.service("tally")
    tally.count += 1
    return ActionResult(replies=[f"tally {tally.count}"])


def _note(ctx: TurnContext) -> dict[str, Any]:
    return {"noted": True}


listening = Plugin(
    name="listening",
    events={kind: [_hear] for kind in EventType},
    services=[Service("tally", _start_tally, _stop_tally, "Counts.")],
    actions=[Action("TALLY", "Count one more.", _tally)],
    evaluators=[Evaluator("note", "Notes the turn.", _note)],
    init=INITS.append,
)


def _trip(event: Event) -> None:
    raise RuntimeError(f"the listener tripped on {event.type}")


tripping = Plugin(
    name="tripping",
    events={EventType.RUN_STARTED: [_trip], EventType.MESSAGE_SENT: [_trip]},
)


def _refuse(runtime: Runtime) -> None:
    raise PermissionError("no licence key")


def _paid(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(replies=["paid for"])


unlicensed = Plugin(
    name="unlicensed",
    init=_refuse,
    actions=[Action("PAID", "A paid feature.", _paid)],
    events={EventType.MESSAGE_RECEIVED: [_hear]},
)
