"""Model provider keys from AWS Secrets Manager, for Lambda functions.

When `CARRIER_MODEL_KEYS_SECRET_ARN` names a secret holding a JSON object such as
`{"OPENAI_API_KEY": "...", "ANTHROPIC_API_KEY": "..."}`, its known entries are put into
the process environment (where the SDKs read them) unless already set. Read through
`carrier_aws.secret_values`, so warm invocations reuse it. Values are never logged.
"""

from __future__ import annotations

import os

from carrier_aws.secret_values import SecretValueError, read_json_secret

#: The only names taken from the secret.
KEY_NAMES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


class ModelKeysError(RuntimeError):
    """The model keys secret is not a JSON object of names to strings."""


def load_model_keys(secret_arn: str | None = None) -> list[str]:
    """Put the secret's keys into the environment; returns the names set (not the values)."""
    secret_arn = secret_arn or os.environ.get("CARRIER_MODEL_KEYS_SECRET_ARN")
    if not secret_arn:
        return []
    try:
        secret = read_json_secret(secret_arn)
    except SecretValueError as exc:
        raise ModelKeysError(f"the model keys secret: {exc}") from None
    if not isinstance(secret, dict):
        raise ModelKeysError("the model keys secret must be a JSON object, e.g. {OPENAI_API_KEY}")
    loaded = []
    for name in KEY_NAMES:
        value = secret.get(name)
        if isinstance(value, str) and value and not os.environ.get(name):
            os.environ[name] = value
            loaded.append(name)
    return loaded
