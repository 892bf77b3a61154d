"""What storing and embedding an agent's memories needs: the store, the settings, and the
agent's models.

Adding knowledge documents (`carrier_core.knowledge`) and embedding memories
(`carrier_core.embed`) sit below the runtime: the runtime uses them when it registers an
agent. They take this as an argument, and the runtime is one, so they never import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from carrier_core.character import Character
    from carrier_core.config import Settings
    from carrier_core.models.base import ModelSet
    from carrier_core.store.store import Store


class AgentModels(Protocol):
    """The store, the settings, and each agent's model set (`Runtime.models_for`)."""

    @property
    def store(self) -> Store: ...

    @property
    def settings(self) -> Settings: ...

    def models_for(self, character: Character, *, check_dimensions: bool = True) -> ModelSet:
        """The agent's models; raises `EmbeddingDimensionMismatch` when their embedding
        does not fit the stored vectors (unless `check_dimensions` is false)."""
        ...
