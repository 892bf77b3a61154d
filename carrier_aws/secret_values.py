"""The functions' own JSON secrets (the database's login, the model keys), read from
Secrets Manager and kept for `MAX_AGE_S` per container, so warm invocations reuse them.

Read with a botocore client (`carrier_aws.clients`), not Powertools Parameters, which
imports boto3 and with it s3transfer, and every provider it has (SSM, DynamoDB,
AppConfig): on the first invocation of every function, that cost as much as a third of
its cold start again. The agents' secrets are `carrier_aws.secrets`.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from carrier_aws.clients import AwsClient

#: How long a value read is used before the secret is read again, in seconds.
MAX_AGE_S = 300.0

_lock = threading.Lock()
#: Per secret ARN: when its value was read (monotonic seconds), and the value.
_values: dict[str, tuple[float, Any]] = {}


class SecretValueError(ValueError):
    """A secret that is not JSON."""


def read_json_secret(arn: str, *, refresh: bool = False, max_age_s: float = MAX_AGE_S) -> Any:
    """The secret's value parsed as JSON: the one kept if younger than `max_age_s`, else
    (or with `refresh`, after a login the kept one failed) read anew."""
    with _lock:
        kept = _values.get(arn)
    if kept is not None and not refresh and time.monotonic() - kept[0] < max_age_s:
        return kept[1]
    # A client per read (one per `max_age_s` at most): made from the process's session
    # as it is now (the emulator's, under `carrier dev`).
    text = AwsClient("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SecretValueError(
            f"the secret {arn} is not JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from None
    with _lock:
        _values[arn] = (time.monotonic(), value)
    return value


def forget_secret_values() -> None:
    """Read every secret anew on its next use (tests that rewrite or recreate them)."""
    with _lock:
        _values.clear()
