"""Model provider keys from AWS Secrets Manager, for Lambda functions.

When `CARRIER_MODEL_KEYS_SECRET_ARN` names a secret holding a JSON object such as
`{"OPENAI_API_KEY": "...", "ANTHROPIC_API_KEY": "..."}`, its known entries are put into
the process environment (where the SDKs read them) unless already set. Read through
Powertools Parameters, so warm invocations reuse it. Values are never logged.
"""

from __future__ import annotations

import os

#: The only names taken from the secret.
KEY_NAMES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


class ModelKeysError(RuntimeError):
    """The model keys secret is not a JSON object of names to strings."""


def load_model_keys(secret_arn: str | None = None) -> list[str]:
    """Put the secret's keys into the environment; returns the names set (not the values)."""
    secret_arn = secret_arn or os.environ.get("CARRIER_MODEL_KEYS_SECRET_ARN")
    if not secret_arn:
        return []
    from aws_lambda_powertools.utilities import parameters

    secret = parameters.get_secret(secret_arn, transform="json", max_age=300)
    if not isinstance(secret, dict):
        raise ModelKeysError("the model keys secret must be a JSON object, e.g. {OPENAI_API_KEY}")
    loaded = []
    for name in KEY_NAMES:
        value = secret.get(name)
        if isinstance(value, str) and value and not os.environ.get(name):
            os.environ[name] = value
            loaded.append(name)
    return loaded
