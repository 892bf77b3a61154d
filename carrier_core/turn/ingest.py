"""Ingest: take a message in, remember it, and queue its turn.

Ingest is idempotent by the client's message id: a message delivered twice
(a retried HTTP post, a redelivered queue message) finds the memory and turn
the first delivery made, so it is answered once. The id is the sender's: another
sender's message with the same id is another message. The same sender's id on a
message with another text (or attachments) is refused (`MessageConflict`): the
client reused an id, and answering with the first message would hide that.

Once ingest returns, the message and its turn are in Postgres: that is what
acknowledging a message means. In the same transaction it claims the room's runner
if none holds it (`carrier_core.turn.schedule`); the caller starts the runner it
was given.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from carrier_core.attachments import as_sent, check_attachments
from carrier_core.events import EventType, emit_for
from carrier_core.memory import Content, Memory, MemoryKind
from carrier_core.storable import StorableText, check_storable_json
from carrier_core.store.base import NotFound
from carrier_core.store.runners import Runner
from carrier_core.store.turns import UNFINISHED
from carrier_core.world import (
    Entity,
    Room,
    RoomKind,
    entity_id_for,
    room_id_for,
    sender_key,
    world_id_for,
)

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime


class InvalidMessage(ValueError):
    """A message that cannot be taken in; the text names the field and the problem."""


class MessageConflict(InvalidMessage):
    """The client message id names a message already taken from this sender whose
    content differs: sending it again cannot make it fit."""

    def __init__(self, client_message_id: str, differs: list[str]):
        self.client_message_id = client_message_id
        #: The fields that differ from the stored message's (text, attachments).
        self.differs = differs
        super().__init__(
            f"client_message_id {client_message_id!r} is already the id of a message from"
            f" this sender that differs in its {self.what}"
        )

    @property
    def what(self) -> str:
        """What differs, for a sentence: "text", or "text and attachments"."""
        return " and ".join(self.differs)


class IncomingMessage(BaseModel):
    """A message from the outside world, in the names that world uses."""

    model_config = ConfigDict(extra="forbid")

    agent_id: uuid.UUID
    #: Clients name rooms (and worlds) in at most 200 characters; an end user's are stored
    #: scoped to their subject (`carrier_core.api.posting.scoped_key`): up to 200
    #: characters of it, percent-encoded (at most 12 characters each), hence the room to
    #: spare.
    room: StorableText = Field(min_length=1, max_length=3000)
    sender: StorableText = Field(min_length=1, max_length=200)
    sender_name: StorableText | None = Field(default=None, max_length=200)
    text: StorableText
    room_kind: RoomKind = RoomKind.DM
    source: StorableText = Field(default="api", min_length=1, max_length=50)
    world: StorableText | None = Field(default=None, max_length=3000)
    #: The sender's own id for this message: the same id twice is one message.
    client_message_id: StorableText | None = Field(default=None, min_length=1, max_length=200)
    attachments: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("text")
    @classmethod
    def _has_text(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must not be empty")
        return text

    @field_validator("attachments")
    @classmethod
    def _storable_attachments(cls, attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            check_storable_json(attachments)
        except TypeError as exc:
            raise ValueError(f"must be JSON: {exc}") from None
        check_attachments(attachments)
        return attachments


@dataclass(frozen=True)
class Ingested:
    agent_id: uuid.UUID
    turn_id: uuid.UUID
    message_id: uuid.UUID
    #: False when this delivery repeated an earlier one.
    created: bool
    #: The turn's status after this delivery (queued, unless it was delivered before).
    status: str = "queued"
    #: The room's runner, claimed by this delivery: the caller must start it.
    runner: Runner | None = None


def validate_message(data: IncomingMessage | dict[str, Any], max_chars: int) -> IncomingMessage:
    try:
        message = (
            data if isinstance(data, IncomingMessage) else IncomingMessage.model_validate(data)
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidMessage(f"invalid message: {problems}") from None
    if len(message.text) > max_chars:
        raise InvalidMessage(
            f"invalid message: text: {len(message.text)} characters, the limit is {max_chars}"
        )
    return message


def _check_same(stored: Memory, message: IncomingMessage) -> None:
    """Raise `MessageConflict` unless `message` says what the stored message of its client
    id says (`stored` is found by that id, which is scoped to the sender)."""
    differs = [
        field
        for field, before, now in (
            ("text", stored.content.text, message.text),
            # Descriptions Carrier made since are not the sender's: they do not differ.
            ("attachments", as_sent(stored), message.attachments),
        )
        if before != now
    ]
    if differs:
        assert message.client_message_id is not None  # only a client id finds a stored one
        raise MessageConflict(message.client_message_id, differs)


def _received(message: Memory, joined: bool) -> list[tuple[EventType, dict[str, Any]]]:
    """The events of a message taken in: its sender joining the room first, if it did."""
    received = {
        "message_id": message.id,
        "entity_id": message.entity_id,
        "text": message.content.text,
        "source": message.content.source,
    }
    joined_room = {"entity_id": message.entity_id, "room_id": message.room_id}
    return [
        *([(EventType.ENTITY_JOINED, joined_room)] if joined else []),
        (EventType.MESSAGE_RECEIVED, received),
    ]


def ingest(
    runtime: Runtime, data: IncomingMessage | dict[str, Any], *, take_expired: bool = False
) -> Ingested:
    """Store the message and its turn, and claim the room's runner if it is free
    (`take_expired`: or if its lease ran out; see `Store.claim_room`)."""
    started_at = datetime.now(UTC)
    message = validate_message(data, runtime.settings.max_message_chars)
    agent_id = message.agent_id
    entity = Entity(
        id=entity_id_for(agent_id, message.source, sender_key(message.room, message.sender)),
        agent_id=agent_id,
        names=[message.sender_name or message.sender],
    )
    world_id = world_id_for(agent_id, message.source, message.world) if message.world else None
    room = Room(
        id=room_id_for(agent_id, message.source, message.room),
        agent_id=agent_id,
        world_id=world_id,
        name=message.room,
        kind=message.room_kind,
        source=message.source,
    )
    store = runtime.store
    memory = Memory(
        agent_id=agent_id,
        entity_id=entity.id,
        room_id=room.id,
        world_id=world_id,
        kind=MemoryKind.MESSAGE,
        content=Content(text=message.text, source=message.source, attachments=message.attachments),
        # Scoped to the sender: two people's clients may both count from 1.
        dedupe_key=(
            f"client:{entity.id}:{message.client_message_id}" if message.client_message_id else None
        ),
    )
    lease_s = runtime.settings.runner_lease_s
    # One round trip (`Store.accept_message`): the room row is locked before the message
    # takes its place in line (seq), so a room's messages are numbered in the order they
    # commit, and the runner answers them in that order.
    try:
        accepted = store.accept_message(
            entity,
            room,
            message.world,
            memory,
            turn_id=uuid.uuid4(),
            started_at=started_at,
            lease_s=lease_s,
            take_expired=take_expired,
        )
    except psycopg.errors.ForeignKeyViolation:
        raise NotFound(f"no agent with id {agent_id}") from None
    if accepted.turn_id is not None:
        turn_id, turn_created, status = accepted.turn_id, True, "queued"
        runner = (
            None
            if accepted.runner_generation is None
            else Runner(room.id, accepted.runner_generation)
        )
        # Once per message: a redelivery finds its turn and fires nothing.
        emit_for(runtime, turn_id, accepted.plugins, _received(memory, accepted.joined))
    else:
        # Its client id was seen before: the stored message, its turn (queued again if it
        # had failed), and the runner if the turn waits for one.
        with store.atomic():
            # The room first, as every runner locks it before its turns (`carrier_next_turn`):
            # taking the turn's row first could deadlock with a runner at that moment.
            store.lock_room(room.id)
            memory, _ = store.add_memory(memory)
            _check_same(memory, message)
            started = store.start_turn(uuid.uuid4(), memory)
            # A message is stored with its turn, always: this finds it, never makes it.
            turn_id, turn_created, status = started.id, started.created, started.status
            runner = None
            if status in UNFINISHED:
                runner = store.claim_room(room.id, lease_s, take_expired=take_expired)
    return Ingested(
        agent_id=agent_id,
        turn_id=turn_id,
        message_id=memory.id,
        created=turn_created,
        status=status,
        runner=runner,
    )
