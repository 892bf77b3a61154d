"""One turn at a time per room, in order of arrival, with nothing waiting for a turn.

A room has at most one *runner*, whatever runs its turns: a state-machine execution in
the cloud (`carrier_aws.runners`), a loop in this process for `carrier chat` and
`run_turn`. The runner's lease is a pair of columns on the room row:

- ingest claims the lease, in the transaction that stores the message, when no runner
  holds it; the caller then starts the runner it claimed (`Runner.name` names it);
- the runner takes the room's oldest unfinished turn, again and again, renewing the
  lease each time, and gives the lease back in the transaction that finds nothing left;
- both lock the room row first, so a message stored while a runner gives up its lease
  is either seen by that runner or finds the lease free and starts the next one;
- a lease that ran out is looked at by the sweep (`Store.stalled_rooms`, `take_over`): a
  runner that stopped (a crash, an outage) is replaced, and its turn is taken up again.
  Every step is idempotent, so the new runner carries on where the old one stopped;
  a turn taken up `turn_max_attempts` times without finishing is failed instead.

Double texting: by default every message gets its own turn, in order. An agent whose
character says `settings.double_texting: coalesce` answers the messages that queued up
behind a running turn together, in one turn for the newest that sees them all; the
others are `coalesced`, `answered_by` that turn. No message is ever dropped.

The lease's statements are the store's (`carrier_core.store.runners`); here they run with
this runtime's lease length and limit of attempts.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime
    from carrier_core.store.runners import NextTurn, Runner, Stalled
    from carrier_core.store.turns import TurnEnd


def next_turn(runtime: Runtime, runner: Runner) -> NextTurn | None:
    """The room's next turn for this runner, marked running; None when the runner is done.

    None also when the runner was superseded (the sweep took the room over): it must
    stop. When nothing is left, the lease is given back in the same transaction. A turn
    taken up more than `turn_max_attempts` times comes with `give_up` set.
    """
    settings = runtime.settings
    return runtime.store.next_turn(runner, settings.runner_lease_s, settings.turn_max_attempts)


def end_turn(
    runtime: Runtime, turn_id: uuid.UUID, error: str | None, runner: Runner | None
) -> tuple[TurnEnd | None, NextTurn | None]:
    """End the turn, done or failed with `error` (None: it had ended already); with the
    room's `runner`, also take the room's next turn in the same statement, as `next_turn`
    does (None: the runner is done)."""
    if runner is None:
        return runtime.store.end_turn(turn_id, error=error), None
    settings = runtime.settings
    return runtime.store.end_turn_and_next(
        turn_id, runner, settings.runner_lease_s, settings.turn_max_attempts, error=error
    )


def hand_off(runtime: Runtime, runner: Runner) -> Runner | None:
    """Pass the room to a fresh runner (the caller starts it), keeping the lease: a
    long-lived room's execution ends after a bounded number of turns. None if this
    runner was superseded already."""
    return runtime.store.hand_off(runner, runtime.settings.runner_lease_s)


def extend_lease(runtime: Runtime, runner: Runner) -> None:
    """The runner is alive (in a long step or a retry's wait): leave it the room."""
    runtime.store.extend_lease(runner, runtime.settings.runner_lease_s)


def take_over(runtime: Runtime, stalled: Stalled) -> Runner | None:
    """Give a stalled room a new runner (the caller starts it); None if the room changed
    since it was read (its runner renewed the lease, or someone else took it over)."""
    return runtime.store.take_over(stalled, runtime.settings.runner_lease_s)
