"""What the server says over the WebSocket: JSON frames, one `type` each.

The turn's frames are built by the step that has the news, from what it just
stored, so every process that runs a step (a Lambda in the cloud, the emulator
locally) says the same thing. Pushes are at least once: a retried step pushes its
frames again, and replies carry their message id for clients to drop repeats.
See `carrier_core.api.websocket` for the whole protocol.

Each frame that reports one of ElizaOS's events names it in `event` (`carrier_core.events`),
as webhook payloads do: `accepted` MESSAGE_RECEIVED, `reply` MESSAGE_SENT, an action's
`turn.progress` ACTION_COMPLETED, `turn.done` and `turn.failed` RUN_ENDED. The decided
`turn.progress` and `error` frames have no ElizaOS counterpart, so no `event`.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from carrier_core.events import EventType

if TYPE_CHECKING:
    from carrier_core.memory import Memory
    from carrier_core.runtime import Runtime
    from carrier_core.turn.act import Acted
    from carrier_core.turn.approval import Approval
    from carrier_core.turn.decide import Decided

#: A frame as sent: JSON-ready (ids are strings).
Frame = dict[str, Any]


def encode(frame: Frame) -> bytes:
    return json.dumps(frame, separators=(",", ":")).encode()


def accepted_frame(
    message_id: uuid.UUID, turn_id: uuid.UUID, status: str, client_message_id: str | None
) -> Frame:
    """The message is stored and its turn queued (or, posted again, already answered)."""
    return {
        "type": "accepted",
        "event": EventType.MESSAGE_RECEIVED,
        "message_id": str(message_id),
        "turn_id": str(turn_id),
        "status": status,
        "client_message_id": client_message_id,
    }


def error_frame(code: str, message: str, client_message_id: str | None = None) -> Frame:
    """A frame that was not taken; `code` is one of the REST API's error codes."""
    frame: Frame = {"type": "error", "code": code, "message": message}
    if client_message_id is not None:
        frame["client_message_id"] = client_message_id
    return frame


def decided_frames(turn_id: uuid.UUID, decided: Decided) -> list[Frame]:
    """After a decide step: what the agent chose to do (an empty list when it stays silent)."""
    return [
        {
            "type": "turn.progress",
            "turn_id": str(turn_id),
            "step": "decided",
            "decide_step": decided.step,
            "respond": decided.respond,
            "actions": decided.chosen,
        }
    ]


def reply_frame(turn_id: uuid.UUID, memory: Memory) -> Frame:
    """A message the agent said in a turn, for the connections of the room it is in."""
    return {
        "type": "reply",
        "event": EventType.MESSAGE_SENT,
        "turn_id": str(turn_id),
        "id": str(memory.id),
        "text": memory.content.text,
        "actions": memory.content.actions,
        "attachments": memory.content.attachments,
    }


def acted_frames(runtime: Runtime, turn_id: uuid.UUID, acted: Acted) -> list[Frame]:
    """After an action: each reply it stored, then the action's own progress frame. (What
    it sent to other rooms goes to their connections: `sent_frames`.)"""
    frames = [reply_frame(turn_id, runtime.store.memory(i)) for i in acted.reply_ids]
    progress: Frame = {
        "type": "turn.progress",
        "turn_id": str(turn_id),
        "step": "action",
        "action": acted.action,
        "event": EventType.ACTION_COMPLETED,
    }
    if acted.error:
        progress["error"] = acted.error
    frames.append(progress)
    return frames


def sent_frames(runtime: Runtime, turn_id: uuid.UUID, acted: Acted) -> dict[uuid.UUID, list[Frame]]:
    """After an action: the `reply` frames of the messages it sent to other rooms, by the
    room whose connections hear them (the turn's room's hear only its own replies)."""
    frames: dict[uuid.UUID, list[Frame]] = {}
    for sent_id in acted.sent_ids:
        memory = runtime.store.memory(sent_id)
        assert memory.room_id is not None  # a sent message is stored in its room
        frames.setdefault(memory.room_id, []).append(reply_frame(turn_id, memory))
    return frames


def finished_frames(runtime: Runtime, turn_id: uuid.UUID) -> list[Frame]:
    """After the turn ends: done, or failed with its reason, as the store has it; and the
    same for each turn it answered too (coalesced), naming it in `answered_by`."""
    turn = runtime.store.turn(turn_id)
    ended: Frame = (
        {"type": "turn.failed", "error": turn.error}
        if turn.status == "failed"
        else {"type": "turn.done"}
    ) | {"event": EventType.RUN_ENDED}
    frames = [
        {**ended, "turn_id": str(coalesced), "answered_by": str(turn_id)}
        for coalesced in runtime.store.coalesced_into(turn_id)
    ]
    return [*frames, {**ended, "turn_id": str(turn_id)}]


def approval_frames(approval: Approval) -> list[Frame]:
    """An action waits for a person's answer (or, answered or expired, no longer does)."""
    kind = "turn.awaiting_approval" if approval.status == "pending" else "turn.approval"
    return [{"type": kind, "turn_id": str(approval.turn_id), "approval": approval.as_json()}]
