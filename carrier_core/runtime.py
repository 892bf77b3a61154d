"""The runtime: what every step needs (store, models, plugins, settings), and nothing more.

It holds no conversation state. Any process that opens a `Runtime` on the same
database can run any step of any turn, which is what lets each step become a
Lambda of its own.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from carrier_core.character import SECRET, Character, CharacterError, SecretPath, secret_location
from carrier_core.config import Settings
from carrier_core.embed import embed_pending
from carrier_core.models import EmbeddingDimensionMismatch, ModelError, ModelSet
from carrier_core.models.select import choose_models
from carrier_core.plugin import Plugin, Plugins, load_plugins
from carrier_core.secrets import SecretStore, open_secret_store
from carrier_core.services import Services
from carrier_core.store.store import Store
from carrier_core.world import LOCAL_TENANT_ID

if TYPE_CHECKING:
    from carrier_core.store.database import Login

log = logging.getLogger(__name__)


class Runtime:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        models: ModelSet | None = None,
        secrets: SecretStore | None = None,
    ):
        self.store = store
        self.settings = settings
        #: Agents' secrets: the one the settings name (`secret_store`) unless one is given.
        self.secrets = secrets if secrets is not None else open_secret_store(settings)
        self._models = models
        self._model_sets: dict[tuple[uuid.UUID, str], ModelSet] = {}
        self._lock = threading.Lock()
        #: The plugins' services started in this runtime (`TurnContext.service`).
        self.services = Services(self)
        #: Plugins whose `init` ran here, by name: None if it succeeded, else why it failed.
        self._inits: dict[str, str | None] = {}
        # Reentrant: an init may look up plugins itself.
        self._init_lock = threading.RLock()

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
        secrets = open_secret_store(settings)  # first: a bad store name leaves nothing open
        return cls(Store.open(settings, login), settings, models, secrets)

    def close(self) -> None:
        """Stop the services started here, then close the database pool."""
        try:
            self.services.stop_all()
        finally:
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

    def plugins_named(self, names: Sequence[str]) -> Plugins:
        """The plugins of these names (as a character lists them), without running their
        inits: enough to see what they declare."""
        return load_plugins(tuple(names))

    def plugins_for(self, character: Character) -> Plugins:
        """The character's plugins, each plugin's `init` run first if it has not run in this
        runtime. A plugin whose init raised is left out (and listed in `skipped` with the
        error), as one that cannot be loaded is: its failure is not retried on every turn."""
        plugins = load_plugins(tuple(character.plugins))
        with self._init_lock:
            for plugin in plugins.plugins:
                if plugin.init is not None and plugin.name not in self._inits:
                    self._inits[plugin.name] = self._init(plugin)
            failed = {
                p.name: self._inits[p.name] for p in plugins.plugins if self._inits.get(p.name)
            }
        if not failed:
            return plugins
        return Plugins(
            tuple(p for p in plugins.plugins if p.name not in failed),
            (*plugins.skipped, *((name, f"init failed: {why}") for name, why in failed.items())),
        )

    def _init(self, plugin: Plugin) -> str | None:
        """Run a plugin's init; None if it succeeded, else the error."""
        assert plugin.init is not None
        try:
            plugin.init(self)
        except Exception as exc:
            log.exception("plugin %s: init failed; it is skipped in this runtime", plugin.name)
            return f"{type(exc).__name__}: {exc}"
        return None

    def models_for(self, character: Character, *, check_dimensions: bool = True) -> ModelSet:
        """The runtime's own model set if it was given one, else the one the settings and
        environment choose (`carrier_core.models.select`), kept for the runtime's life.

        Raises `EmbeddingDimensionMismatch` when the embedding model's vectors do not fit
        the stored column (unless `check_dimensions` is false, as `carrier reembed` does).
        """
        if self._models is not None:
            return self._models
        # Keyed by the settings as stored (secrets replaced by their marker): no secret is
        # kept in the key, and a character read back from the store finds the same set.
        stored = json.dumps(character.stored_settings, sort_keys=True, default=str)
        key = (character.agent_id, stored)
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
        self,
        character: Character,
        tenant_id: uuid.UUID = LOCAL_TENANT_ID,
        *,
        handle: str | None = None,
        embed: Callable[[uuid.UUID], None] | None = None,
    ) -> uuid.UUID:
        """Store (or update) an agent of a tenant and its knowledge; safe to call on every
        start. The agent is the tenant's of this handle (default: the slug of the character's
        name) if there is one. Raises `AgentConflict` when the character's id is another
        tenant's, or another agent's of this handle.

        Knowledge items become documents (`carrier_core.knowledge`); a `path` item that is
        missing or of a type not read raises `DocumentError` naming it before anything is
        stored, one that cannot be read (a damaged PDF) when it is read. Their fragments are
        then embedded by `embed` (the API's queue in the cloud), or at once when none is given;
        an embedding model that fails leaves them failed, saying why, for a later run to embed.

        The character's secrets go to the secret store, its document keeps their names
        (`SECRET`), in one transaction: a secret that cannot be kept stores no agent. A
        secret given as `SECRET` keeps the value stored before (a document read from the API
        and sent back); `CharacterError` if there is none."""
        # Imported here: of the Lambda functions, only the API registers agents.
        from carrier_core.knowledge import import_knowledge, plan_knowledge

        knowledge = plan_knowledge(character)
        given = character.secret_values()
        with self.store.atomic():
            # First the agent: its row is locked, and another tenant's id is refused before
            # that agent's secrets are read or written.
            agent_id = self.store.save_agent(character, tenant_id, handle=handle)
            self.secrets.put(agent_id, self._secrets_to_keep(agent_id, given))
        import_knowledge(self, agent_id, knowledge)
        try:
            if embed is not None:
                embed(agent_id)
            else:
                embed_pending(self, agent_id, max_batches=None)
        except ModelError as exc:
            # The agent is stored; its documents say they failed, and why, and the next
            # embed run (a turn's) tries them again.
            log.warning("agent %s: its knowledge is not embedded yet: %s", agent_id, exc)
        return agent_id

    def _secrets_to_keep(
        self, agent_id: uuid.UUID, given: dict[SecretPath, object]
    ) -> dict[SecretPath, object]:
        """The values to store: those given, and the stored ones that `SECRET` stands for."""
        kept = [path for path, value in given.items() if value == SECRET]
        stored = self.secrets.get(agent_id) if kept else {}
        missing = [secret_location(path) for path in kept if path not in stored]
        if missing:
            raise CharacterError(
                f"{', '.join(missing)}: {SECRET!r} stands for a value stored before, but agent"
                f" {agent_id} has none there; give the value itself"
            )
        return {path: stored[path] if value == SECRET else value for path, value in given.items()}

    def delete_agent(self, agent_id: uuid.UUID) -> bool:
        """Delete an agent with everything it remembers (`Store.delete_agent`) and its
        secrets, in one transaction: if its secrets cannot be deleted, the agent stays. Its
        webhooks' signing secrets are deleted after (`forget_webhook_secrets`)."""
        # Imported here: the webhooks package brings the HTTP client every function would
        # otherwise import at its cold start.
        from carrier_core.webhooks.registry import forget_webhook_secrets

        with self.store.atomic():
            webhooks = self.store.lock_agent_webhooks(agent_id)
            deleted = self.store.delete_agent(agent_id)
            self.secrets.delete(agent_id)
        forget_webhook_secrets(self.secrets, webhooks)
        return deleted
