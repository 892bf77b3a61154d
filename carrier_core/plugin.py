"""What a plugin can add to an agent: actions, providers, evaluators, models, event
handlers (`carrier_core.events`), services (`carrier_core.services`) and an `init` hook.

Everything the runtime must know about a particular extension is declared on it here
(an action that stays silent, a provider that is dynamic or private and how its prompt
section is cut, a model provider's prices and context windows), never in the core's
own lists. Plugin authors import from `carrier_core.sdk`.

Plugins are found through the Python entry-point group `carrier.plugins`
(plus `module:attribute` paths), by the names in a character's `plugins`
list. ElizaOS characters name npm packages there; a name we cannot find is
reported and skipped, so those files still load and talk.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal

from carrier_core.events import EventHandler, EventType, check_events

if TYPE_CHECKING:
    from carrier_core.character import Character
    from carrier_core.config import Settings
    from carrier_core.decision import Decision
    from carrier_core.models.base import ModelSet
    from carrier_core.runtime import Runtime
    from carrier_core.services import Service
    from carrier_core.tasks.workers import TaskWorker
    from carrier_core.turn.context import TurnContext

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "carrier.plugins"

#: `factory(character)` or `factory(character, settings)`, giving a `ModelSet`.
ModelFactory = Callable[..., "ModelSet"]


def _always(ctx: TurnContext) -> bool:
    return True


@dataclass(frozen=True)
class OutgoingMessage:
    """A message an action sends to another room of its agent (SEND_MESSAGE): stored there
    as the agent's message, pushed to that room's listeners and delivered to its webhooks,
    as a reply is in the turn's own room."""

    room_id: uuid.UUID
    text: str


@dataclass(frozen=True)
class ActionResult:
    """What an action did. Its `text`, `values`, `data` and `error` are kept in the turn's
    history and shown to the turn's next decide step and later actions (ACTION_STATE)."""

    #: Messages the agent says, stored as reply memories in order.
    replies: list[str] = field(default_factory=list)
    #: Ask for another decide step in this turn (bounded by `max_steps`).
    continue_turn: bool = False
    #: What happened, in a sentence for the model ("Found 3 flights to Oslo.").
    text: str = ""
    #: Named values for later steps of the turn (ElizaOS's `ActionResult.values`).
    values: dict[str, Any] = field(default_factory=dict)
    #: Anything else worth keeping, for code rather than the model.
    data: dict[str, Any] = field(default_factory=dict)
    #: Media sent with the replies, in ElizaOS's `Media` shape (`url`, `title`,
    #: `contentType`, ...), stored on the last reply: attachments need a reply to go with.
    attachments: list[dict[str, Any]] = field(default_factory=list)
    #: Why the action did not succeed (an unreachable room, a request its sender may not
    #: make); None when it did. The step is recorded as an error with this reason; the
    #: replies are said as usual, so the handler decides who is told.
    error: str | None = None
    #: Messages for other rooms of the agent, stored there in order after the replies.
    sent: list[OutgoingMessage] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Action:
    """Something the agent can do when the decide step picks it by name."""

    name: str
    description: str
    handler: Callable[[TurnContext, Decision], ActionResult]
    validate: Callable[[TurnContext], bool] = _always
    similes: tuple[str, ...] = ()
    #: (what someone says, what the agent answers) pairs that show when the action fits;
    #: the decide prompt shows the first two under the action.
    examples: tuple[tuple[str, str], ...] = ()
    #: Run only once a person approves (`carrier_core.turn.approval`): the turn waits.
    needs_approval: bool = False
    #: Neither speaks nor does anything the user sees (IGNORE, NONE, CONTINUE): choosing
    #: only silent actions in a conversation that must be answered still adds REPLY.
    silent: bool = False
    #: Its handler only says the decided text, with no model call and nothing else done
    #: (REPLY). Chosen alone, with a text, it is a simple reply: the decide step runs it
    #: and stores the reply in its own statement, and no act step follows (ElizaOS, too,
    #: answers a simple response without processing actions).
    simple: bool = False

    def fits(self, ctx: TurnContext) -> bool:
        """Whether `validate` says yes here; one that raises says no, and is logged (the
        act step, which records why it failed, calls `validate` itself)."""
        try:
            return bool(self.validate(ctx))
        except Exception:
            log.warning("action %s: its validate raised", self.name, exc_info=True)
            return False


@dataclass(frozen=True)
class ProviderResult:
    #: What the prompt shows under the provider's heading; empty means nothing to show.
    text: str = ""
    #: Named values for actions, evaluators and the turn's stored state.
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cut:
    """How a provider's prompt section gives way when the decide prompt is over its token
    budget. Sections are cut in ascending `order`; among equal orders the later section
    (by position) goes first."""

    order: int = 30
    #: "tail" drops the last lines first (the least relevant of a ranked list), "head" the
    #: first (the oldest messages), "whole" the section at once.
    end: Literal["tail", "head", "whole"] = "whole"
    #: Lines never cut (the conversation keeps its latest message).
    keep_lines: int = 0

    def __post_init__(self) -> None:
        if self.end not in ("tail", "head", "whole"):
            raise ValueError(f"Cut.end must be 'tail', 'head' or 'whole', not {self.end!r}")
        if self.keep_lines < 0:
            raise ValueError(f"Cut.keep_lines must be 0 or more, not {self.keep_lines}")


@dataclass(frozen=True)
class Provider:
    """A source of context for the decide prompt."""

    name: str
    description: str
    get: Callable[[TurnContext], ProviderResult]
    title: str = ""
    #: Providers are shown in the prompt in ascending position.
    position: int = 50
    #: Not in the default state: runs only in a decide step after the model names it in
    #: `<providers>` (the prompt lists the dynamic providers it may name).
    dynamic: bool = False
    #: Like dynamic, but never listed to the model: it runs only when named exactly
    #: (by a character's template or instructions that know of it).
    private: bool = False
    #: How its section is cut to fit the prompt's budget; None: never cut.
    cut: Cut | None = Cut()


@dataclass(frozen=True)
class Evaluator:
    """Work done after the reply, such as reflecting on the conversation."""

    name: str
    description: str
    handler: Callable[[TurnContext], dict[str, Any]]
    validate: Callable[[TurnContext], bool] = _always
    #: Run even when the turn decided not to respond.
    always_run: bool = False


@dataclass(frozen=True)
class Setting:
    """A per-world setting a plugin reads (ElizaOS's world settings): the world's owner
    sets it by chat (UPDATE_SETTINGS), and the plugin reads it with
    `TurnContext.world_setting`, which falls back to the agent's own setting."""

    name: str
    description: str
    #: The plugin cannot do its job without it: the settings provider says it is missing.
    required: bool = False
    #: Never set by chat nor shown in a prompt: it belongs in the character's secrets.
    secret: bool = False


@dataclass(frozen=True)
class ModelProvider:
    """A model set a plugin offers, chosen by `name` with the `model_provider` setting (or
    a role's `name:model`), with what the runtime must know of its models: their prices
    (for the usage ledger and the daily budget) and context windows (for the prompt's
    budget). Both tables match a model by its longest listed name prefix, so dated versions
    (gpt-4o-2024-08-06) take their family's values."""

    name: str
    #: Builds the set: `build(character)` or `build(character, settings)`.
    build: ModelFactory
    #: US dollars per million tokens (input, output); a model not listed costs nothing.
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    #: Context windows in tokens; a model not listed has `DEFAULT_CONTEXT_WINDOW`.
    context_windows: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Plugin:
    name: str
    description: str = ""
    actions: Sequence[Action] = ()
    providers: Sequence[Provider] = ()
    evaluators: Sequence[Evaluator] = ()
    #: The model sets it offers, each with its models' prices and context windows.
    models: Sequence[ModelProvider] = ()
    #: What runs scheduled tasks, found by the name a task gives (`carrier_core.tasks`).
    task_workers: Sequence[TaskWorker] = ()
    #: The per-world settings the plugin reads.
    settings: Sequence[Setting] = ()
    #: Handlers by ElizaOS event name (`EventType`), each called with the `Event`.
    events: Mapping[str, Sequence[EventHandler]] = field(default_factory=dict)
    #: Services the plugin's actions, providers and evaluators use (`TurnContext.service`).
    services: Sequence[Service] = ()
    #: Called once per runtime with the runtime, when the agent's plugins are first used;
    #: a plugin whose init raises is skipped in that runtime (`Runtime.plugins_for`).
    init: Callable[[Runtime], object] | None = None

    def __post_init__(self) -> None:
        check_events(self.name, self.events)


def _takes_settings(factory: ModelFactory) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional)


class PluginError(LookupError):
    """A named action, plugin or model set that cannot be found."""


def _action_key(name: str) -> str:
    """An action name with case and everything but letters and digits set aside."""
    return "".join(ch for ch in name.upper() if ch.isalnum())


@dataclass(frozen=True)
class Plugins:
    """The plugins of one agent, merged; later plugins override earlier names."""

    plugins: tuple[Plugin, ...]
    #: Names in the character's list that could not be loaded, with the reason.
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def actions(self) -> dict[str, Action]:
        return {a.name.upper(): a for p in self.plugins for a in p.actions}

    @property
    def providers(self) -> list[Provider]:
        merged = {pr.name: pr for p in self.plugins for pr in p.providers}
        return sorted(merged.values(), key=lambda pr: pr.position)

    @property
    def evaluators(self) -> list[Evaluator]:
        return list({e.name: e for p in self.plugins for e in p.evaluators}.values())

    @property
    def task_workers(self) -> dict[str, TaskWorker]:
        return {w.name: w for p in self.plugins for w in p.task_workers}

    @property
    def settings(self) -> dict[str, Setting]:
        """The declared world settings by name; a later plugin's declaration wins."""
        return {s.name: s for p in self.plugins for s in p.settings}

    def event_handlers(self, kind: EventType) -> list[tuple[str, EventHandler]]:
        """The handlers of an event with their plugin's name, in plugin order."""
        return [(p.name, h) for p in self.plugins for h in p.events.get(kind, ())]

    def service(self, name: str) -> Service | None:
        """A service by name; a later plugin's overrides an earlier one's."""
        return {s.name: s for p in self.plugins for s in p.services}.get(name)

    def action(self, name: str) -> Action | None:
        """An action by its name or one of its similes, ignoring case and punctuation
        ("mute-room", "Mute Room" and "MUTE_ROOM" are one name); the name before a simile."""
        wanted = _action_key(name)
        if not wanted:
            return None
        actions = list(self.actions.values())
        for action in actions:
            if _action_key(action.name) == wanted:
                return action
        for action in actions:
            if wanted in {_action_key(s) for s in action.similes}:
                return action
        return None

    def provider(self, name: str) -> Provider | None:
        """A provider by name, ignoring case and punctuation as action names do (the model
        may write ElizaOS's "WEATHER_NOW" for "weather_now")."""
        wanted = _action_key(name)
        return next((p for p in self.providers if _action_key(p.name) == wanted), None)

    def has_model_set(self, name: str) -> bool:
        """Whether `model_set(name, …)` can find that name (without building it)."""
        if any(m.name == name for p in self.plugins for m in p.models):
            return True
        return model_provider(name) is not None

    def model_set(
        self, name: str, character: Character, settings: Settings | None = None
    ) -> ModelSet:
        for plugin in reversed(self.plugins):
            for offered in plugin.models:
                if offered.name != name:
                    continue
                if _takes_settings(offered.build):
                    if settings is None:
                        from carrier_core.config import Settings

                        settings = Settings()
                    return offered.build(character, settings)
                return offered.build(character)
        # A provider not among the character's plugins may be a plugin of its own name
        # (`model_provider: bedrock` finds the `bedrock` plugin).
        if name not in {p.name for p in self.plugins}:
            extra = _plugin_named(name)
            if extra is not None and any(m.name == name for m in extra.models):
                return Plugins((*self.plugins, extra)).model_set(name, character, settings)
        known = sorted({m.name for p in self.plugins for m in p.models})
        raise PluginError(f"no model provider named {name!r}; known: {', '.join(known)}")


#: The model providers of every plugin loaded in this process, by name: where the prices
#: and context windows of the models they offer are looked up.
_model_providers: dict[str, ModelProvider] = {}


def model_provider(name: str) -> ModelProvider | None:
    """A model provider by name, among the plugins loaded in this process (bootstrap's
    always), else offered by the installed plugin of the same name (`bedrock`)."""
    _plugin_named("bootstrap")
    if name not in _model_providers:
        _plugin_named(name)
    return _model_providers.get(name)


def model_providers() -> list[ModelProvider]:
    """Every model provider of the plugins loaded in this process (bootstrap's always)."""
    _plugin_named("bootstrap")
    return list(_model_providers.values())


@cache
def _plugin_named(name: str) -> Plugin | None:
    """The plugin `name` loads to, once per process; None if it cannot be loaded."""
    try:
        return _load_one(name)
    except Exception:
        return None


def _load_one(name: str) -> Plugin:
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        loaded: Any = getattr(importlib.import_module(module_name), attribute)
    else:
        found = entry_points(group=ENTRY_POINT_GROUP, name=name)
        if not found:
            raise PluginError(f"no plugin named {name!r} in entry-point group {ENTRY_POINT_GROUP}")
        loaded = next(iter(found)).load()
    plugin = loaded() if callable(loaded) and not isinstance(loaded, Plugin) else loaded
    if not isinstance(plugin, Plugin):
        raise PluginError(f"{name!r} is a {type(plugin).__name__}, not a carrier Plugin")
    for offered in plugin.models:
        if not isinstance(offered, ModelProvider):
            raise PluginError(
                f"plugin {plugin.name!r}: models must be ModelProvider(name, build, ...),"
                f" not {type(offered).__name__}"
            )
        _model_providers[offered.name] = offered
    return plugin


@cache
def load_plugins(names: tuple[str, ...]) -> Plugins:
    """The bootstrap plugin followed by the named ones, skipping (and reporting) unknown names."""
    plugins = [_load_one("bootstrap")]
    skipped: list[tuple[str, str]] = []
    for name in names:
        if name == "bootstrap":
            continue
        try:
            plugins.append(_load_one(name))
        except Exception as exc:  # a plugin that breaks on import must not break the agent
            reason = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
            skipped.append((name, reason))
    return Plugins(tuple(plugins), tuple(skipped))
