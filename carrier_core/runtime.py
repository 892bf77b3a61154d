"""The runtime: what every step needs (store, models, plugins, settings), and nothing more.

It holds no conversation state. Any process that opens a `Runtime` on the same
database can run any step of any turn, which is what lets each step become a
Lambda of its own.
"""

from __future__ import annotations

import json
import threading
import uuid
from types import TracebackType

from carrier_core.character import Character
from carrier_core.config import Settings
from carrier_core.models import EmbeddingDimensionMismatch, ModelSet
from carrier_core.models.select import choose_models
from carrier_core.plugin import Plugins, load_plugins
from carrier_core.store import Store
from carrier_core.store.database import Login
from carrier_core.world import LOCAL_TENANT_ID


class Runtime:
    def __init__(self, store: Store, settings: Settings, models: ModelSet | None = None):
        self.store = store
        self.settings = settings
        self._models = models
        self._model_sets: dict[tuple[uuid.UUID, str], ModelSet] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        models: ModelSet | None = None,
        *,
        login: Login | None = None,
    ) -> Runtime:
        """A runtime on the settings' database, or on the one `login` names (see `Login`)."""
        settings = settings or Settings()
        return cls(Store.open(settings, login), settings, models)

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

    def models_for(self, character: Character, *, check_dimensions: bool = True) -> ModelSet:
        """The runtime's own model set if it was given one, else the one the settings and
        environment choose (`carrier_core.models.select`), kept for the runtime's life.

        Raises `EmbeddingDimensionMismatch` when the embedding model's vectors do not fit
        the stored column (unless `check_dimensions` is false, as `carrier reembed` does).
        """
        if self._models is not None:
            return self._models
        key = (character.agent_id, json.dumps(character.settings, sort_keys=True, default=str))
        with self._lock:
            models = self._model_sets.get(key)
        if models is None:
            settings = self.settings
            if settings.embedding_dimensions is None:
                settings = settings.model_copy(
                    update={"embedding_dimensions": self.store.embedding_dimensions}
                )
            plugins = self.plugins_for(character)
            models = choose_models(
                character,
                settings,
                lambda name: plugins.model_set(name, character, settings),
                plugins.has_model_set,
            )
            with self._lock:
                self._model_sets[key] = models
        if check_dimensions:
            column = self.store.embedding_dimensions
            if models.embedding.dimensions != column:
                raise EmbeddingDimensionMismatch(
                    f"the embedding model {models.embedding.name} gives"
                    f" {models.embedding.dimensions}-dimensional vectors but the memories"
                    f" table stores {column}: run `carrier reembed` to re-embed the stored"
                    " memories with it"
                )
        return models

    def register_agent(
        self, character: Character, tenant_id: uuid.UUID = LOCAL_TENANT_ID
    ) -> uuid.UUID:
        """Store (or update) an agent of a tenant and its knowledge; safe to call on every
        start. Raises `AgentConflict` when the character's id is another tenant's."""
        # Imported here: storing knowledge runs the embed step, and the steps import Runtime.
        from carrier_core.knowledge import store_knowledge

        agent_id = self.store.save_agent(character, tenant_id)
        store_knowledge(self, character)
        return agent_id
