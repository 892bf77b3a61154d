"""Agents, and who and where they talk: entities, worlds, rooms, participants and
relationships."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from carrier_core.character import Character, parse_character
from carrier_core.store.base import NotFound, StoreBase, entity_name, where
from carrier_core.world import (
    LOCAL_TENANT_ID,
    Entity,
    Relationship,
    Room,
    RoomKind,
    World,
    end_user_of,
    entity_id_for,
)


class AgentConflict(ValueError):
    """An agent id that another tenant already uses, or a handle the tenant gave to an
    agent of another id."""


class AgentRecord(NamedTuple):
    id: uuid.UUID
    tenant_id: uuid.UUID
    handle: str
    name: str
    created_at: datetime
    updated_at: datetime


class RoomRecord(NamedTuple):
    id: uuid.UUID
    agent_id: uuid.UUID
    name: str
    kind: str
    source: str
    created_at: datetime
    messages: int


def agent_id_in(ref: str | uuid.UUID) -> uuid.UUID | None:
    """The id `ref` spells, or None if it is a handle (a handle is not a UUID)."""
    if isinstance(ref, uuid.UUID):
        return ref
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


def no_agent(ref: str | uuid.UUID) -> NotFound:
    """The error for an agent that is not there (or not the caller's), named as asked."""
    agent_id = agent_id_in(ref)
    return NotFound(f"no agent with id {agent_id}" if agent_id else f"no agent with handle {ref!r}")


_AGENT_COLUMNS = "id, tenant_id, handle, name, created_at, updated_at"


def _people_rows(room: str) -> str:
    """SQL of a room's members, in the order they joined (`joined_at`)."""
    return (
        "SELECT pe.id, pe.agent_id, pe.names, pe.metadata, pp.joined_at FROM participants pp"
        f" JOIN entities pe ON pe.id = pp.entity_id WHERE pp.room_id = {room}"
        " ORDER BY pp.joined_at"
    )


def _relationship_rows(agent: str, entity: str) -> str:
    """SQL of an agent's known relationships of one person, newest first (`LIMIT %s`)."""
    return (
        f"SELECT {entity_name('rs')} AS source,"
        f" coalesce({entity_name('rt')}, rta.name) AS target, rr.tags, rr.updated_at"
        " FROM relationships rr JOIN entities rs ON rs.id = rr.source_entity_id"
        " LEFT JOIN entities rt ON rt.id = rr.target_entity_id"
        " LEFT JOIN agents rta ON rta.id = rr.target_entity_id"
        f" WHERE rr.agent_id = {agent} AND {entity} IN (rr.source_entity_id, rr.target_entity_id)"
        " ORDER BY rr.updated_at DESC LIMIT %s"
    )


#: How many relationships of the sender a prompt shows.
RELATIONSHIPS_SHOWN = 10


def _relationship(row: Any) -> tuple[str, str, list[str]]:
    return (row["source"], row["target"] or "someone", list(row["tags"]))


_ROOM_COLUMNS = "r.id, r.agent_id, r.world_id, r.name, r.kind, r.source, r.metadata"
#: Rooms of the preferred source first, then the most recently spoken in.
_PREFERRED = (
    " ORDER BY (r.source = %(source)s) DESC,"
    " (SELECT max(m.seq) FROM memories m WHERE m.room_id = r.id) DESC NULLS LAST, r.id"
)


#: Direct rooms read to tell whether a name is one person's (someone with more direct rooms
#: than this, all preferred over another's, would hide that other).
_DIRECT_ROOMS_READ = 50


class SeveralPeople(LookupError):
    """More than one person the agent knows answers to a name."""


#: The people the agent knows with their direct rooms, among rooms whose name starts with
#: `%(within)s` (`e`, `r`): where `direct_room` and `reachable` look.
_DIRECT_ROOMS = (
    " FROM entities e JOIN participants p ON p.entity_id = e.id"
    " JOIN rooms r ON r.id = p.room_id AND r.kind = 'dm' AND r.agent_id = e.agent_id"
    " AND starts_with(r.name, %(within)s) WHERE e.agent_id = %(agent)s"
)


def _theirs(agent_id: uuid.UUID, person: uuid.UUID, room: str, source: str) -> bool:
    """Whether a direct room the person is in is theirs: any of the tenant's, and an end
    user's only if the person is that end user (anyone else in it is someone of the end
    user's, `sender_key`: to message them is not to message the end user)."""
    owner = end_user_of(room)
    return owner is None or person == entity_id_for(agent_id, source, owner)


def _room(row: Mapping[str, Any] | None) -> Room | None:
    return None if row is None else Room(**{**row, "kind": RoomKind(row["kind"])})


class AgentStore(StoreBase):
    """Agents of every tenant, and the people, worlds and rooms each meets."""

    def agents(self) -> list[AgentRecord]:
        """Every tenant's agents (the command line's view of a database), by handle."""
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents ORDER BY handle, created_at".encode()
            ).fetchall()
        return [AgentRecord(**row) for row in rows]

    def reset_memory(self, agent_id: uuid.UUID) -> int:
        """Forget what the agent learned by talking: its rooms with their messages and turns,
        its facts, relationships, the people and worlds it met. Its character, knowledge
        documents, webhooks and keys stay. Returns the number of memories deleted."""
        with self.transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM memories WHERE agent_id = %s AND kind NOT IN ('document', 'fragment')",
                (agent_id,),
            ).rowcount
            for table in ("rooms", "relationships", "worlds"):
                conn.execute(f"DELETE FROM {table} WHERE agent_id = %s".encode(), (agent_id,))
            conn.execute(
                "DELETE FROM entities WHERE agent_id = %s AND id <> %s", (agent_id, agent_id)
            )
        return deleted

    # -- agents ---------------------------------------------------------------

    def save_agent(
        self,
        character: Character,
        tenant_id: uuid.UUID = LOCAL_TENANT_ID,
        *,
        handle: str | None = None,
    ) -> uuid.UUID:
        """Store or update an agent of `tenant_id`, found by its handle (the character's
        unless given), else by the character's id; a stored agent keeps its handle.

        Raises `AgentConflict` if the id is another tenant's (a character file's `id` must
        not reach across tenants), or if the handle is the tenant's agent of another id."""
        handle = handle or character.handle
        with self.connection() as conn:
            row = conn.execute(
                "SELECT id FROM agents WHERE tenant_id = %s AND handle = %s", (tenant_id, handle)
            ).fetchone()
            agent_id = character.agent_id if row is None else row["id"]
            if character.id is not None and character.id != agent_id:
                raise AgentConflict(
                    f"handle {handle!r} is agent {agent_id}, not the character's id {character.id}"
                )
            try:
                changed = conn.execute(
                    "INSERT INTO agents (id, tenant_id, handle, name, character)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                    " character = excluded.character, updated_at = now()"
                    " WHERE agents.tenant_id = excluded.tenant_id"
                    " AND agents.character IS DISTINCT FROM excluded.character",
                    (agent_id, tenant_id, handle, character.name, Jsonb(character.to_document())),
                ).rowcount
            except psycopg.errors.UniqueViolation:
                # Another writer gave the handle to a new agent since it was looked up.
                raise AgentConflict(f"handle {handle!r} was just taken by another agent") from None
            if not changed:
                row = conn.execute(
                    "SELECT tenant_id FROM agents WHERE id = %s", (agent_id,)
                ).fetchone()
                if row is not None and row["tenant_id"] != tenant_id:
                    raise AgentConflict(f"agent id {agent_id} belongs to another tenant")
        return agent_id

    def agent_record(self, agent_id: uuid.UUID) -> AgentRecord:
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents WHERE id = %s".encode(), (agent_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no agent with id {agent_id}")
        return AgentRecord(**row)

    def tenant_agent(self, tenant_id: uuid.UUID, ref: str | uuid.UUID) -> AgentRecord:
        """The tenant's agent with this id or handle; `NotFound` if none (another tenant's
        agent is not found either, so ids cannot be probed across tenants)."""
        agent_id = agent_id_in(ref)
        missing = no_agent(ref)
        try:
            if agent_id is None:
                return self.agent_by_handle(tenant_id, str(ref))
            agent = self.agent_record(agent_id)
        except NotFound:
            raise missing from None
        if agent.tenant_id != tenant_id:
            raise missing
        return agent

    def agent_by_handle(self, tenant_id: uuid.UUID, handle: str) -> AgentRecord:
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents"
                " WHERE tenant_id = %s AND handle = %s".encode(),
                (tenant_id, handle),
            ).fetchone()
        if row is None:
            raise NotFound(f"no agent with handle {handle!r}")
        return AgentRecord(**row)

    def tenant_agents(
        self,
        tenant_id: uuid.UUID,
        *,
        limit: int,
        after: uuid.UUID | None = None,
        only: frozenset[uuid.UUID] | None = None,
    ) -> list[AgentRecord]:
        """A page of a tenant's agents in id order (keyset pagination: `after` the last id)."""
        filters, params = where(
            ("tenant_id = %s", tenant_id),
            ("id > %s", after),
            ("id = ANY(%s)", None if only is None else list(only)),
        )
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_AGENT_COLUMNS} FROM agents"
                f" WHERE {filters} ORDER BY id LIMIT %s".encode(),
                [*params, limit],
            ).fetchall()
        return [AgentRecord(**row) for row in rows]

    def delete_agent(self, agent_id: uuid.UUID) -> bool:
        """Delete an agent and, by cascade, its rooms, memories, turns and hooks."""
        with self.connection() as conn:
            return conn.execute("DELETE FROM agents WHERE id = %s", (agent_id,)).rowcount > 0

    def character(self, agent_id: uuid.UUID) -> Character:
        with self.connection() as conn:
            row = conn.execute("SELECT character FROM agents WHERE id = %s", (agent_id,)).fetchone()
        if row is None:
            raise NotFound(f"no agent with id {agent_id}")
        return parse_character(row["character"], source=f"agent {agent_id}")

    # -- who and where --------------------------------------------------------

    def lock_room(self, room_id: uuid.UUID) -> None:
        """Lock the room's row until the surrounding transaction ends (`atomic`): what
        touches a room's turns locks the room first, so no two of them deadlock."""
        with self.connection() as conn:
            conn.execute("SELECT id FROM rooms WHERE id = %s FOR UPDATE", (room_id,))

    def set_room_metadata(self, room_id: uuid.UUID, key: str, value: Any) -> None:
        """Set one key of a room's metadata (None removes it), leaving the others as they are."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE rooms SET metadata = CASE WHEN %(value)s::jsonb IS NULL"
                " THEN metadata - %(key)s ELSE jsonb_set(metadata, ARRAY[%(key)s], %(value)s)"
                " END WHERE id = %(id)s",
                {"id": room_id, "key": key, "value": None if value is None else Jsonb(value)},
            )

    def room(self, room_id: uuid.UUID) -> Room:
        with self.connection() as conn:
            row = conn.execute(
                "SELECT id, agent_id, world_id, name, kind, source, metadata FROM rooms"
                " WHERE id = %s",
                (room_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no room with id {room_id}")
        return Room(**{**row, "kind": RoomKind(row["kind"])})

    def agent_rooms(
        self,
        agent_id: uuid.UUID,
        *,
        limit: int,
        after: uuid.UUID | None = None,
        room_id: uuid.UUID | None = None,
    ) -> list[RoomRecord]:
        """A page of an agent's rooms in id order (or the one room), with message counts."""
        filters, params = where(
            ("r.agent_id = %s", agent_id), ("r.id > %s", after), ("r.id = %s", room_id)
        )
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT r.id, r.agent_id, r.name, r.kind, r.source, r.created_at,"
                " (SELECT count(*) FROM memories m WHERE m.room_id = r.id"
                " AND m.kind = 'message') AS messages FROM rooms r"
                f" WHERE {filters} ORDER BY r.id LIMIT %s".encode(),
                [*params, limit],
            ).fetchall()
        return [RoomRecord(**row) for row in rows]

    def delete_room(self, room_id: uuid.UUID) -> bool:
        """Forget a room: its messages and turns go with it (facts about people stay)."""
        with self.connection() as conn:
            return conn.execute("DELETE FROM rooms WHERE id = %s", (room_id,)).rowcount > 0

    def room_named(
        self, agent_id: uuid.UUID, name: str, prefer_source: str, within: str = ""
    ) -> Room | None:
        """The agent's room with this name (any case) among those whose name starts with
        `within`, or None; of several, the one of `prefer_source`, then the most recently
        spoken in."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_ROOM_COLUMNS} FROM rooms r WHERE r.agent_id = %(agent)s"
                " AND lower(r.name) = lower(%(name)s) AND starts_with(r.name, %(within)s)"
                f"{_PREFERRED} LIMIT 1",
                {"agent": agent_id, "name": name, "source": prefer_source, "within": within},
            ).fetchone()
        return _room(row)

    def direct_room(
        self, agent_id: uuid.UUID, person: str, prefer_source: str, within: str = ""
    ) -> Room | None:
        """The direct room with the agent, among those whose name starts with `within`, of
        someone it knows by this name (any case) or id, or None; of their several, as
        `room_named` chooses. Raises `SeveralPeople` when more than one person answers to
        the name: a name is what a sender calls themself, so it picks no one of several."""
        with self.connection() as conn:
            found = conn.execute(
                f"SELECT {_ROOM_COLUMNS}, e.id AS person{_DIRECT_ROOMS} AND (e.id::text = %(name)s"
                " OR lower(e.metadata->>'name') = lower(%(name)s)"
                " OR lower(%(name)s) = ANY(SELECT lower(n) FROM unnest(e.names) n))"
                f"{_PREFERRED} LIMIT %(most)s",
                {
                    "agent": agent_id,
                    "name": person,
                    "source": prefer_source,
                    "within": within,
                    "most": _DIRECT_ROOMS_READ,
                },
            ).fetchall()
        rows = [
            row for row in found if _theirs(agent_id, row["person"], row["name"], row["source"])
        ]
        if len({row["person"] for row in rows}) > 1:
            raise SeveralPeople(f"more than one person is called {person!r}")
        return _room({k: v for k, v in rows[0].items() if k != "person"} if rows else None)

    def reachable(
        self, agent_id: uuid.UUID, prefer_source: str, shown: int, within: str = ""
    ) -> tuple[list[str], list[str]]:
        """The names of the agent's group rooms and of the people it has a direct room
        with, among the rooms whose name starts with `within`, at most `shown` of each,
        ordered as `room_named` chooses."""
        values = {"agent": agent_id, "source": prefer_source, "shown": shown, "within": within}
        with self.connection() as conn:
            rooms = conn.execute(
                "SELECT r.name FROM rooms r WHERE r.agent_id = %(agent)s AND r.kind = 'group'"
                f" AND starts_with(r.name, %(within)s){_PREFERRED} LIMIT %(shown)s",
                values,
            ).fetchall()
            people = conn.execute(
                "SELECT coalesce(e.metadata->>'name', e.names[1]) AS person_name,"
                f" e.id AS person, r.name, r.source{_DIRECT_ROOMS}{_PREFERRED} LIMIT %(most)s",
                {**values, "most": _DIRECT_ROOMS_READ},
            ).fetchall()
        names = [
            p["person_name"]
            for p in people
            if _theirs(agent_id, p["person"], p["name"], p["source"])
        ]
        return [r["name"] for r in rooms], list(dict.fromkeys(names))[:shown]

    def participants(self, room_id: uuid.UUID) -> list[Entity]:
        with self.connection() as conn:
            rows = conn.execute(_people_rows("%s"), (room_id,)).fetchall()
        return [Entity(**row) for row in rows]

    def save_relationship(self, relationship: Relationship) -> None:
        with self.connection() as conn:
            conn.execute(
                "INSERT INTO relationships (agent_id, source_entity_id, target_entity_id, tags,"
                " metadata) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (agent_id, source_entity_id, target_entity_id) DO UPDATE SET"
                " tags = ARRAY(SELECT DISTINCT unnest(relationships.tags || excluded.tags)),"
                " metadata = relationships.metadata || excluded.metadata, updated_at = now()",
                (
                    relationship.agent_id,
                    relationship.source_entity_id,
                    relationship.target_entity_id,
                    relationship.tags,
                    Jsonb(relationship.metadata),
                ),
            )

    def world(self, world_id: uuid.UUID) -> World:
        with self.connection() as conn:
            row = conn.execute(
                "SELECT id, agent_id, name, metadata FROM worlds WHERE id = %s", (world_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no world with id {world_id}")
        return World(**row)

    def set_world_role(self, world_id: uuid.UUID, entity_id: uuid.UUID, role: str) -> None:
        with self.connection() as conn:
            conn.execute(
                "UPDATE worlds SET metadata = jsonb_set(metadata, '{roles}',"
                " coalesce(metadata->'roles', '{}') || jsonb_build_object(%s::text, %s::text))"
                " WHERE id = %s",
                (str(entity_id), role, world_id),
            )

    def set_world_settings(self, world_id: uuid.UUID, values: dict[str, Any]) -> None:
        """Set some of a world's settings (its metadata's `settings`), keeping the others."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE worlds SET metadata = jsonb_set(metadata, '{settings}',"
                " coalesce(metadata->'settings', '{}') || %s) WHERE id = %s",
                (Jsonb(values), world_id),
            )

    def update_entity_metadata(self, entity_id: uuid.UUID, fields: dict[str, Any]) -> None:
        """Merge fields into what the agent knows of someone (ElizaOS's UPDATE_ENTITY)."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE entities SET metadata = metadata || %s WHERE id = %s",
                (Jsonb(fields), entity_id),
            )

    def name_entity(self, entity_id: uuid.UUID, name: str) -> None:
        """Call someone by the name they gave in conversation ("my name is Grace"), whatever
        display name their messages come with."""
        with self.connection() as conn:
            conn.execute(
                "UPDATE entities SET metadata = metadata || jsonb_build_object('name', %s::text)"
                " WHERE id = %s",
                (name, entity_id),
            )

    def relationships_of(
        self, agent_id: uuid.UUID, entity_id: uuid.UUID, limit: int = RELATIONSHIPS_SHOWN
    ) -> list[tuple[str, str, list[str]]]:
        """The agent's known relationships of one person, newest first: (source's name,
        target's name, tags)."""
        with self.connection() as conn:
            rows = conn.execute(
                _relationship_rows("%s", "%s"), (agent_id, entity_id, limit)
            ).fetchall()
        return [_relationship(row) for row in rows]

    def relationships(self, agent_id: uuid.UUID) -> list[Relationship]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT agent_id, source_entity_id, target_entity_id, tags, metadata"
                " FROM relationships WHERE agent_id = %s",
                (agent_id,),
            ).fetchall()
        return [Relationship(**row) for row in rows]
