"""The character: who an agent is, read from an ElizaOS character file.

ElizaOS files in the wild mix two generations of the format (v0 speaks of
`user` in message examples and carries `modelProvider` and `clients`; v1 says
`name`), and plugins add fields of their own. Carrier must load all of them
unchanged, so every model here keeps unknown fields rather than rejecting them,
and the few fields we read are normalised on the way in.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

#: Namespace for ids derived from names, so the same character file always
#: maps to the same agent id (ElizaOS derives agent ids from names too).
CARRIER_NAMESPACE = uuid.UUID("6f1c2a1e-6c5b-4d8e-9a57-3c0f0c9d2b11")


REDACTED = "(redacted)"


class CharacterError(ValueError):
    """A character file or document that cannot be used, naming where and why."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


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

    _bio_as_list = field_validator("bio", "lore", mode="before")(_as_list)

    @property
    def agent_id(self) -> uuid.UUID:
        """The character's own id when it has one, else one derived from its name."""
        return self.id or uuid.uuid5(CARRIER_NAMESPACE, f"agent:{self.name}")

    @property
    def secrets(self) -> dict[str, Any]:
        """Secrets from `settings.secrets` and the top-level `secrets` (both forms exist)."""
        merged: dict[str, Any] = {}
        for found in (
            self.model_extra and self.model_extra.get("secrets"),
            self.settings.get("secrets"),
        ):
            if isinstance(found, dict):
                merged.update(found)
        return merged

    def to_document(self, *, with_secrets: bool = False) -> dict[str, Any]:
        """The JSON form, with ElizaOS field names and unknown fields included.

        Secrets keep their names but not their values unless asked for: the
        database never holds keys, which come from the environment or a secret store.
        """
        document = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if not with_secrets:
            for holder in (document, document.get("settings", {})):
                if isinstance(holder.get("secrets"), dict):
                    holder["secrets"] = dict.fromkeys(holder["secrets"], REDACTED)
        return document


def parse_character(data: Any, *, source: str = "character") -> Character:
    """Validate an already-decoded character document."""
    if not isinstance(data, dict):
        raise CharacterError(
            f"{source}: a character must be a JSON object, got {type(data).__name__}"
        )
    try:
        return Character.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(root)'}': {err['msg']}"
            for err in exc.errors()
        )
        raise CharacterError(f"{source}: {problems}") from None


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
    return parse_character(data, source=str(file))
