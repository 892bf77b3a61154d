"""Rooms' runners, as the lease columns of the room row: claimed, renewed, handed on, taken
over, and the turns they take up (`carrier_core.turn.schedule` says how the lease works).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from carrier_core.store.base import StoreBase
from carrier_core.store.turns import _END_COLUMNS, UNFINISHED_SQL, TurnEnd, _turn_end


class Runner(NamedTuple):
    """A room's runner, by its generation: each claim of the room's lease makes a new one,
    drawn from one database sequence, so no two runners ever share a name."""

    room_id: uuid.UUID
    generation: int

    @property
    def name(self) -> str:
        """Its execution's name. Derived, so starting one runner twice is harmless."""
        return f"room-{self.room_id}-g{self.generation}"


class NextTurn(NamedTuple):
    """The turn a runner takes up next."""

    turn_id: uuid.UUID
    agent_id: uuid.UUID
    message_id: uuid.UUID
    #: Runners that took it up, this one included (more than 1: a runner stopped in it).
    attempt: int
    #: Set when the turn has used up its attempts: record it failed with this reason.
    give_up: str | None = None


def _next_turn(row: Any, max_attempts: int) -> NextTurn | None:
    """The next turn from its `next_…` columns; None when there is none."""
    if row["next_turn_id"] is None:
        return None
    attempt = int(row["next_attempt"])
    give_up = None
    if attempt > max_attempts:
        give_up = f"the turn was taken up {attempt - 1} times and never finished" + (
            f"; last error: {row['next_error']}" if row["next_error"] else ""
        )
    return NextTurn(
        turn_id=row["next_turn_id"],
        agent_id=row["next_agent_id"],
        message_id=row["next_message_id"],
        attempt=attempt,
        give_up=give_up,
    )


class Stalled(NamedTuple):
    """A room the sweep looks at: its lease ran out, or turns wait and no runner holds it."""

    room_id: uuid.UUID
    generation: int
    #: The lease's end as read; None: no runner holds the room.
    until: datetime | None

    @property
    def runner(self) -> Runner | None:
        """The runner whose lease ran out, if one holds the room."""
        return None if self.until is None else Runner(self.room_id, self.generation)


class RunnerStore(StoreBase):
    """The runner leases of rooms, each `lease_s` seconds long from its last renewal."""

    def claim_room(
        self, room_id: uuid.UUID, lease_s: float, *, take_expired: bool
    ) -> Runner | None:
        """Claim the room's runner if none holds it, inside the caller's transaction
        (`atomic`).

        The room row is locked either way, until the caller commits: a runner giving the
        lease back waits for the message this transaction stores, or this waits for it.
        `take_expired` also takes a lease whose time ran out, without asking whether its
        runner still lives (in-process runners, which renew their lease at every turn).
        """
        with self.connection() as conn:
            row = conn.execute(
                "WITH old AS (SELECT id, runner_until FROM rooms WHERE id = %s FOR UPDATE)"
                " UPDATE rooms r SET runner_generation = nextval('runner_generations'),"
                " runner_until = now() + %s * interval '1 second' FROM old WHERE r.id = old.id"
                " AND (old.runner_until IS NULL OR (%s AND old.runner_until < now()))"
                " RETURNING r.runner_generation",
                (room_id, lease_s, take_expired),
            ).fetchone()
        return None if row is None else Runner(room_id, int(row["runner_generation"]))

    def next_turn(self, runner: Runner, lease_s: float, max_attempts: int) -> NextTurn | None:
        """The room's next turn for this runner, marked running; None when the runner is
        done, or was superseded. A turn taken up more than `max_attempts` times comes with
        `give_up` set. One round trip: `carrier_next_turn` (migrations 0004, 0007, 0015) does it
        all, committed lazily (see migration 0015)."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT turn_id AS next_turn_id, agent_id AS next_agent_id,"
                " message_id AS next_message_id, attempt AS next_attempt, error AS next_error"
                " FROM carrier_next_turn(%s, %s, %s)",
                (runner.room_id, runner.generation, lease_s),
            ).fetchone()
        return None if row is None else _next_turn(row, max_attempts)

    def end_turn_and_next(
        self,
        turn_id: uuid.UUID,
        runner: Runner,
        lease_s: float,
        max_attempts: int,
        *,
        error: str | None = None,
    ) -> tuple[TurnEnd | None, NextTurn | None]:
        """The finish step's two halves in one round trip: end the turn as `end_turn`
        does, then take the room's next turn as `next_turn` does (`carrier_end_turn`,
        migration 0015)."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_END_COLUMNS}, next_turn_id, next_agent_id, next_message_id,"
                " next_attempt, next_error FROM carrier_end_turn(%s, %s, %s, %s)",
                (turn_id, error, runner.generation, lease_s),
            ).fetchone()
        assert row is not None  # one row, whether or not the turn had ended already
        return _turn_end(row), _next_turn(row, max_attempts)

    def hand_off(self, runner: Runner, lease_s: float) -> Runner | None:
        """A fresh runner for the room, keeping the lease; None if this runner was
        superseded already."""
        return self._new_runner(
            runner.room_id, lease_s, "runner_generation = %s", runner.generation
        )

    def take_over(self, stalled: Stalled, lease_s: float) -> Runner | None:
        """A new runner for a stalled room; None if the room changed since it was read (its
        runner renewed the lease, or someone else took it over)."""
        return self._new_runner(
            stalled.room_id,
            lease_s,
            "runner_generation = %s AND runner_until IS NOT DISTINCT FROM %s",
            stalled.generation,
            stalled.until,
        )

    def _new_runner(
        self, room_id: uuid.UUID, lease_s: float, condition: str, *params: Any
    ) -> Runner | None:
        """A new generation for the room, with a fresh lease, if `condition` holds on its row.
        Generations come from one sequence: never reused, even by a room made again."""
        with self.connection() as conn:
            row = conn.execute(
                "UPDATE rooms SET runner_generation = nextval('runner_generations'),"
                " runner_until = now() + %s * interval '1 second'"
                f" WHERE id = %s AND {condition} RETURNING runner_generation",
                (lease_s, room_id, *params),
            ).fetchone()
        return None if row is None else Runner(room_id, int(row["runner_generation"]))

    def turn_runner(self, turn_id: uuid.UUID) -> Runner | None:
        """The runner that last took the turn up; None if none did (or no such turn)."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT room_id, runner_generation FROM turns WHERE id = %s", (turn_id,)
            ).fetchone()
        if row is None or row["runner_generation"] is None:
            return None
        return Runner(row["room_id"], int(row["runner_generation"]))

    def extend_lease(self, runner: Runner, lease_s: float) -> None:
        """The runner is alive (in a long step or a retry's wait): leave it the room."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE rooms SET runner_until = now() + %s * interval '1 second'"
                " WHERE id = %s AND runner_generation = %s AND runner_until IS NOT NULL",
                (lease_s, runner.room_id, runner.generation),
            )

    def hold_room(self, turn_id: uuid.UUID, until: datetime) -> None:
        """Keep the turn's room for its runner until `until` (a paused turn's approval
        expires then), if that runner still holds it."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE rooms r SET runner_until = greatest(r.runner_until, %s) FROM turns t"
                " WHERE t.id = %s AND r.id = t.room_id"
                " AND r.runner_generation = t.runner_generation AND r.runner_until IS NOT NULL",
                (until, turn_id),
            )

    # -- the sweep -------------------------------------------------------------------------

    def stalled_rooms(self, *, every_lease: bool = False, limit: int = 500) -> list[Stalled]:
        """Rooms whose runner may have stopped: lease run out (with `every_lease`, any lease,
        e.g. when a new process knows no runner from before can be alive), or turns waiting
        with no runner at all."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT id, runner_generation, runner_until FROM rooms"
                " WHERE runner_until < now() OR (%s AND runner_until IS NOT NULL)"
                " UNION SELECT r.id, r.runner_generation, r.runner_until FROM turns t"
                " JOIN rooms r ON r.id = t.room_id"
                f" WHERE t.status IN {UNFINISHED_SQL} AND r.runner_until IS NULL"
                " LIMIT %s",
                (every_lease, limit),
            ).fetchall()
        return [Stalled(r["id"], int(r["runner_generation"]), r["runner_until"]) for r in rows]

    def oldest_unfinished_s(self) -> float:
        """Seconds since the oldest unfinished turn's message arrived, 0 when none is left:
        how far behind the runners are (the sweep reports it; an alarm watches it)."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age"
                f" FROM turns WHERE status IN {UNFINISHED_SQL}"
            ).fetchone()
        return float(row["age"]) if row else 0.0
