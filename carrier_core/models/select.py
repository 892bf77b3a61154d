"""Which models an agent uses: providers by name, models by role, and the fallback chain.

The provider comes from the character's `settings.model_provider`, else the
`model_provider` setting, else an ElizaOS v0 character's top-level `modelProvider` when its
key is set, else the environment (OPENAI_API_KEY, then
ANTHROPIC_API_KEY, then OPENAI_BASE_URL), else the offline model. Each role (small,
large, embedding) may name its own model, and its own provider as `provider:model`.
Keys are read from the environment by the SDKs, never from settings or stored
characters (whose secrets are kept in the secret store: `carrier_core.secrets`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from carrier_core.models.base import (
    EmbeddingModel,
    Generation,
    ModelAuthError,
    ModelContextTooLong,
    ModelError,
    ModelRequest,
    ModelRole,
    ModelSet,
    TextModel,
)
from carrier_core.models.embedding import HashEmbedding
from carrier_core.plugin import model_provider

if TYPE_CHECKING:
    from carrier_core.character import Character
    from carrier_core.config import Settings

log = logging.getLogger(__name__)

OFFLINE = "offline"
OPENAI = "openai"
ANTHROPIC = "anthropic"
COMPATIBLE = "openai-compatible"


def _setting(settings: Settings, character: Character | None, name: str) -> Any:
    value = character.settings.get(name) if character is not None else None
    return value if value not in (None, "") else getattr(settings, name)


#: ElizaOS v0's top-level `modelProvider` names Carrier has a provider for, and the key
#: that provider needs: the character's choice is followed when that key is set.
V0_PROVIDERS = {"openai": (OPENAI, "OPENAI_API_KEY"), "anthropic": (ANTHROPIC, "ANTHROPIC_API_KEY")}


def v0_provider(character: Character | None, env: Mapping[str, str]) -> str | None:
    """The provider a v0 character's `modelProvider` asks for, if its key is set."""
    named = (character.model_extra or {}).get("modelProvider") if character is not None else None
    provider, key = V0_PROVIDERS.get(str(named).lower(), (None, ""))
    return provider if provider and env.get(key) else None


def primary_provider(
    settings: Settings, character: Character | None = None, env: Mapping[str, str] | None = None
) -> str:
    explicit = _setting(settings, character, "model_provider")
    if explicit:
        return str(explicit)
    env = os.environ if env is None else env
    chosen = v0_provider(character, env)
    if chosen:
        return chosen
    if env.get("OPENAI_API_KEY"):
        return OPENAI
    if env.get("ANTHROPIC_API_KEY"):
        return ANTHROPIC
    if env.get("OPENAI_BASE_URL"):
        return COMPATIBLE
    return OFFLINE


def split_spec(spec: str) -> tuple[str | None, str]:
    """`provider:model` → (provider, model) when a plugin offers a model provider of that
    name; a bare model (even `llama3:8b`) → (None, model)."""
    prefix, sep, rest = spec.partition(":")
    if sep and model_provider(prefix) is not None:
        return prefix, rest
    return None, spec


def role_provider(settings: Settings, character: Character | None, role: str) -> str:
    spec = _setting(settings, character, f"{role}_model")
    provider = split_spec(str(spec))[0] if spec else None
    return provider or primary_provider(settings, character)


def role_model(
    settings: Settings, character: Character | None, provider: str, role: str, default: str
) -> str:
    """The model `provider` should use for `role`: the configured one if it is meant for
    this provider, else the provider's default."""
    spec = _setting(settings, character, f"{role}_model")
    if not spec:
        return default
    named, model = split_spec(str(spec))
    if (named or primary_provider(settings, character)) == provider:
        return model
    return default


def fallback_chain(settings: Settings, character: Character | None, first: str) -> list[str]:
    names = [n.strip() for n in str(_setting(settings, character, "model_fallback")).split(",")]
    chain = [first]
    chain.extend(n for n in names if n and n not in chain)
    return chain


# -- the built-in providers ---------------------------------------------------


def openai_models(
    character: Character, settings: Settings, *, compatible: bool = False
) -> ModelSet:
    from carrier_core.models import openai as oa

    provider = COMPATIBLE if compatible else OPENAI
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    if compatible and not base_url:
        raise ModelAuthError(
            "openai-compatible needs OPENAI_BASE_URL, e.g. http://localhost:11434/v1 for Ollama"
        )
    client = oa.make_client(
        # Local servers take any key; the SDK insists on one.
        api_key=os.environ.get("OPENAI_API_KEY") or ("unused" if compatible else None),
        base_url=base_url,
        timeout=settings.model_timeout_s,
        max_retries=settings.model_max_retries,
    )
    defaults = (
        ("llama3.2", "llama3.2", "")
        if compatible
        else (oa.DEFAULT_SMALL, oa.DEFAULT_LARGE, oa.DEFAULT_EMBEDDING)
    )

    def text(role: str, default: str) -> oa.OpenAIChatModel:
        return oa.OpenAIChatModel(
            client,
            role_model(settings, character, provider, role, default),
            provider=provider,
            tools=not compatible,
            max_output_tokens=settings.max_output_tokens,
        )

    from carrier_core.store.base import EMBEDDING_DIMENSIONS

    embedding: EmbeddingModel
    embedding_model = role_model(settings, character, provider, "embedding", "")
    if compatible and not embedding_model:
        # A local server's embedding models have sizes of their own (nomic-embed-text:
        # 768): the offline embedding is kept until one is named, then `carrier reembed`.
        embedding = HashEmbedding()
    else:
        embedding = oa.OpenAIEmbedding(
            client,
            embedding_model or defaults[2],
            # The runtime sets this to the stored column's size unless configured.
            settings.embedding_dimensions or EMBEDDING_DIMENSIONS,
            provider=provider,
        )
    return ModelSet(
        small=text("small", defaults[0]), large=text("large", defaults[1]), embedding=embedding
    )


def anthropic_models(character: Character, settings: Settings) -> ModelSet:
    from carrier_core.models import anthropic as an

    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise ModelAuthError("anthropic: no key; set ANTHROPIC_API_KEY")
    client = an.make_client(
        api_key=None,
        base_url=None,
        timeout=settings.model_timeout_s,
        max_retries=settings.model_max_retries,
    )

    def text(role: str, default: str) -> an.AnthropicModel:
        return an.AnthropicModel(
            client,
            role_model(settings, character, ANTHROPIC, role, default),
            max_output_tokens=settings.max_output_tokens,
        )

    # Anthropic has no embeddings API: the offline embedding unless the embedding role
    # names a provider that has one (e.g. openai:text-embedding-3-small).
    return ModelSet(
        small=text("small", an.DEFAULT_SMALL),
        large=text("large", an.DEFAULT_LARGE),
        embedding=HashEmbedding(),
    )


# -- fallback and the context-too-long retry ----------------------------------


class FallbackModel:
    """A role's text model: the first provider of the chain, then the next ones when it
    is unavailable or rate limited. A context-too-long error is retried once on the same
    model with the request's shorter form. Other errors (auth, bad request) are raised.

    Fallback providers are built when first needed, so one that is never used needs no
    key; one that cannot be built counts as failing.
    """

    def __init__(self, role: str, chain: list[tuple[str, Callable[[], TextModel]]]):
        self.role = role
        self._chain = chain
        self._built: dict[str, TextModel] = {}
        first = self._model(0)  # the first provider must be there: its errors are raised
        assert first is not None
        self.name = first.name
        self.provider = chain[0][0]
        self.offline = bool(getattr(first, "offline", False))
        #: As the first provider has it (Bedrock's needs image bytes, not URLs).
        self.takes_image_urls = bool(getattr(first, "takes_image_urls", True))

    def _model(self, index: int) -> TextModel | None:
        provider, build = self._chain[index]
        if provider not in self._built:
            try:
                self._built[provider] = build()
            except ModelError:
                if index == 0:
                    raise
                return None
        return self._built[provider]

    def generate(self, request: ModelRequest) -> Generation:
        failures: list[str] = []
        last: ModelError | None = None
        for index, (provider, _) in enumerate(self._chain):
            try:
                model = self._model(index)
            except ModelError as exc:
                if not exc.retryable or index == len(self._chain) - 1:
                    raise
                model = None
            if model is None:
                failures.append(f"{provider}: cannot be set up")
                continue
            try:
                generation = self._generate(model, request)
            except ModelError as exc:
                if not exc.retryable:
                    raise
                log.warning("%s model %s failed: %s", provider, model.name, exc)
                failures.append(f"{provider}/{model.name}: {type(exc).__name__}: {exc}")
                last = exc
                continue
            if failures:
                generation = Generation(
                    text=generation.text,
                    usage=generation.usage,
                    model=generation.model,
                    provider=generation.provider or provider,
                    fallbacks=tuple(failures),
                )
            return generation
        assert last is not None
        if len(failures) == 1:
            raise last
        raise type(last)("every provider failed: " + "; ".join(failures)) from last

    @staticmethod
    def _generate(model: TextModel, request: ModelRequest) -> Generation:
        try:
            return model.generate(request)
        except ModelContextTooLong:
            shorter = request.shorter()
            if shorter is None:
                raise
            log.warning("%s: context too long; retrying once with a shorter prompt", model.name)
            generation = model.generate(shorter)
            return Generation(
                text=generation.text,
                usage=generation.usage,
                model=generation.model,
                provider=generation.provider,
                fallbacks=generation.fallbacks,
                trimmed=True,
            )


def choose_models(
    character: Character,
    settings: Settings,
    model_set: Callable[[str], ModelSet],
    exists: Callable[[str], bool] = lambda name: True,
) -> ModelSet:
    """The agent's models by role, with the fallback chain for text roles.

    `model_set(name)` builds a provider's whole set (a plugin's factory); fallbacks are
    built only when needed, so `exists(name)` checks their names now: a misspelt fallback
    shows at start, not in the middle of an outage."""
    built: dict[str, ModelSet] = {}

    def provider_set(name: str) -> ModelSet:
        if name not in built:
            built[name] = model_set(name)
        return built[name]

    def text_model(name: str, role: ModelRole) -> TextModel:
        return provider_set(name).text(role)

    def role(role: ModelRole) -> FallbackModel:
        first = role_provider(settings, character, role.value)
        chain = fallback_chain(settings, character, first)
        unknown = [name for name in chain[1:] if not exists(name)]
        if unknown:
            from carrier_core.plugin import PluginError

            raise PluginError(
                f"model_fallback names no model provider {', '.join(map(repr, unknown))}"
            )
        return FallbackModel(
            role.value, [(name, partial(text_model, name, role)) for name in chain]
        )

    embedding: EmbeddingModel = provider_set(
        role_provider(settings, character, "embedding")
    ).embedding
    return ModelSet(small=role(ModelRole.SMALL), large=role(ModelRole.LARGE), embedding=embedding)
