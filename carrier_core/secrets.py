"""Where secrets are kept: never in the database, never shown by the API.

Two owners have secrets, one entry each (`SecretOwner`):

- an agent: when it is registered, its character's secrets (`Character.secret_values`: API
  keys, tokens, passwords, wherever the file put them) are split from it: the stored
  character keeps their names with `SECRET` for values, and the values go to the store, put
  and deleted with the agent (`Runtime.register_agent`, `Runtime.delete_agent`). Plugins
  read them in a turn with `TurnContext.get_setting`;
- a webhook: the secret that signs its deliveries (`carrier_core.webhooks.registry`), which
  every delivery must read back, so it cannot be hashed.

The store is chosen by the `secret_store` setting (`CARRIER_SECRET_STORE`), by the name of
an entry point of the group `carrier.secret_stores`, called with the settings:

- `file` (the default: `carrier chat`, `carrier dev`, tests): `FileSecretStore`, one JSON
  file per owner in `<data dir>/secrets/` (webhooks' in its `webhooks/`), readable by its
  user only (files 0600, folders 0700). `carrier dev` sets it over the template's choice:
  moto's Secrets Manager would not outlast the process.
- `secretsmanager` (template.yaml sets it; the tests run it on moto):
  `carrier_aws.secrets`, one AWS Secrets Manager secret per owner. It lives in
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
from typing import TYPE_CHECKING, Any, Literal, Protocol

from carrier_core.character import CharacterError, SecretPath

if TYPE_CHECKING:
    from carrier_core.config import Settings

ENTRY_POINT_GROUP = "carrier.secret_stores"

#: An agent's secrets take at most this many bytes once encoded: the most one AWS Secrets
#: Manager secret holds, kept everywhere so a character that works locally also deploys.
MAX_SECRET_BYTES = 65536


#: Whose secrets an entry holds: an agent's (by their place in its character), or a
#: webhook's (its signing secret). Each has its own place in a store, so that a function
#: can be allowed to read one and not the other (template.yaml: the webhook function reads
#: webhooks' secrets only).
SecretOwner = Literal["agent", "webhook"]


class SecretStoreError(RuntimeError):
    """A secret store that cannot be opened, read or written; names the owner, never a value."""


class SecretStore(Protocol):
    """An owner's secrets by their place (`SecretPath`): an agent's, or a webhook's."""

    def put(
        self, owner_id: uuid.UUID, secrets: Mapping[SecretPath, Any], *, owner: SecretOwner = ...
    ) -> None:
        """Replace the owner's secrets with these; with none, delete them."""

    def get(self, owner_id: uuid.UUID, *, owner: SecretOwner = ...) -> dict[SecretPath, Any]:
        """The owner's secrets; none stored is an empty mapping."""

    def delete(self, owner_id: uuid.UUID, *, owner: SecretOwner = ...) -> None:
        """Forget the owner's secrets; none stored is no error."""


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
    """One JSON file per owner, `<directory>/<agent id>.json` or
    `<directory>/webhooks/<webhook id>.json`, readable by its user only.

    Each file is written whole to a temporary file (made 0600) and renamed over the old
    one, so a reader never sees half a file and two processes never mix their writes.
    """

    def __init__(self, directory: Path):
        self.directory = directory

    @classmethod
    def from_settings(cls, settings: Settings) -> FileSecretStore:
        """The store under the data folder (`CARRIER_HOME`, default ~/.carrier)."""
        return cls(settings.data_dir / "secrets")

    def file(self, owner_id: uuid.UUID, *, owner: SecretOwner = "agent") -> Path:
        folder = self.directory if owner == "agent" else self.directory / "webhooks"
        return folder / f"{owner_id}.json"

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
        file = self.file(owner_id, owner=owner)
        try:
            for folder in (self.directory, file.parent):
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                folder.chmod(0o700)
            handle, temporary = tempfile.mkstemp(dir=file.parent, prefix=f".{owner_id}.")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write(text)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, file)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise SecretStoreError(
                f"cannot write the secrets of {owner} {owner_id} in {file.parent}: {exc.strerror}"
            ) from None

    def get(self, owner_id: uuid.UUID, *, owner: SecretOwner = "agent") -> dict[SecretPath, Any]:
        file = self.file(owner_id, owner=owner)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretStoreError(f"cannot read {file}: {exc}") from None
        return decode_secrets(text, source=str(file))

    def delete(self, owner_id: uuid.UUID, *, owner: SecretOwner = "agent") -> None:
        try:
            self.file(owner_id, owner=owner).unlink(missing_ok=True)
        except OSError as exc:
            raise SecretStoreError(
                f"cannot delete the secrets of {owner} {owner_id}: {exc.strerror}"
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
