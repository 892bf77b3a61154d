"""The character: who an agent is, read from an ElizaOS character file.

ElizaOS files in the wild mix two generations of the format (v0 speaks of
`user` in message examples and carries `modelProvider` and `clients`; v1 says
`name`), and plugins add fields of their own. Carrier must load all of them
unchanged, so every model here keeps unknown fields rather than rejecting them,
and the few fields we read are normalised on the way in.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

#: Namespace for ids derived from names, so the same character file always
#: maps to the same agent id (ElizaOS derives agent ids from names too).
CARRIER_NAMESPACE = uuid.UUID("6f1c2a1e-6c5b-4d8e-9a57-3c0f0c9d2b11")


#: What a stored character holds in place of a secret's value. The name stays, so the API
#: shows which secrets an agent has, and a document sent back with the marker keeps the value
#: kept in the secret store (`carrier_core.secrets`).
SECRET = "(secret)"

#: Setting names that hold credentials (case-insensitive): names ending in KEY, TOKEN,
#: SECRET or COOKIE(S) (`*_API_KEY`, `EVM_PRIVATE_KEY`, `AWS_SECRET_ACCESS_KEY`,
#: `TWITTER_COOKIES`; camelCase too: apiKey, discordToken, clientSecret) and names with
#: PASSWORD, MNEMONIC, SEED_PHRASE or CREDENTIAL in them. A name taken for a credential by
#: mistake costs little (its value is kept in the secret store, and read back as any
#: other; the API shows the marker); one missed would be stored in plain text.
_CREDENTIAL = re.compile(
    r"(?:KEY|TOKEN|SECRET|COOKIES?)$|PASSWORD|MNEMONIC|SEED_?PHRASE|CREDENTIAL", re.IGNORECASE
)

#: A URL with a password in it (`postgresql://user:password@host/db`): a secret whatever
#: the setting is called.
_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.IGNORECASE)

#: Where a secret sits in a character document: ("secrets", NAME), ("settings", NAME),
#: ("settings", "secrets", NAME), or deeper in `settings` (("settings", "discord", NAME));
#: an item of a list is named by its index ("settings", "accounts", "0", "password").
SecretPath = tuple[str, ...]


#: A handle: lowercase letters, digits and inner hyphens, at most 48 characters.
HANDLE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?")


def handle_for(name: str) -> str:
    """The slug of a name ("Dr. Zoë Hart" -> "dr-zoe-hart"): accents dropped, each run of
    other characters one hyphen, "agent" if nothing is left. Migration 0010 gave agents
    stored before it the same slug of their ASCII letters and digits."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:48].strip("-") or "agent"


def is_credential_name(name: str) -> bool:
    """Whether a setting of this name holds a credential, wherever it is written."""
    return bool(_CREDENTIAL.search(name))


def _holds_value(value: Any) -> bool:
    """Null and the empty string (placeholders in many character files) hide nothing."""
    return value is not None and value != ""


def _secrets_in(document: dict[str, Any]) -> Iterator[tuple[SecretPath, Any]]:
    """Every secret of a character document: all of `secrets` and `settings.secrets`, and
    in the rest of `settings`, at any depth (in lists too), credential-named keys and URLs
    with a password."""
    for name, value in (document.get("secrets") or {}).items():
        yield ("secrets", name), value
    settings = document.get("settings") or {}
    for name, value in (settings.get("secrets") or {}).items():
        yield ("settings", "secrets", name), value
    pending: list[tuple[SecretPath, Any]] = [(("settings",), settings)]
    while pending:
        where, holder = pending.pop()
        items = holder.items() if isinstance(holder, dict) else enumerate(holder)
        for key, value in items:
            name = str(key)
            if where == ("settings",) and name == "secrets":
                continue
            if (isinstance(key, str) and is_credential_name(name)) or (
                isinstance(value, str) and _URL_WITH_PASSWORD.match(value)
            ):
                yield (*where, name), value
            elif isinstance(value, dict | list):
                pending.append(((*where, name), value))


def _redact(document: dict[str, Any]) -> dict[str, Any]:
    """Put `SECRET` in place of every secret's value in this document (changed in place)."""
    for path, value in list(_secrets_in(document)):
        if _holds_value(value):
            *where, name = path
            holder: Any = document
            for key in where:
                holder = holder[int(key)] if isinstance(holder, list) else holder[key]
            holder[int(name) if isinstance(holder, list) else name] = SECRET
    return document


def secret_location(path: SecretPath) -> str:
    """A secret's place as people write it: `settings.secrets.X_TOKEN`."""
    return ".".join(path)


class CharacterError(ValueError):
    """A character file or document that cannot be used, naming where and why."""


class _Open(BaseModel):
    # defer_build: a character's validators are built when one is first read, not at
    # import. Most Lambda functions (ingest, the sweep, webhooks...) never read one.
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)


class ExampleContent(_Open):
    text: str = ""
    action: str | None = None
    actions: list[str] | None = None


class ExampleMessage(_Open):
    """One line of an example dialogue; v0 files name the speaker `user`, v1 files `name`."""

    speaker: str = Field(validation_alias=AliasChoices("name", "user"), serialization_alias="name")
    content: ExampleContent


class Style(_Open):
    all: list[str] = Field(default_factory=list)
    chat: list[str] = Field(default_factory=list)
    post: list[str] = Field(default_factory=list)


class KnowledgePath(_Open):
    path: str
    shared: bool = False


class KnowledgeDirectory(_Open):
    directory: str
    shared: bool = False


KnowledgeItem = str | KnowledgePath | KnowledgeDirectory


def _as_list(value: Any) -> Any:
    """Bio and lore may be one string or a list of them; we always hold a list."""
    if isinstance(value, str):
        return [value]
    return value


class Character(_Open):
    """An ElizaOS character. Unknown fields are kept and round-trip through storage."""

    id: uuid.UUID | None = None
    name: str = Field(min_length=1)
    username: str | None = None
    system: str | None = None
    bio: list[str] = Field(default_factory=list)
    lore: list[str] = Field(default_factory=list)
    message_examples: list[list[ExampleMessage]] = Field(
        default_factory=list, alias="messageExamples"
    )
    post_examples: list[str] = Field(default_factory=list, alias="postExamples")
    topics: list[str] = Field(default_factory=list)
    adjectives: list[str] = Field(default_factory=list)
    style: Style = Field(default_factory=Style)
    knowledge: list[KnowledgeItem] = Field(default_factory=list)
    plugins: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    templates: dict[str, str] = Field(default_factory=dict)
    #: ElizaOS v1 keeps secrets here; v0 files keep them in `settings.secrets`.
    secrets: dict[str, Any] | None = None

    _bio_as_list = field_validator("bio", "lore", mode="before")(_as_list)

    #: The folder of the file this character was read from (None: it came from elsewhere,
    #: an API body or the database). Never stored: it says where knowledge files are on
    #: this machine, for this load only.
    _folder: Path | None = PrivateAttr(default=None)

    @property
    def folder(self) -> Path | None:
        """Where the character's knowledge `path` and `directory` items are read from; None
        for a character not read from a file, whose file items are not read (a server must
        not open paths a client names)."""
        return self._folder

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        """A name of only white space names no one (and slugs to the handle `agent`)."""
        if not name.strip():
            raise ValueError("must not be blank")
        return name

    @field_validator("settings")
    @classmethod
    def _secrets_are_an_object(cls, settings: dict[str, Any]) -> dict[str, Any]:
        """Secrets are named: a bare value could be neither found nor kept out of storage."""
        found = settings.get("secrets")
        if found is not None and not isinstance(found, dict):
            raise ValueError(
                f"settings.secrets must be an object of names to values, got {type(found).__name__}"
            )
        return settings

    @property
    def handle(self) -> str:
        """How a tenant addresses this agent when it is stored: the slug of its name."""
        return handle_for(self.name)

    @property
    def agent_id(self) -> uuid.UUID:
        """The character's own id when it has one, else one derived from its name."""
        return self.id or uuid.uuid5(CARRIER_NAMESPACE, f"agent:{self.name}")

    def secret_values(self) -> dict[SecretPath, Any]:
        """The character's secrets by where they sit, with their values: a value already
        stored (`SECRET`) stays the marker; empty ones are left out, as they hide nothing."""
        document = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {path: value for path, value in _secrets_in(document) if _holds_value(value)}

    def to_document(self) -> dict[str, Any]:
        """The JSON form, with ElizaOS field names and unknown fields included, and `SECRET`
        in place of every secret's value: this is what is stored and what the API shows,
        so no value reaches the database or a client (they go to `carrier_core.secrets`)."""
        return _redact(self.model_dump(mode="json", by_alias=True, exclude_none=True))

    @property
    def stored_settings(self) -> dict[str, Any]:
        """`settings` as `to_document` has them, without the rest of the character."""
        settings: dict[str, Any] = _redact({"settings": copy.deepcopy(self.settings)})["settings"]
        return settings


def parse_character(
    data: Any, *, source: str = "character", folder: Path | None = None
) -> Character:
    """Validate an already-decoded character document; `folder` is where it was read from
    (its knowledge files are relative to it)."""
    if not isinstance(data, dict):
        raise CharacterError(
            f"{source}: a character must be a JSON object, got {type(data).__name__}"
        )
    try:
        character = Character.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(root)'}': {err['msg']}"
            for err in exc.errors()
        )
        raise CharacterError(f"{source}: {problems}") from None
    character._folder = folder
    return character


def load_character(path: str | Path) -> Character:
    """Read a character file; errors name the file and the field or JSON position."""
    file = Path(path)
    try:
        raw = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CharacterError(f"{file}: no such character file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CharacterError(f"{file}: cannot read character file: {exc}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CharacterError(
            f"{file}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    return parse_character(data, source=str(file), folder=file.resolve().parent)
