"""Plugin events: ElizaOS's event names, fired at the matching step of a turn.

A plugin registers handlers by event name (`Plugin.events`); `emit` calls them in plugin
order (bootstrap first, then the character's list), each plugin's in the order given. A
handler that raises is recorded in the turn's history (step `event:<NAME>`, status
`error`, naming the plugin and the error) and logged; the other handlers still run and the
turn goes on: a plugin's listener never costs the conversation.

Events fire in the process that runs the step (a Lambda in the cloud, the loop of `run_turn`
locally), right after what they report is stored. A step replayed after it had finished
(a retried invocation that finds its result) fires nothing again; a step that failed
half-way and is run again fires its events again. So: once per step run that did the work,
at least once per turn for steps that are retried, and an event whose process dies between
storing and firing is lost (MESSAGE_RECEIVED, RUN_ENDED): handlers must not rely on
exactly once.

What fires where (`carrier_core.turn`):

- ingest, once per message (not on a redelivery): ENTITY_JOINED when the sender is new in
  the room, then MESSAGE_RECEIVED;
- the first decide step: RUN_STARTED;
- act, around an action's handler: ACTION_STARTED, MESSAGE_SENT per stored reply,
  ACTION_COMPLETED (a skipped action fires none);
- evaluate, around each evaluator that runs: EVALUATOR_STARTED, EVALUATOR_COMPLETED;
- the turn's end: RUN_TIMEOUT when it was given up or a step timed out, then RUN_ENDED.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from carrier_core.store.turns import StepRecord, StepUsage, TurnEnd, TurnRecord

if TYPE_CHECKING:
    from carrier_core.plugin import Plugins
    from carrier_core.runtime import Runtime

log = logging.getLogger(__name__)


class EventType(StrEnum):
    """The events a plugin may listen to, by ElizaOS's names. `Event.data` holds:"""

    #: message_id, entity_id, text, source
    MESSAGE_RECEIVED = "MESSAGE_RECEIVED"
    #: reply_id, text, action
    MESSAGE_SENT = "MESSAGE_SENT"
    #: action
    ACTION_STARTED = "ACTION_STARTED"
    #: action, status ("ok" or "error"), reply_ids, error (when it failed)
    ACTION_COMPLETED = "ACTION_COMPLETED"
    #: evaluator
    EVALUATOR_STARTED = "EVALUATOR_STARTED"
    #: evaluator, status ("ok" or "error"), error (when it failed)
    EVALUATOR_COMPLETED = "EVALUATOR_COMPLETED"
    #: nothing more than the turn
    RUN_STARTED = "RUN_STARTED"
    #: status ("done" or "failed"), error, seconds (from the message's arrival)
    RUN_ENDED = "RUN_ENDED"
    #: error
    RUN_TIMEOUT = "RUN_TIMEOUT"
    #: entity_id, room_id
    ENTITY_JOINED = "ENTITY_JOINED"


def event_type(name: str) -> EventType:
    """The event of that ElizaOS name, or `ValueError` naming it and the known ones."""
    try:
        return EventType(name)
    except ValueError:
        known = ", ".join(EventType)
        raise ValueError(f"no event named {name!r}; known: {known}") from None


@dataclass(frozen=True)
class Event:
    """What a handler is given: which event, in which turn, and what it is about."""

    type: EventType
    #: The runtime the step runs in: its store, settings and plugins' services.
    runtime: Runtime
    #: The turn as the step read it (ids of its agent, room and message; its status).
    turn: TurnRecord
    #: What the event is about; the keys of each event are listed under `EventType`.
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def agent_id(self) -> uuid.UUID:
        return self.turn.agent_id

    @property
    def room_id(self) -> uuid.UUID:
        return self.turn.room_id

    @property
    def message_id(self) -> uuid.UUID:
        """The message the turn answers."""
        return self.turn.message_id


#: A plugin's listener: called with the event; what it returns is ignored.
EventHandler = Callable[[Event], object]


def check_events(plugin: str, events: Mapping[str, Sequence[EventHandler]]) -> None:
    """Raise `ValueError` naming the plugin and the name unless every key is an event name
    and every value a list of callables."""
    for name, handlers in events.items():
        try:
            event_type(name)
        except ValueError as exc:
            raise ValueError(f"plugin {plugin!r}: {exc}") from None
        if not isinstance(handlers, list | tuple) or not all(callable(h) for h in handlers):
            raise ValueError(
                f"plugin {plugin!r}: the handlers of {name} must be a list of callables"
            )


def emit(
    runtime: Runtime, plugins: Plugins, turn: TurnRecord, kind: EventType, **data: Any
) -> None:
    """Call the plugins' handlers of `kind`; each failure is recorded on the turn, never raised."""
    for plugin, handler in plugins.event_handlers(kind):
        started_at = datetime.now(UTC)
        try:
            handler(Event(kind, runtime, turn, data))
        except Exception as exc:
            _record_failure(runtime, turn.id, kind, plugin, started_at, exc)


def emit_for(
    runtime: Runtime,
    turn_id: uuid.UUID,
    plugin_names: Sequence[str],
    events: Sequence[tuple[EventType, dict[str, Any]]],
) -> None:
    """Fire `events` in order for a turn no step has loaded (at ingest and at its end),
    whose agent's character names `plugin_names` (read with the turn's row). Only if one of
    those plugins handles one of the events is the turn read (one query). What is reported
    is stored already, so a failure is logged, not raised: the message was taken, the turn
    ended."""
    try:
        named = runtime.plugins_named(plugin_names)
        if not any(named.event_handlers(kind) for kind, _ in events):
            return
        scene = runtime.store.turn_scene(turn_id)
        plugins = runtime.plugins_for(scene.character)
    except Exception:
        log.exception(
            "the %s events of turn %s did not fire", "/".join(k for k, _ in events), turn_id
        )
        return
    for kind, data in events:
        emit(runtime, plugins, scene.turn, kind, **data)


def _record_failure(
    runtime: Runtime,
    turn_id: uuid.UUID,
    kind: EventType,
    plugin: str,
    started_at: datetime,
    exc: Exception,
) -> None:
    error = f"{exc.__class__.__name__}: {exc}"
    log.warning("plugin %s: a %s handler failed: %s", plugin, kind, error, exc_info=exc)
    detail = {"plugin": plugin, "error": error}
    try:
        runtime.store.record_step(
            turn_id, StepRecord(f"event:{kind}", "error", started_at, StepUsage(detail=detail))
        )
    except Exception:  # the turn goes on; the log above keeps the failure
        log.exception("the failure of a %s handler was not recorded on turn %s", kind, turn_id)


def run_ended(
    runtime: Runtime,
    turn_id: uuid.UUID,
    end: TurnEnd | None,
    error: str | None = None,
    *,
    timed_out: bool = False,
) -> None:
    """Fire the events of a turn's end, after the transaction that ended it: RUN_TIMEOUT
    if it timed out (given up, or a step ran out of time), then RUN_ENDED. Nothing when
    `end` is None: the turn had ended already, and its events fired then."""
    if end is None:
        return
    ended = {"status": end.status, "error": error, "seconds": end.seconds}
    emit_for(
        runtime,
        turn_id,
        end.plugins,
        [
            *([(EventType.RUN_TIMEOUT, {"error": error})] if timed_out else []),
            (EventType.RUN_ENDED, ended),
        ],
    )
