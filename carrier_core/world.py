"""Who and where: entities, the rooms they talk in, worlds that group rooms.

Ids are derived from the names the outside world uses (a user id on a
platform, a room key), scoped to the agent, so that any stateless step can
find the same row again without a lookup table.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, Field

from carrier_core.character import CARRIER_NAMESPACE

#: The tenant of `carrier chat` and `carrier dev`, and of agents stored before tenants existed
#: (migration 0003 creates it).
LOCAL_TENANT_ID = uuid.uuid5(CARRIER_NAMESPACE, "tenant:local")


class RoomKind(StrEnum):
    #: A direct conversation: the agent always answers.
    DM = "dm"
    #: Several people: the agent decides whether it should answer at all.
    GROUP = "group"


def entity_id_for(agent_id: uuid.UUID, source: str, external_id: str) -> uuid.UUID:
    return uuid.uuid5(CARRIER_NAMESPACE, f"entity:{agent_id}:{source}:{external_id}")


#: What starts the key of every room (and world) an end user names: `user:<subject>:`, the
#: subject percent-encoded (`carrier_core.api.posting.scoped_key`), so it holds no colon.
END_USER_PREFIX = "user:"


def end_user_scope(key: str) -> str:
    """The start shared by the keys of the end user's rooms this key is one of
    (`user:<subject>:`), or "" for a room of the tenant's own. An end user's conversation
    reaches only rooms of its own scope: it cannot make the agent post, or even show it,
    where another end user talks."""
    if not key.startswith(END_USER_PREFIX):
        return ""
    end = key.find(":", len(END_USER_PREFIX))
    return key[: end + 1] if end > len(END_USER_PREFIX) else ""


def end_user_of(key: str) -> str | None:
    """The subject of the end user whose room (or world) this key names; None for the
    tenant's own."""
    scope = end_user_scope(key)
    return unquote(scope[len(END_USER_PREFIX) : -1]) if scope else None


def sender_key(room_key: str, sender: str) -> str:
    """Who a message's sender is, for the room it is said in. In an end user's room,
    anyone but that end user (a task's sender, a tenant's operator posting with an API key)
    is someone of that end user's only, so nothing learned of them there (facts, names,
    relationships) reaches another end user's rooms. Elsewhere, and for the end user in
    their own rooms, the sender as named."""
    owner = end_user_of(room_key)
    return sender if owner is None or sender == owner else end_user_scope(room_key) + sender


def room_id_for(agent_id: uuid.UUID, source: str, external_id: str) -> uuid.UUID:
    return uuid.uuid5(CARRIER_NAMESPACE, f"room:{agent_id}:{source}:{external_id}")


def world_id_for(agent_id: uuid.UUID, source: str, external_id: str) -> uuid.UUID:
    return uuid.uuid5(CARRIER_NAMESPACE, f"world:{agent_id}:{source}:{external_id}")


class Entity(BaseModel):
    id: uuid.UUID
    agent_id: uuid.UUID
    names: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        """The name they asked to be called in conversation, else their newest display name."""
        asked = self.metadata.get("name")
        if isinstance(asked, str) and asked:
            return asked
        return self.names[0] if self.names else "someone"


class World(BaseModel):
    id: uuid.UUID
    agent_id: uuid.UUID
    name: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class Room(BaseModel):
    id: uuid.UUID
    agent_id: uuid.UUID
    world_id: uuid.UUID | None = None
    name: str
    kind: RoomKind = RoomKind.DM
    source: str = "api"
    metadata: dict[str, Any] = Field(default_factory=dict)


class Participant(BaseModel):
    room_id: uuid.UUID
    entity_id: uuid.UUID


class Relationship(BaseModel):
    agent_id: uuid.UUID
    source_entity_id: uuid.UUID
    target_entity_id: uuid.UUID
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
