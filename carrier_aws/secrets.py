"""Agents' secrets in AWS Secrets Manager: one secret per agent, `<prefix>/<agent id>`.

The `secretsmanager` secret store of `carrier_core.secrets` (entry point
`carrier.secret_stores`). `CARRIER_AGENT_SECRETS_PREFIX` names the secrets' prefix
(template.yaml: `carrier/<stack>/agents`), so the IAM policies can grant exactly that: the
API function creates, updates, tags and deletes these secrets, the turn functions (llm_step,
action_exec) only read them. Secrets Manager encrypts them at rest (its AWS-managed KMS key).
Values are never logged, nor put in an error.

A read is kept for `MAX_AGE_S`, so a turn's providers and actions asking for keys do not
call Secrets Manager each time; a value changed through the API thus reaches warm turn
functions within that time. A write or delete forgets the agent's cached read, so the next
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
from carrier_core.secrets import SecretStoreError, decode_secrets, encode_secrets

if TYPE_CHECKING:
    from carrier_core.character import SecretPath
    from carrier_core.config import Settings

#: The secrets' name prefix, without the trailing slash.
PREFIX_VARIABLE = "CARRIER_AGENT_SECRETS_PREFIX"
#: How long a read is reused, in seconds.
MAX_AGE_S = 60.0
_NOT_FOUND = "ResourceNotFoundException"


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class SecretsManagerStore:
    """An agent's secrets as one Secrets Manager secret, `<prefix>/<agent id>`."""

    def __init__(
        self,
        prefix: str,
        client: Any = None,
        *,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not prefix.strip("/"):
            raise SecretStoreError(
                f"{PREFIX_VARIABLE} must name a prefix, e.g. carrier/<stack>/agents"
            )
        self.prefix = prefix.rstrip("/")
        self.max_age_s = max_age_s
        #: Made on its first call, so the functions that never read a secret do not pay for it.
        self.client: Any = client if client is not None else AwsClient("secretsmanager")
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[uuid.UUID, tuple[float, dict[SecretPath, Any]]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretsManagerStore:
        """The store of `CARRIER_AGENT_SECRETS_PREFIX`."""
        prefix = os.environ.get(PREFIX_VARIABLE, "")
        if not prefix:
            raise SecretStoreError(
                f"the secretsmanager secret store needs {PREFIX_VARIABLE}, the prefix of the"
                " agents' secret names (template.yaml sets carrier/<stack>/agents)"
            )
        return cls(prefix)

    def name(self, agent_id: uuid.UUID) -> str:
        return f"{self.prefix}/{agent_id}"

    def _failed(self, doing: str, agent_id: uuid.UUID, error: ClientError) -> SecretStoreError:
        message = error.response.get("Error", {}).get("Message", "")
        return SecretStoreError(
            f"Secrets Manager could not {doing} the secrets of agent {agent_id}"
            f" ({self.name(agent_id)}): {_code(error)}: {message}"
        )

    def _remember(self, agent_id: uuid.UUID, secrets: Mapping[SecretPath, Any]) -> None:
        with self._lock:
            self._cache[agent_id] = (self._clock() + self.max_age_s, dict(secrets))

    def _forget(self, agent_id: uuid.UUID) -> None:
        with self._lock:
            self._cache.pop(agent_id, None)

    def put(self, agent_id: uuid.UUID, secrets: Mapping[SecretPath, Any]) -> None:
        if not secrets:
            self.delete(agent_id)
            return
        text = encode_secrets(secrets)
        name = self.name(agent_id)
        try:
            try:
                self.client.put_secret_value(SecretId=name, SecretString=text)
            except ClientError as exc:
                if _code(exc) != _NOT_FOUND:
                    raise
                self.client.create_secret(
                    Name=name,
                    SecretString=text,
                    Description=f"Carrier: the secrets of agent {agent_id}",
                    Tags=[{"Key": "carrier:agent-id", "Value": str(agent_id)}],
                )
        except ClientError as exc:
            raise self._failed("store", agent_id, exc) from None
        finally:
            self._forget(agent_id)

    def get(self, agent_id: uuid.UUID) -> dict[SecretPath, Any]:
        with self._lock:
            cached = self._cache.get(agent_id)
        if cached is not None and cached[0] > self._clock():
            return dict(cached[1])
        try:
            answer = self.client.get_secret_value(SecretId=self.name(agent_id))
        except ClientError as exc:
            if _code(exc) != _NOT_FOUND:
                raise self._failed("read", agent_id, exc) from None
            secrets: dict[SecretPath, Any] = {}
        else:
            secrets = decode_secrets(answer["SecretString"], source=self.name(agent_id))
        self._remember(agent_id, secrets)
        return dict(secrets)

    def delete(self, agent_id: uuid.UUID) -> None:
        """Deleted at once, without the recovery window: the agent is gone, and an agent
        registered again under the same id (a character file's) must be able to store its own."""
        try:
            self.client.delete_secret(SecretId=self.name(agent_id), ForceDeleteWithoutRecovery=True)
        except ClientError as exc:
            if _code(exc) != _NOT_FOUND:
                raise self._failed("delete", agent_id, exc) from None
        finally:
            self._forget(agent_id)
