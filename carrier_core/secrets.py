"""Where agents' secrets are kept: never in the database, never shown by the API.

When an agent is registered, its character's secrets (`Character.secret_values`: API keys,
tokens, passwords, wherever the file put them) are split from it: the stored character
keeps their names with `SECRET` for values, and the values go to a `SecretStore`, one entry
per agent, put and deleted with the agent (`Runtime.register_agent`, `Runtime.delete_agent`).
Plugins read them in a turn with `TurnContext.get_setting`.

The store is chosen by the `secret_store` setting (`CARRIER_SECRET_STORE`), by the name of
an entry point of the group `carrier.secret_stores`, called with the settings:

- `file` (the default: `carrier chat`, tests): `FileSecretStore`, one JSON file per agent
  in `<data dir>/secrets/`, readable by its user only (files 0600, folder 0700).
- `secretsmanager` (template.yaml sets it, so `carrier dev` has it too, on moto):
  `carrier_aws.secrets`, one AWS Secrets Manager secret per agent. It lives in
  carrier_aws because the core imports no AWS SDK; the entry point is how the core finds it.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from carrier_core.character import CharacterError, SecretPath

if TYPE_CHECKING:
    from carrier_core.config import Settings

ENTRY_POINT_GROUP = "carrier.secret_stores"

#: An agent's secrets take at most this many bytes once encoded: the most one AWS Secrets
#: Manager secret holds, kept everywhere so a character that works locally also deploys.
MAX_SECRET_BYTES = 65536


class SecretStoreError(RuntimeError):
    """A secret store that cannot be opened, read or written; names the agent, never a value."""


class SecretStore(Protocol):
    """An agent's secrets by their place in its character (`SecretPath`)."""

    def put(self, agent_id: uuid.UUID, secrets: Mapping[SecretPath, Any]) -> None:
        """Replace the agent's secrets with these; with none, delete them."""

    def get(self, agent_id: uuid.UUID) -> dict[SecretPath, Any]:
        """The agent's secrets; none stored is an empty mapping."""

    def delete(self, agent_id: uuid.UUID) -> None:
        """Forget the agent's secrets; none stored is no error."""


def encode_secrets(secrets: Mapping[SecretPath, Any]) -> str:
    """The JSON every store keeps: `{"secrets": [{"path": [...], "value": ...}]}`. Raises
    `CharacterError` when it is over `MAX_SECRET_BYTES`."""
    text = json.dumps(
        {"secrets": [{"path": list(path), "value": value} for path, value in secrets.items()]}
    )
    size = len(text.encode())
    if size > MAX_SECRET_BYTES:
        raise CharacterError(
            f"the character's secrets take {size} bytes once encoded; at most"
            f" {MAX_SECRET_BYTES} can be kept"
        )
    return text


def decode_secrets(text: str, *, source: str) -> dict[SecretPath, Any]:
    """What `encode_secrets` wrote; anything else is a `SecretStoreError` naming `source`."""
    try:
        entries = json.loads(text)["secrets"]
        return {tuple(str(part) for part in e["path"]): e["value"] for e in entries}
    except (ValueError, KeyError, TypeError):
        raise SecretStoreError(
            f"{source}: not a Carrier secrets document ({{'secrets': [{{path, value}}]}})"
        ) from None


class FileSecretStore:
    """One JSON file per agent, `<directory>/<agent id>.json`, readable by its user only.

    Each file is written whole to a temporary file (made 0600) and renamed over the old
    one, so a reader never sees half a file and two processes never mix their writes.
    """

    def __init__(self, directory: Path):
        self.directory = directory

    @classmethod
    def from_settings(cls, settings: Settings) -> FileSecretStore:
        """The store under the data folder (`CARRIER_HOME`, default ~/.carrier)."""
        return cls(settings.data_dir / "secrets")

    def file(self, agent_id: uuid.UUID) -> Path:
        return self.directory / f"{agent_id}.json"

    def put(self, agent_id: uuid.UUID, secrets: Mapping[SecretPath, Any]) -> None:
        if not secrets:
            self.delete(agent_id)
            return
        text = encode_secrets(secrets)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.directory.chmod(0o700)
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{agent_id}.")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    file.write(text)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self.file(agent_id))
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise SecretStoreError(
                f"cannot write the secrets of agent {agent_id} in {self.directory}: {exc.strerror}"
            ) from None

    def get(self, agent_id: uuid.UUID) -> dict[SecretPath, Any]:
        file = self.file(agent_id)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretStoreError(f"cannot read {file}: {exc}") from None
        return decode_secrets(text, source=str(file))

    def delete(self, agent_id: uuid.UUID) -> None:
        try:
            self.file(agent_id).unlink(missing_ok=True)
        except OSError as exc:
            raise SecretStoreError(
                f"cannot delete the secrets of agent {agent_id}: {exc.strerror}"
            ) from None


def open_secret_store(settings: Settings) -> SecretStore:
    """The store the settings name (`secret_store`), made by its entry point."""
    return _factory(settings.secret_store)(settings)


@cache
def _factory(name: str) -> Callable[[Settings], SecretStore]:
    """The entry point's factory, looked up once per process (it scans every package)."""
    group = entry_points(group=ENTRY_POINT_GROUP)
    found = [e for e in group if e.name == name]
    if not found:
        known = ", ".join(sorted({e.name for e in group})) or "none installed"
        raise SecretStoreError(
            f"no secret store named {name!r} (CARRIER_SECRET_STORE); known: {known}"
        )
    factory: Callable[[Settings], SecretStore] = found[0].load()
    return factory
