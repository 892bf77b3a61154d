"""What a step knows while it runs: the turn, its message, the agent, and the models."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from carrier_core.agent_settings import get_setting
from carrier_core.models import Embeddings, Generation, ModelError, ModelRequest, ModelSet
from carrier_core.models.ledger import check_budget, ledger_rows, record_call
from carrier_core.services import ServiceError
from carrier_core.store.turns import StepRecord, StepUsage, TurnRecord, TurnStep

_R = TypeVar("_R", Generation, Embeddings)
_T = TypeVar("_T")

if TYPE_CHECKING:
    from carrier_core.character import Character
    from carrier_core.memory import Memory
    from carrier_core.plugin import Plugins
    from carrier_core.runtime import Runtime
    from carrier_core.store.memories import NamedMessage
    from carrier_core.store.turns import Scene
    from carrier_core.store.usage import ModelCall
    from carrier_core.world import Entity, Room


def _read_with(scene: Scene) -> dict[str, Any]:
    """What a step's scene read besides the turn, under the keys `TurnContext.once` knows it
    by: the decide step's conversation, the evaluate step's unreflected count."""
    found: dict[str, Any] = {}
    if scene.unreflected is not None:
        found["unreflected"] = scene.unreflected
    if scene.conversation is not None:
        found["recent"] = scene.conversation.recent
        found["people"] = scene.conversation.people
        found["relationships"] = scene.conversation.relationships
    return found


def json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """Values as JSON can store them: what JSON cannot hold is kept as its text."""
    safe: dict[str, Any] = json.loads(json.dumps(values, default=str))
    return safe


@dataclass
class State:
    """The providers' output for one decide step: prompt sections and named values."""

    texts: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    #: Providers that failed or timed out, with the reason.
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class TurnContext:
    runtime: Runtime
    turn: TurnRecord
    character: Character
    message: Memory
    room: Room
    sender: str
    plugins: Plugins
    models: ModelSet
    state: State = field(default_factory=State)
    #: Model calls and tokens of the running step, recorded with it.
    usage: StepUsage = field(default_factory=StepUsage)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The step running, as the usage ledger names it (decide, act, evaluate).
    step: str = ""
    #: Providers run in threads and may call models: usage is added under this lock.
    _usage_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Ledger rows of the step's model calls, written with its record.
    calls: list[ModelCall] = field(default_factory=list)
    _once: dict[str, Any] = field(default_factory=dict, repr=False)
    _once_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: For an act step: the record of the action it was asked to run, if that ran already.
    done: TurnStep | None = None

    @classmethod
    def load(
        cls,
        runtime: Runtime,
        turn_id: Any,
        step: str = "",
        *,
        act_index: int | None = None,
        unreflected: bool = False,
        conversation: bool = False,
    ) -> TurnContext:
        """The step's context, read in one statement; with `act_index`, also whether that
        action of the latest decision ran already (`done`); with `unreflected`, the room's
        messages since its reflection bookmark (`unreflected_messages`); with
        `conversation`, what the providers show of it (`recent_messages`, `people`,
        `relationships`)."""
        scene = runtime.store.turn_scene(
            turn_id,
            act_index=act_index,
            unreflected=unreflected,
            conversation=runtime.settings.recent_messages if conversation else None,
        )
        return cls(
            runtime=runtime,
            turn=scene.turn,
            character=scene.character,
            message=scene.message,
            room=scene.room,
            sender=scene.sender,
            plugins=runtime.plugins_for(scene.character),
            models=runtime.models_for(scene.character),
            state=State(values=dict(scene.turn.state)),
            step=step,
            done=scene.done,
            _once=_read_with(scene),
        )

    def for_step(self, step: str) -> TurnContext:
        """This context for a step run within this one (a decide step's simple reply):
        the same scene and state, with usage and a record of its own."""
        return replace(
            self,
            step=step,
            usage=StepUsage(),
            started_at=datetime.now(UTC),
            calls=[],
            _usage_lock=threading.Lock(),
            done=None,
        )

    @property
    def agent_name(self) -> str:
        return self.character.name

    def get_setting(self, key: str) -> Any:
        """The agent's setting `key` as ElizaOS's `runtime.getSetting` finds it: the
        character's `secrets`, then `settings`, then `settings.secrets`, then the process
        environment (`carrier_core.agent_settings`). A secret's value is read from the
        secret store; None when the key is nowhere."""
        agent_id = self.turn.agent_id
        return get_setting(self.character, key, lambda: self.runtime.secrets.get(agent_id))

    def world_setting(self, key: str) -> Any:
        """A setting a plugin declared (`Plugin.settings`) as the room's world has it, set
        by the world's owner (UPDATE_SETTINGS); where the world has none (or the room is in
        no world), the agent's own `get_setting(key)`. A secret is never in a world."""
        if self.room.world_id is not None:
            stored = self.runtime.store.world(self.room.world_id).metadata.get("settings")
            if isinstance(stored, dict) and stored.get(key) is not None:
                return stored[key]
        return self.get_setting(key)

    def service(self, name: str) -> Any:
        """A service of the agent's plugins by name, started in this runtime on first use
        (`carrier_core.services`); `ServiceError` if none of them declares it."""
        service = self.plugins.service(name)
        if service is None:
            raise ServiceError(f"no service named {name!r} in the plugins of {self.agent_name}")
        return self.runtime.services.get(service)

    def generate(self, request: ModelRequest) -> Generation:
        """Call a text model for this step, counting the call and its tokens for the step
        and the usage ledger. Over the agent's daily budget, no call is made."""
        model = self.models.text(request.role)
        generation = self._call(
            model, request.role.value, request.task, lambda: model.generate(request)
        )
        with self._usage_lock:
            self.usage.model_calls += 1
            self.usage.input_tokens += generation.usage.input_tokens
            self.usage.output_tokens += generation.usage.output_tokens
            if generation.fallbacks:
                self.usage.detail.setdefault("fallbacks", []).extend(generation.fallbacks)
            if generation.trimmed:
                self.usage.detail["prompt_trimmed_after_overflow"] = True
        return generation

    def embed(self, texts: list[str]) -> Embeddings:
        """Call the embedding model; counted apart from text generations, which cost more."""
        model = self.models.embedding
        embeddings = self._call(model, "embedding", None, lambda: model.embed(texts))
        with self._usage_lock:
            self.usage.detail["embedding_calls"] = self.usage.detail.get("embedding_calls", 0) + 1
            self.usage.input_tokens += embeddings.usage.input_tokens
        return embeddings

    def _call(self, model: Any, role: str, task: str | None, call: Callable[[], _R]) -> _R:
        """Make a model call within the budget. Its ledger rows are written with the
        step's record; a failed call's rows at once, as its step may never be recorded."""
        store = self.runtime.store
        check_budget(store, self.turn.agent_id, self.runtime.settings.daily_budget_usd)
        where = {"role": role, "model": model, "task": task, "turn_id": self.turn.id}
        started = time.monotonic()
        try:
            result = call()
        except ModelError as exc:
            record_call(
                store,
                self.turn.agent_id,
                **where,
                started=started,
                error=exc,
                step=self.step,
            )
            raise
        rows = ledger_rows(
            self.turn.agent_id,
            **where,
            started=started,
            result=result,
            step=self.step,
        )
        with self._usage_lock:
            self.calls.extend(rows)
        return result

    def write_calls(self) -> None:
        """Write the ledger rows of the step's calls so far now, not with its record: for
        calls whose result is stored before the step ends (an image's description), which
        a retried step does not make again, so their cost is never lost with the step."""
        with self._usage_lock:
            calls, self.calls = self.calls, []
        if calls:
            self.runtime.store.record_model_calls(calls)

    def query_embedding(self) -> list[float]:
        """The latest message's embedding, made once per turn. The decide step stores
        it on the message together with its decision."""
        if self.message.embedding is None:
            self.message.embedding = self.embed([self.message.content.text]).vectors[0]
        return self.message.embedding

    def once(self, key: str, make: Callable[[], _T]) -> _T:
        """`make()`, made once per step however many providers (in threads) ask: for reads
        several providers share, such as the decide step's one statement of searches. What
        the step's scene read already is there from the start (`_read_with`)."""
        with self._once_lock:
            if key not in self._once:
                self._once[key] = make()
            found: _T = self._once[key]
            return found

    def recent_messages(self) -> list[NamedMessage]:
        """The conversation as it stood for this turn's message, oldest first, with speaker
        names: read once per step (the conversation's provider, the attachments' provider
        and the describing of images all need it), and a description made in the step is
        kept on its message here."""
        return self.once(
            "recent",
            lambda: self.runtime.store.recent_messages(
                self.room.id, self.runtime.settings.recent_messages, through=self.message
            ),
        )

    def people(self) -> list[Entity]:
        """The room's members, in the order they joined."""
        return self.once("people", lambda: self.runtime.store.participants(self.room.id))

    def relationships(self) -> list[tuple[str, str, list[str]]]:
        """What the agent knows of how the sender relates to others, newest first:
        (source, target, tags)."""
        return self.once(
            "relationships",
            lambda: self.runtime.store.relationships_of(
                self.message.agent_id, self.message.entity_id
            ),
        )

    def unreflected_messages(self) -> int:
        """Messages from others in the room since its reflection bookmark."""
        return self.once(
            "unreflected",
            lambda: self.runtime.store.messages_since_reflection(self.room.id)[0],
        )

    def attachment_messages(self) -> list[NamedMessage]:
        """The recent messages that carry attachments."""
        return [m for m in self.recent_messages() if m.memory.content.attachments]

    def action_results(self) -> list[dict[str, Any]]:
        """What the turn's actions did so far, in order (earlier decide steps' and this
        step's earlier ones): each `{"action", "status", "text"?, "values"?, "data"?,
        "error"?, "reply_ids", ...}` as its step recorded it. Read when asked: one query."""
        steps = self.runtime.store.turn_steps(self.turn.id)
        return [
            {"action": s.step.removeprefix("act:"), "status": s.status, **s.detail}
            for s in steps
            if s.step.startswith("act:")
        ]

    def step_record(
        self, step: str, status: str = "ok", *, key: str | None = None, **detail: Any
    ) -> StepRecord:
        """This step as a row of the turn's history, with its model usage and ledger rows."""
        self.usage.detail = json_safe({**self.usage.detail, **detail})
        with self._usage_lock:
            calls, self.calls = tuple(self.calls), []
        return StepRecord(step, status, self.started_at, self.usage, key, calls)

    def record_step(
        self, step: str, status: str = "ok", *, key: str | None = None, **detail: Any
    ) -> None:
        """Write this step into the turn's history."""
        self.runtime.store.record_step(
            self.turn.id, self.step_record(step, status, key=key, **detail)
        )
