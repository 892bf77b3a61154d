"""What a plugin author imports: `from carrier_core.sdk import Plugin, Action, ...`.

One module for everything a plugin declares (actions, providers, evaluators, model
providers, task workers, world settings, event handlers, services) and everything their
functions are handed (the turn's context, the decision) or give back, so a plugin never
reaches into the core's modules, and the core may move its internals without breaking
plugins. The guide is docs/writing-a-plugin.md; the core's own modules import from where
each thing is defined.
"""

from carrier_core.character import Character
from carrier_core.config import Settings
from carrier_core.decision import Decision
from carrier_core.events import Event, EventType
from carrier_core.models.base import (
    EmbeddingModel,
    Embeddings,
    Generation,
    ModelAuthError,
    ModelError,
    ModelRateLimited,
    ModelRequest,
    ModelRole,
    ModelSet,
    ModelUnavailable,
    TextModel,
    Usage,
)
from carrier_core.plugin import (
    Action,
    ActionResult,
    Cut,
    Evaluator,
    ModelProvider,
    OutgoingMessage,
    Plugin,
    Provider,
    ProviderResult,
    Setting,
)
from carrier_core.services import Service
from carrier_core.tasks import Task, TaskContext, TaskResult, TaskWorker, create_task
from carrier_core.turn.context import TurnContext

__all__ = [
    "Action",
    "ActionResult",
    "Character",
    "Cut",
    "Decision",
    "EmbeddingModel",
    "Embeddings",
    "Evaluator",
    "Event",
    "EventType",
    "Generation",
    "ModelAuthError",
    "ModelError",
    "ModelProvider",
    "ModelRateLimited",
    "ModelRequest",
    "ModelRole",
    "ModelSet",
    "ModelUnavailable",
    "OutgoingMessage",
    "Plugin",
    "Provider",
    "ProviderResult",
    "Service",
    "Setting",
    "Settings",
    "Task",
    "TaskContext",
    "TaskResult",
    "TaskWorker",
    "TextModel",
    "TurnContext",
    "Usage",
    "create_task",
]
