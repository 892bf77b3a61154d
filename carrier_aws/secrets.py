"""Secrets in AWS Secrets Manager: one secret per agent, `<prefix>/<agent id>`, and one
per webhook, `<webhook prefix>/<webhook id>`.

The `secretsmanager` secret store of `carrier_core.secrets` (entry point
`carrier.secret_stores`). `CARRIER_AGENT_SECRETS_PREFIX` and
`CARRIER_WEBHOOK_SECRETS_PREFIX` name the prefixes (template.yaml: `carrier/<stack>/agents`
and `carrier/<stack>/webhooks`), so the IAM policies can grant exactly that: the API
function creates, updates, tags and deletes both kinds, the turn functions (llm_step,
action_exec) read agents' only, the webhook function webhooks' only. Secrets Manager
encrypts them at rest (its AWS-managed KMS key). Values are never logged, nor put in an
error.

A read is kept for `MAX_AGE_S`, so a turn's providers and actions asking for keys do not
call Secrets Manager each time; a value changed through the API thus reaches warm turn
functions within that time. A write or delete forgets the owner's cached read, so the next
read in the same process asks Secrets Manager again (the emulator runs the API and the turn
functions in one process). Not Powertools Parameters, whose process-wide cache cannot forget
one name.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from carrier_aws.clients import AwsClient
from carrier_core.secrets import SecretOwner, SecretStoreError, decode_secrets, encode_secrets

if TYPE_CHECKING:
    from carrier_core.character import SecretPath
    from carrier_core.config import Settings

#: The agents' secrets' name prefix, without the trailing slash.
PREFIX_VARIABLE = "CARRIER_AGENT_SECRETS_PREFIX"
#: The webhooks' secrets' name prefix, without the trailing slash.
WEBHOOK_PREFIX_VARIABLE = "CARRIER_WEBHOOK_SECRETS_PREFIX"
#: How long a read is reused, in seconds.
MAX_AGE_S = 60.0
_NOT_FOUND = "ResourceNotFoundException"


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class SecretsManagerStore:
    """An owner's secrets as one Secrets Manager secret: `<prefix>/<agent id>`, or
    `<webhook_prefix>/<webhook id>` (without a webhook prefix, webhooks' secrets cannot be
    kept: an error names the variable)."""

    def __init__(
        self,
        prefix: str,
        client: Any = None,
        *,
        webhook_prefix: str = "",
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not prefix.strip("/"):
            raise SecretStoreError(
                f"{PREFIX_VARIABLE} must name a prefix, e.g. carrier/<stack>/agents"
            )
        self.prefixes: dict[SecretOwner, str] = {
            "agent": prefix.rstrip("/"),
            "webhook": webhook_prefix.rstrip("/"),
        }
        self.max_age_s = max_age_s
        #: Made on its first call, so the functions that never read a secret do not pay for it.
        self.client: Any = client if client is not None else AwsClient("secretsmanager")
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, dict[SecretPath, Any]]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretsManagerStore:
        """The store of `CARRIER_AGENT_SECRETS_PREFIX` and `CARRIER_WEBHOOK_SECRETS_PREFIX`."""
        prefix = os.environ.get(PREFIX_VARIABLE, "")
        if not prefix:
            raise SecretStoreError(
                f"the secretsmanager secret store needs {PREFIX_VARIABLE}, the prefix of the"
                " agents' secret names (template.yaml sets carrier/<stack>/agents)"
            )
        return cls(prefix, webhook_prefix=os.environ.get(WEBHOOK_PREFIX_VARIABLE, ""))

    def name(self, owner_id: uuid.UUID, owner: SecretOwner = "agent") -> str:
        prefix = self.prefixes[owner]
        if not prefix:
            raise SecretStoreError(
                f"the secretsmanager secret store needs {WEBHOOK_PREFIX_VARIABLE}, the prefix"
                " of the webhooks' secret names (template.yaml sets carrier/<stack>/webhooks)"
            )
        return f"{prefix}/{owner_id}"

    def _failed(
        self, doing: str, owner_id: uuid.UUID, owner: SecretOwner, error: ClientError
    ) -> SecretStoreError:
        message = error.response.get("Error", {}).get("Message", "")
        return SecretStoreError(
            f"Secrets Manager could not {doing} the secrets of {owner} {owner_id}"
            f" ({self.name(owner_id, owner)}): {_code(error)}: {message}"
        )

    def _remember(self, name: str, secrets: Mapping[SecretPath, Any]) -> None:
        with self._lock:
            self._cache[name] = (self._clock() + self.max_age_s, dict(secrets))

    def _forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)

    def put(
        self,
        owner_id: uuid.UUID,
        secrets: Mapping[SecretPath, Any],
        *,
        owner: SecretOwner = "agent",
    ) -> None:
        if not secrets:
            self.delete(owner_id, owner=owner)
            return
        text = encode_secrets(secrets)
        name = self.name(owner_id, owner)
        try:
            try:
                self.client.put_secret_value(SecretId=name, SecretString=text)
            except ClientError as exc:
                if _code(exc) != _NOT_FOUND:
                    raise
                self.client.create_secret(
                    Name=name,
                    SecretString=text,
                    Description=f"Carrier: the secrets of {owner} {owner_id}",
                    Tags=[{"Key": f"carrier:{owner}-id", "Value": str(owner_id)}],
                )
        except ClientError as exc:
            raise self._failed("store", owner_id, owner, exc) from None
        finally:
            self._forget(name)

    def get(self, owner_id: uuid.UUID, *, owner: SecretOwner = "agent") -> dict[SecretPath, Any]:
        name = self.name(owner_id, owner)
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached[0] > self._clock():
            return dict(cached[1])
        try:
            answer = self.client.get_secret_value(SecretId=name)
        except ClientError as exc:
            if _code(exc) != _NOT_FOUND:
                raise self._failed("read", owner_id, owner, exc) from None
            secrets: dict[SecretPath, Any] = {}
        else:
            secrets = decode_secrets(answer["SecretString"], source=name)
        self._remember(name, secrets)
        return dict(secrets)

    def delete(self, owner_id: uuid.UUID, *, owner: SecretOwner = "agent") -> None:
        """Deleted at once, without the recovery window: the owner is gone, and an agent
        registered again under the same id (a character file's) must be able to store its own."""
        name = self.name(owner_id, owner)
        try:
            self.client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        except ClientError as exc:
            if _code(exc) != _NOT_FOUND:
                raise self._failed("delete", owner_id, owner, exc) from None
        finally:
            self._forget(name)
