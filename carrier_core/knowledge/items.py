"""A character's `knowledge` items, imported as documents when the agent is registered.

ElizaOS character files hold three kinds of item: a text, `{"path": FILE}` and
`{"directory": FOLDER}` (either may say `"shared": true`, which Carrier accepts and
ignores: every document belongs to one agent). Paths are relative to the character file's
folder or, where ElizaOS looks for them, to the `knowledge/` folder beside it.

Files are read only for a character read from a file (`Character.folder`): a character
sent to the API names files on the client's machine, which the server must never open. Its
file items are reported as skipped; such documents are uploaded instead.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from carrier_core.character import Character, KnowledgeDirectory, KnowledgePath
from carrier_core.knowledge.documents import (
    ImportReport,
    Skipped,
    add_document,
    files_at,
    import_files,
    text_document,
)
from carrier_core.knowledge.extract import DocumentError

if TYPE_CHECKING:
    from carrier_core.agent_models import AgentModels

log = logging.getLogger(__name__)

#: Why a file item of a character that was not read from a file is not imported.
NOT_FROM_A_FILE = (
    "files are read only from a character file's folder; upload the document with"
    " POST /v1/agents/{id}/documents or `carrier knowledge add`"
)


@dataclass
class KnowledgePlan:
    """What registering a character imports, found before anything is stored."""

    texts: list[str] = field(default_factory=list)
    #: Files named on their own (`path` items): one that cannot be read is an error.
    files: list[Path] = field(default_factory=list)
    #: Files found in `directory` items: one that cannot be read is skipped and reported.
    found: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _resolve(folder: Path, relative: str) -> Path:
    """`relative` under the character's folder, else under `knowledge/` beside it (where
    ElizaOS looks), else the first (for the error to name)."""
    here = folder / relative
    if here.exists():
        return here
    beside = folder / "knowledge" / relative
    return beside if beside.exists() else here


def plan_knowledge(character: Character) -> KnowledgePlan:
    """The character's knowledge texts and files. Raises `DocumentError` naming the item for
    a `path` that is missing, a folder or of a type not read, and a `directory` that is
    missing or a file."""
    plan = KnowledgePlan()
    for item in character.knowledge:
        if isinstance(item, str):
            if item.removeprefix("\ufeff").strip():  # as a text is read: its BOM dropped
                plan.texts.append(item)
            continue
        relative = item.path if isinstance(item, KnowledgePath) else item.directory
        if character.folder is None:
            message = f"knowledge item {relative!r}: not imported: {NOT_FROM_A_FILE}"
            plan.skipped.append(Skipped(relative, message))
            continue
        path = _resolve(character.folder, relative)
        if isinstance(item, KnowledgeDirectory):
            if not path.is_dir():
                what = 'is a file: use {"path": ...}' if path.is_file() else "no such folder"
                raise DocumentError(f"knowledge directory {relative!r} ({path}): {what}")
            files, skipped = files_at(path)
            plan.found += files
            plan.skipped += skipped
        else:
            if path.is_dir():
                raise DocumentError(
                    f'knowledge path {relative!r} ({path}) is a folder: use {{"directory": ...}}'
                )
            if not path.is_file():
                raise DocumentError(f"knowledge path {relative!r} ({path}): no such file")
            plan.files += files_at(path)[0]
    return plan


def import_knowledge(
    runtime: AgentModels, agent_id: uuid.UUID, plan: KnowledgePlan
) -> ImportReport:
    """Store the planned documents (unembedded); skipped items are logged as warnings."""
    report = ImportReport(skipped=list(plan.skipped))
    for text in plan.texts:
        report.documents.append(add_document(runtime, agent_id, text_document(text)))
    import_files(runtime, agent_id, plan.files, strict=True, report=report)
    import_files(runtime, agent_id, plan.found, strict=False, report=report)
    for skipped in report.skipped:
        log.warning("knowledge skipped: %s", skipped.message)
    return report
