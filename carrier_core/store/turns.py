"""Turns and their steps: a message's turn from queued to ended, the history of its
steps, its decisions, and the scene a step starts from.

The steps hold no state between calls: what one step learns, it writes here,
and the next step (perhaps in another Lambda) reads it back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from psycopg.types.json import Jsonb

from carrier_core.character import Character, parse_character
from carrier_core.store.agents import (
    RELATIONSHIPS_SHOWN,
    _people_rows,
    _relationship,
    _relationship_rows,
)
from carrier_core.store.base import NotFound, StoreBase, entity_name
from carrier_core.store.memories import (
    NamedMessage,
    _fact_rows,
    _memory,
    _named,
    _recent_rows,
    _since_reflection,
)
from carrier_core.store.usage import _INSERT_CALLS, ModelCall, _calls
from carrier_core.world import Entity, Room, RoomKind

if TYPE_CHECKING:
    from carrier_core.memory import Memory

#: Turn statuses of a turn its room still owes an answer (see `carrier_core.turn.schedule`).
UNFINISHED = ("queued", "running", "retrying")
#: The same as SQL, written out so the planner can use the index on unfinished turns.
UNFINISHED_SQL = "('queued', 'running', 'retrying')"


class TurnRecord(NamedTuple):
    id: uuid.UUID
    agent_id: uuid.UUID
    room_id: uuid.UUID
    message_id: uuid.UUID
    status: str
    steps_taken: int
    decision: dict[str, Any] | None
    state: dict[str, Any]
    error: str | None
    updated_at: datetime
    #: How many runners took the turn up (see `carrier_core.turn.schedule`).
    attempts: int = 0
    #: For a coalesced turn: the turn whose reply answered its message too.
    answered_by: uuid.UUID | None = None


class TurnStep(NamedTuple):
    """One row of a turn's history, with when the step started and ended."""

    step: str
    key: str | None
    status: str
    detail: dict[str, Any]
    model_calls: int
    input_tokens: int
    output_tokens: int
    started_at: datetime
    finished_at: datetime

    @property
    def duration_ms(self) -> int:
        return max(0, round((self.finished_at - self.started_at).total_seconds() * 1000))


@dataclass
class StepUsage:
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class StepRecord(NamedTuple):
    """One row of a turn's history, as a step writes it."""

    step: str
    status: str
    started_at: datetime
    usage: StepUsage
    #: Identifies a run of the step within its turn, so a retry finds it (e.g. act:1:0).
    key: str | None = None
    #: The step's model calls, written to the usage ledger with the step.
    calls: tuple[ModelCall, ...] = ()


# A step's history row and its ledger rows, in one statement: one commit, never one alone.
def _insert_steps(count: int) -> str:
    """The end of a statement that adds `count` steps to a turn's history, with their
    model calls' ledger rows (`_step_params` of each); a keyed step already there is
    kept as it is."""
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * count)
    return (
        f"c AS ({_INSERT_CALLS})"
        " INSERT INTO turn_steps (turn_id, step, key, status, detail, model_calls, input_tokens,"
        f" output_tokens, started_at) VALUES {rows}"
        " ON CONFLICT (turn_id, key) WHERE key IS NOT NULL DO NOTHING"
    )


def _step_params(turn_id: uuid.UUID, *records: StepRecord) -> tuple[Any, ...]:
    """The parameters of `_insert_steps(len(records))`."""
    rows: list[Any] = []
    for record in records:
        usage = record.usage
        rows += [
            turn_id,
            record.step,
            record.key,
            record.status,
            Jsonb(usage.detail),
            usage.model_calls,
            usage.input_tokens,
            usage.output_tokens,
            record.started_at,
        ]
    return (_calls([call for record in records for call in record.calls]), *rows)


def _said(turn_id: uuid.UUID, said: Sequence[Memory]) -> tuple[str, tuple[Any, ...]]:
    """A CTE storing the messages a step said (none: no CTE), and its parameters; a message
    stored already (its dedupe key) is kept, so a rerun step says nothing twice."""
    if not said:
        return "", ()
    return (
        "said AS (INSERT INTO memories (id, agent_id, entity_id, room_id, world_id,"
        " kind, content, dedupe_key, turn_id)"
        " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::uuid[],"
        " %s::uuid[], %s::text[], %s::jsonb[], %s::text[], %s::uuid[])"
        " ON CONFLICT (agent_id, kind, room_id, dedupe_key) WHERE dedupe_key IS NOT NULL"
        " DO NOTHING), ",
        (
            [m.id for m in said],
            [m.agent_id for m in said],
            [m.entity_id for m in said],
            [m.room_id for m in said],
            [m.world_id for m in said],
            [m.kind.value for m in said],
            [Jsonb(m.content.model_dump(mode="json", exclude_none=True)) for m in said],
            [m.dedupe_key for m in said],
            [turn_id for _ in said],
        ),
    )


class TurnEnd(NamedTuple):
    """A turn that has just ended, as its metrics report it."""

    message_id: uuid.UUID
    status: str
    #: From the message's arrival (the turn was stored with it) to the turn's end.
    seconds: float
    model_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    #: The plugins its agent's character names (for the events of its end: read with it).
    plugins: tuple[str, ...] = ()


class Conversation(NamedTuple):
    """What a decide step's providers show of the conversation, read with its scene."""

    #: The recent messages as they stood for the turn's message, oldest first.
    recent: list[NamedMessage]
    #: The room's members, in the order they joined.
    people: list[Entity]
    #: The sender's known relationships, newest first: (source, target, tags).
    relationships: list[tuple[str, str, list[str]]]


class ReflectionScene(NamedTuple):
    """What the reflection evaluator reads before its model call, in one statement
    (`Store.reflection_scene`)."""

    #: Messages from others after the room's reflection bookmark.
    pending: int
    #: The newest message's seq: the bookmark to set once they are reflected on.
    newest: int
    #: The room's last messages, oldest first.
    recent: list[NamedMessage]
    #: The room's members, in the order they joined.
    people: list[Entity]
    #: The newest facts about the sender, oldest first.
    known: list[Memory]


class Accepted(NamedTuple):
    """What taking a message in did (`Store.accept_message`)."""

    #: The sender joined the room now (its first message there).
    joined: bool
    #: The new turn; None when the message's dedupe key was seen before.
    turn_id: uuid.UUID | None
    #: The room's runner this claimed (its generation); None: another holds the room.
    runner_generation: int | None
    #: The plugins its agent's character names (for the events of ingest).
    plugins: tuple[str, ...]


class Scene(NamedTuple):
    """What a step starts from (`Store.turn_scene`)."""

    turn: TurnRecord
    message: Memory
    character: Character
    room: Room
    #: The sender's name, as the agent knows them.
    sender: str
    #: The act step's record when the action asked for ran already; None otherwise.
    done: TurnStep | None = None
    #: Messages from others since the room's reflection bookmark, when asked for.
    unreflected: int | None = None
    #: What a decide step shows of the conversation, when asked for.
    conversation: Conversation | None = None


class StartedTurn(NamedTuple):
    """A message's turn as ingest finds it."""

    id: uuid.UUID
    #: Made now (not found: the message came before).
    created: bool
    status: str


#: The columns of a turn's end that `carrier_end_turn` returns (`_turn_end` reads them).
_END_COLUMNS = "message_id, status, seconds, calls, input_tokens, output_tokens, cost_usd, plugins"


def _turn_end(row: Any) -> TurnEnd | None:
    """A turn's end from `carrier_end_turn`'s row; None if it had ended already."""
    if row["message_id"] is None:
        return None
    return TurnEnd(
        message_id=row["message_id"],
        status=row["status"],
        seconds=float(row["seconds"]),
        model_calls=int(row["calls"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cost_usd=float(row["cost_usd"]),
        plugins=tuple(row["plugins"]),
    )


_STEP_COLUMNS = (
    "step, key, status, detail, model_calls, input_tokens, output_tokens, started_at, finished_at"
)


class TurnStore(StoreBase):
    """Turns, their steps and decisions."""

    def start_turn(self, turn_id: uuid.UUID, message: Memory) -> StartedTurn:
        """Create the turn for a message, queued; or find the one it already has, queued
        again if it had failed (the message came again: a new attempt)."""
        assert message.room_id is not None, "a turn answers a message in a room"
        with self.connection() as conn:
            row = conn.execute(
                "INSERT INTO turns (id, agent_id, room_id, message_id, status)"
                " VALUES (%s, %s, %s, %s, 'queued') ON CONFLICT (message_id) DO UPDATE"
                " SET status = 'queued', error = NULL, attempts = 0, updated_at = now()"
                " WHERE turns.status = 'failed' RETURNING id, status",
                (turn_id, message.agent_id, message.room_id, message.id),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT id, status FROM turns WHERE message_id = %s", (message.id,)
                ).fetchone()
        assert row is not None
        return StartedTurn(row["id"], row["id"] == turn_id, row["status"])

    def accept_message(
        self,
        entity: Entity,
        room: Room,
        world_name: str | None,
        message: Memory,
        *,
        turn_id: uuid.UUID,
        started_at: datetime,
        lease_s: float,
        take_expired: bool,
    ) -> Accepted:
        """Take a message in, in one statement (`carrier_accept`, migration 0014): the
        sender, the world, the room and membership, the message, its turn and `ingest`
        step, and the room's runner if free. A message whose dedupe key was seen before
        stops after the room (`turn_id` None): the caller finds the stored one."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT joined, message_id, turn_id, runner_generation, plugins FROM"
                " carrier_accept(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    entity.id,
                    entity.agent_id,
                    entity.names[0],
                    room.world_id,
                    world_name,
                    room.id,
                    room.name,
                    room.kind.value,
                    room.source,
                    message.id,
                    Jsonb(message.content.model_dump(mode="json", exclude_none=True)),
                    message.dedupe_key,
                    turn_id,
                    started_at,
                    lease_s,
                    take_expired,
                ),
            ).fetchone()
        assert row is not None
        return Accepted(
            joined=bool(row["joined"]),
            turn_id=row["turn_id"],
            runner_generation=row["runner_generation"],
            plugins=tuple(row["plugins"] or ()),
        )

    def turn(self, turn_id: uuid.UUID) -> TurnRecord:
        with self.connection() as conn:
            row = conn.execute(
                "SELECT id, agent_id, room_id, message_id, status, steps_taken, decision, state,"
                " error, updated_at, attempts, answered_by FROM turns WHERE id = %s",
                (turn_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no turn with id {turn_id}")
        return TurnRecord(**row)

    def answering(self, turn: TurnRecord) -> TurnRecord:
        """The turn whose replies answer `turn`'s message: itself, or for a coalesced turn
        the later one that answered it together with others."""
        return turn if turn.answered_by is None else self.turn(turn.answered_by)

    def coalesced_into(self, turn_id: uuid.UUID) -> list[uuid.UUID]:
        """The turns this one answered together with its own (coalesced double texts)."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT id FROM turns WHERE answered_by = %s ORDER BY created_at", (turn_id,)
            ).fetchall()
        return [row["id"] for row in rows]

    def mark_retrying(self, turn_id: uuid.UUID, error: str) -> None:
        """Say that a turn's step failed and is tried again, and why (`error`).

        An ended turn (done, failed, coalesced) is not moved: a late write from a step
        that outlived its execution must not reopen it (`end_turn` ends turns).
        """
        with self.connection() as conn:
            conn.execute(
                "UPDATE turns SET status = 'retrying', error = %s, updated_at = now()"
                f" WHERE id = %s AND status IN {UNFINISHED_SQL}",
                (error, turn_id),
            )

    def end_turn(self, turn_id: uuid.UUID, *, error: str | None = None) -> TurnEnd | None:
        """End a turn, done or failed with its reason, and sum up its model calls in the
        same statement; None if it had ended already: a failure reported after the turn
        ended (its runner failing to move on to the next turn) is not the turn's. Committed
        lazily (`carrier_end_turn`, migration 0015): a turn whose end was lost is taken up
        again, and its steps find what they did. `Store.end_turn_and_next` also takes the
        room's next turn."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_END_COLUMNS} FROM carrier_end_turn(%s, %s, NULL, NULL)",
                (turn_id, error),
            ).fetchone()
        return None if row is None else _turn_end(row)

    def record_step(
        self, turn_id: uuid.UUID, record: StepRecord, *, said: Sequence[Memory] = ()
    ) -> bool:
        """Add a step to the turn's history; a keyed step is recorded once, the first time
        (False: it was recorded already, by a run of the same step at the same time).
        `said`: the messages the step stores (an action's replies), written in the same
        statement, so a step and what it said are never stored the one without the other
        (a retried step finds its record and says nothing again)."""
        said_now, said_params = _said(turn_id, said)
        with self.connection() as conn:
            made = conn.execute(
                "WITH " + said_now + _insert_steps(1) + " RETURNING id",
                (*said_params, *_step_params(turn_id, record)),
            ).fetchone()
        return made is not None

    def save_decision(
        self,
        turn_id: uuid.UUID,
        *,
        message: Memory,
        status: str,
        decision: dict[str, Any],
        state: dict[str, Any],
        steps_taken: int,
        record: StepRecord,
        acted: tuple[StepRecord, Sequence[Memory]] | None = None,
    ) -> None:
        """Persist a decide step in one statement: the message's embedding (made for
        recall), the decision and state on the turn, and the step's history row; with
        `acted`, the record of the action the step ran itself (a simple reply) and what
        it said, in the same statement."""
        embedding = None if message.embedding is None else self._vector(message.embedding)
        records = (record,) if acted is None else (record, acted[0])
        said_now, said_params = _said(turn_id, () if acted is None else acted[1])
        room_first = room_taken = ""
        room_params: tuple[Any, ...] = ()
        if said_now:
            # A reply's room row is checked (its foreign key) as the statement ends, after
            # the turn's row was taken. Take the room first, as runners and redeliveries do
            # (the room, then its turns): otherwise each could wait on the other for good.
            room_first = "r AS (SELECT FROM rooms WHERE id = %s FOR KEY SHARE), "
            room_taken, room_params = " AND EXISTS (SELECT FROM r)", (message.room_id,)
        with self.connection() as conn:
            conn.execute(
                f"WITH {room_first}m AS (UPDATE memories SET embedding = %s WHERE id = %s"
                " AND embedding IS NULL AND %s::vector IS NOT NULL),"
                " t AS (UPDATE turns SET status = %s, decision = %s, state = %s,"
                " steps_taken = %s, error = NULL, updated_at = now() WHERE id = %s"
                f" AND status IN {UNFINISHED_SQL}{room_taken}), "
                + said_now
                + _insert_steps(len(records)),
                (
                    *room_params,
                    embedding,
                    message.id,
                    embedding,
                    status,
                    Jsonb(decision),
                    Jsonb(state),
                    steps_taken,
                    turn_id,
                    *said_params,
                    *_step_params(turn_id, *records),
                ),
            )

    def turn_steps(self, turn_id: uuid.UUID) -> list[TurnStep]:
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM turn_steps WHERE turn_id = %s ORDER BY id".encode(),
                (turn_id,),
            ).fetchall()
        return [TurnStep(**row) for row in rows]

    def message_turns(self, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """The turn of each message that has one: the turn an incoming message started, or
        the turn in which the agent said a reply. Messages without a turn are left out."""
        if not message_ids:
            return {}
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT m.id, coalesce(m.turn_id, t.id) AS turn_id FROM memories m"
                " LEFT JOIN turns t ON t.message_id = m.id"
                " WHERE m.id = ANY(%s) AND coalesce(m.turn_id, t.id) IS NOT NULL",
                (list(message_ids),),
            ).fetchall()
        return {row["id"]: row["turn_id"] for row in rows}

    def turn_step(self, turn_id: uuid.UUID, key: str) -> TurnStep | None:
        """A keyed step already run for this turn, if any."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM turn_steps WHERE turn_id = %s AND key = %s".encode(),
                (turn_id, key),
            ).fetchone()
        return None if row is None else TurnStep(**row)

    def reflection_scene(
        self, room_id: uuid.UUID, sender_id: uuid.UUID, *, recent: int, known: int
    ) -> ReflectionScene:
        """What the reflection evaluator reads, in one round trip: the room's messages after
        its bookmark (`messages_since_reflection`), its last `recent` messages, its members
        and the newest `known` facts about the sender (`facts_about`)."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT p.n, p.newest,"
                " (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.seq), '[]') FROM"
                f" ({_recent_rows('r.id', '')}) x) AS recent,"
                " (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.joined_at), '[]') FROM"
                f" ({_people_rows('r.id')}) x) AS people,"
                " (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.seq), '[]') FROM"
                f" ({_fact_rows('r.agent_id', '%s')}) x) AS known"
                f" FROM rooms r CROSS JOIN LATERAL ({_since_reflection('')}) p WHERE r.id = %s",
                (recent, sender_id, known, room_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"no room with id {room_id}")
        return ReflectionScene(
            pending=int(row["n"]),
            newest=int(row["newest"]),
            recent=_named(row["recent"]),
            people=[Entity(**person) for person in row["people"]],
            known=[_memory(fact) for fact in row["known"]],
        )

    def turn_scene(
        self,
        turn_id: uuid.UUID,
        *,
        act_index: int | None = None,
        unreflected: bool = False,
        conversation: int | None = None,
    ) -> Scene:
        """Everything a step needs to start, in one round trip: the turn, its message
        (without its embedding, which only decide needs and makes itself), the agent's
        character, the room and the sender's name; with `act_index`, the act step's record
        if that action of the latest decision ran already (a retried invocation); with
        `unreflected`, how many messages from others the room has after its reflection
        bookmark (`messages_since_reflection`), for the evaluate step; with `conversation`
        (a count), what a decide step's providers show of it: that many recent messages as
        they stood for the turn's message, the room's members and the sender's known
        relationships."""
        # Each kind of scene is its own statement, holding only the parts it asks for: a
        # statement whose parts were switched on and off by parameters was planned again
        # at every run (Postgres kept a custom plan for it), a third of its cost.
        parts, params = [], []
        if act_index is not None:
            parts.append(
                f" (SELECT to_jsonb(s) FROM (SELECT {_STEP_COLUMNS} FROM turn_steps"
                " WHERE turn_id = t.id AND key = 'act:' || t.steps_taken || ':' || %s::int) s)"
                " AS done"
            )
            params.append(act_index)
        if unreflected:
            parts.append(f" (SELECT p.n FROM ({_since_reflection('')}) p) AS unreflected")
        if conversation is not None:
            parts.append(
                " (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.seq), '[]') FROM"
                f" ({_recent_rows('r.id', ' AND (rm.seq <= m.seq OR rm.turn_id = t.id)')}) x)"
                " AS recent,"
                " (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.joined_at), '[]') FROM"
                f" ({_people_rows('r.id')}) x) AS people,"
                " (SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.updated_at DESC), '[]')"
                f" FROM ({_relationship_rows('t.agent_id', 'm.entity_id')}) x) AS relationships"
            )
            params.extend([conversation, RELATIONSHIPS_SHOWN])
        with self.connection() as conn:
            row = conn.execute(
                (
                    "SELECT t.id AS t_id, t.status, t.steps_taken, t.decision, t.state, t.error,"
                    " t.updated_at AS t_updated_at,"
                    " m.id, m.seq, m.agent_id, m.entity_id, m.room_id, m.world_id, m.kind,"
                    " m.content, m.dedupe_key, m.metadata, m.created_at, a.character,"
                    " r.world_id AS r_world_id, r.name AS r_name, r.kind AS r_kind,"
                    " r.source AS r_source, r.metadata AS r_metadata,"
                    f" coalesce({entity_name('e')}, 'someone') AS sender"
                    + "".join(f",{part}" for part in parts)
                    + " FROM turns t JOIN memories m ON m.id = t.message_id"
                    " JOIN agents a ON a.id = t.agent_id JOIN rooms r ON r.id = t.room_id"
                    " LEFT JOIN entities e ON e.id = m.entity_id WHERE t.id = %s"
                ).encode(),
                (*params, turn_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"no turn with id {turn_id}")
        turn = TurnRecord(
            id=row["t_id"],
            agent_id=row["agent_id"],
            room_id=row["room_id"],
            message_id=row["id"],
            status=row["status"],
            steps_taken=row["steps_taken"],
            decision=row["decision"],
            state=row["state"],
            error=row["error"],
            updated_at=row["t_updated_at"],
        )
        room = Room(
            id=row["room_id"],
            agent_id=row["agent_id"],
            world_id=row["r_world_id"],
            name=row["r_name"],
            kind=RoomKind(row["r_kind"]),
            source=row["r_source"],
            metadata=row["r_metadata"],
        )
        character = parse_character(row["character"], source=f"agent {row['agent_id']}")
        done = None
        if row.get("done") is not None:
            found = dict(row["done"])
            for stamp in ("started_at", "finished_at"):
                found[stamp] = datetime.fromisoformat(found[stamp])
            done = TurnStep(**found)
        talk = None
        if conversation is not None:
            talk = Conversation(
                recent=_named(row["recent"]),
                people=[Entity(**person) for person in row["people"]],
                relationships=[_relationship(r) for r in row["relationships"]],
            )
        return Scene(
            turn, _memory(row), character, room, row["sender"], done, row.get("unreflected"), talk
        )
