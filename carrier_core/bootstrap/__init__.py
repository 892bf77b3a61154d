"""The bootstrap plugin: the actions, providers and evaluator every agent has."""

from carrier_core.bootstrap.actions import ACTIONS
from carrier_core.bootstrap.messaging import MESSAGING_ACTIONS
from carrier_core.bootstrap.providers import PROVIDERS
from carrier_core.bootstrap.reflection import REFLECTION
from carrier_core.bootstrap.roles import ROLE_ACTIONS
from carrier_core.bootstrap.world_settings import SETTINGS_ACTIONS, SETTINGS_PROVIDER
from carrier_core.models import offline_models
from carrier_core.models.select import anthropic_models, openai_models
from carrier_core.plugin import Plugin

plugin = Plugin(
    name="bootstrap",
    description=(
        "Core conversation: reply, ignore, continue; messages to other rooms; roles, world"
        " settings and what is known of people; context providers; reflection."
    ),
    actions=[*ACTIONS, *ROLE_ACTIONS, *MESSAGING_ACTIONS, *SETTINGS_ACTIONS],
    providers=[*PROVIDERS, SETTINGS_PROVIDER],
    evaluators=[REFLECTION],
    models={
        "offline": lambda character: offline_models(),
        "openai": openai_models,
        "anthropic": anthropic_models,
        "openai-compatible": lambda character, settings: openai_models(
            character, settings, compatible=True
        ),
    },
)
