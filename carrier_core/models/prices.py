"""Model prices, in US dollars per million tokens (input, output): the one place they live.

Used to estimate the cost of each call in the usage ledger and to enforce the optional
daily budget. Prices are list prices as published by the providers; a model not listed
costs nothing here (local and offline models, or ones to add). Names match by the longest
listed prefix, so dated versions (gpt-4o-2024-08-06) take their family's price.
"""

from __future__ import annotations

PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    "text-embedding-ada-002": (0.10, 0.0),
    # Anthropic
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-haiku-4": (1.00, 5.00),
    # Amazon Bedrock (on-demand, us-east-1)
    "anthropic.claude-3-5-haiku": (0.80, 4.00),
    "anthropic.claude-3-5-sonnet": (3.00, 15.00),
    "anthropic.claude-3-haiku": (0.25, 1.25),
    "us.anthropic.claude-3-5-haiku": (0.80, 4.00),
    "meta.llama3-1-8b-instruct": (0.22, 0.22),
    "meta.llama3-1-70b-instruct": (0.72, 0.72),
    "amazon.titan-text-express": (0.20, 0.60),
    "amazon.titan-embed-text-v2": (0.02, 0.0),
}


def _listed(model: str) -> str:
    best = ""
    for name in PRICES:
        if model.startswith(name) and len(name) > len(best):
            best = name
    return best


def is_priced(model: str) -> bool:
    return bool(_listed(model))


def price(model: str) -> tuple[float, float]:
    """(input, output) dollars per million tokens; (0, 0) for an unlisted model."""
    best = _listed(model)
    return PRICES[best] if best else (0.0, 0.0)


def estimate_cost(model: str, input_tokens: int, output_tokens: int) -> float:
    """Estimated cost of one call in dollars."""
    per_in, per_out = price(model)
    return (input_tokens * per_in + output_tokens * per_out) / 1_000_000
