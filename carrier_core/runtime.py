"""The runtime: what every step needs (store, models, plugins, settings), and nothing more.

It holds no conversation state. Any process that opens a `Runtime` on the same
database can run any step of any turn, which is what lets each step become a
Lambda of its own.
"""

from __future__ import annotations

import uuid
from types import TracebackType

from carrier_core.character import Character
from carrier_core.config import Settings
from carrier_core.models import ModelSet
from carrier_core.plugin import Plugins, load_plugins
from carrier_core.store import Store


class Runtime:
    def __init__(self, store: Store, settings: Settings, models: ModelSet | None = None):
        self.store = store
        self.settings = settings
        self._models = models

    @classmethod
    def open(cls, settings: Settings | None = None, models: ModelSet | None = None) -> Runtime:
        settings = settings or Settings()
        return cls(Store.open(settings), settings, models)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def plugins_for(self, character: Character) -> Plugins:
        return load_plugins(tuple(character.plugins))

    def models_for(self, character: Character) -> ModelSet:
        """The runtime's own model set if it was given one, else the one the settings name."""
        if self._models is not None:
            return self._models
        name = str(character.settings.get("model_provider") or self.settings.model_provider)
        return self.plugins_for(character).model_set(name, character)

    def register_agent(self, character: Character) -> uuid.UUID:
        """Store (or update) an agent and its knowledge; safe to call on every start."""
        # Imported here: storing knowledge runs the embed step, and the steps import Runtime.
        from carrier_core.knowledge import store_knowledge

        agent_id = self.store.save_agent(character)
        store_knowledge(self, character)
        return agent_id
