"""Model prices, in US dollars per million tokens (input, output), as model providers declare them.

Used to estimate the cost of each call in the usage ledger and to enforce the optional
daily budget. Each plugin's `ModelProvider` lists its models' prices (bootstrap's for
OpenAI and Anthropic, `carrier_aws.bedrock`'s for Bedrock); a model no loaded provider
lists costs nothing here (local and offline models, or ones to add). Names match by the
longest listed prefix, so dated versions (gpt-4o-2024-08-06) take their family's price.
"""

from __future__ import annotations

from carrier_core.plugin import model_providers


def _prices() -> dict[str, tuple[float, float]]:
    return {name: p for provider in model_providers() for name, p in provider.prices.items()}


def _listed(model: str, prices: dict[str, tuple[float, float]]) -> str:
    return max((name for name in prices if model.startswith(name)), key=len, default="")


def is_priced(model: str) -> bool:
    return bool(_listed(model, _prices()))


def price(model: str) -> tuple[float, float]:
    """(input, output) dollars per million tokens; (0, 0) for an unlisted model."""
    prices = _prices()
    best = _listed(model, prices)
    return prices[best] if best else (0.0, 0.0)


def estimate_cost(model: str, input_tokens: int, output_tokens: int) -> float:
    """Estimated cost of one call in dollars."""
    per_in, per_out = price(model)
    return (input_tokens * per_in + output_tokens * per_out) / 1_000_000
