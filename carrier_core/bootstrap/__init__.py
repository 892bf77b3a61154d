"""The bootstrap plugin: the actions, providers and evaluator every agent has."""

from carrier_core.bootstrap.actions import ACTIONS
from carrier_core.bootstrap.choice import CHOICE_PROVIDER, CHOOSE_OPTION
from carrier_core.bootstrap.messaging import MESSAGING_ACTIONS
from carrier_core.bootstrap.providers import PROVIDERS
from carrier_core.bootstrap.reflection import REFLECTION
from carrier_core.bootstrap.roles import ROLE_ACTIONS
from carrier_core.bootstrap.world_settings import SETTINGS_ACTIONS, SETTINGS_PROVIDER
from carrier_core.models import offline_models
from carrier_core.models.select import anthropic_models, openai_models
from carrier_core.plugin import ModelProvider, Plugin

#: List prices as published, US dollars per million tokens (input, output).
OPENAI_PRICES = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.0),
}
ANTHROPIC_PRICES = {
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-haiku-4": (1.00, 5.00),
}

plugin = Plugin(
    name="bootstrap",
    description=(
        "Core conversation: reply, ignore, continue; messages to other rooms; roles, world"
        " settings and what is known of people; choices; context providers; reflection."
    ),
    actions=[*ACTIONS, *ROLE_ACTIONS, *MESSAGING_ACTIONS, *SETTINGS_ACTIONS, CHOOSE_OPTION],
    providers=[*PROVIDERS, SETTINGS_PROVIDER, CHOICE_PROVIDER],
    evaluators=[REFLECTION],
    models=[
        ModelProvider(
            "offline",
            lambda character: offline_models(),
            context_windows={"carrier-offline": 1_000_000},
        ),
        ModelProvider(
            "openai",
            openai_models,
            prices=OPENAI_PRICES,
            context_windows={
                "gpt-4o": 128_000,
                "gpt-4.1": 1_000_000,
                "o4-mini": 200_000,
                "gpt-3.5-turbo": 16_000,
            },
        ),
        ModelProvider(
            "anthropic",
            anthropic_models,
            prices=ANTHROPIC_PRICES,
            context_windows={"claude": 200_000},
        ),
        ModelProvider(
            "openai-compatible",
            lambda character, settings: openai_models(character, settings, compatible=True),
            context_windows={"llama3": 8_000},
        ),
    ],
)
