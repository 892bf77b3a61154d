"""Adding documents to an agent: the one way a document and its fragments are stored.

A character's knowledge, `carrier knowledge add` and `POST /v1/agents/{id}/documents` all
come here. The document is read, cut into fragments and stored with them unembedded
(`pending`); embedding is asked for afterwards, and is where the callers differ: a local
run embeds at once, the cloud's API queues a request for the embed function, so an upload
never waits for an embedding model. The embed step (`embed_pending`) marks a document
`ready` once its fragments are embedded.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from carrier_core.knowledge.chunk import chunk_text
from carrier_core.knowledge.extract import DocumentError, content_type_for, extract_text
from carrier_core.models.tokens import count_tokens
from carrier_core.storable import storable
from carrier_core.store.knowledge import DocumentRecord, NewDocument, Outcome

if TYPE_CHECKING:
    from carrier_core.agent_models import AgentModels

#: Longest title kept (a longer one is cut).
MAX_TITLE_CHARS = 200


@dataclass(frozen=True)
class DocumentFile:
    """A document's bytes and where they came from, not yet read."""

    #: Names it in errors.
    name: str
    data: bytes
    #: Its identity across imports (see `NewDocument.source`).
    source: str
    content_type: str
    title: str


def _title(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TITLE_CHARS else text[: MAX_TITLE_CHARS - 1] + "…"


def text_document(text: str) -> DocumentFile:
    """A knowledge text of a character: its source is its hash, so a changed text is a new
    document beside the old one (as a character's texts have no other identity)."""
    data = text.encode()
    digest = hashlib.sha256(data).hexdigest()
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return DocumentFile(
        name="knowledge text " + repr(_title(first_line)[:40]),
        data=data,
        source=f"character:{digest}",
        content_type="text/plain",
        title=_title(first_line),
    )


def file_document(path: Path) -> DocumentFile:
    """A file, read now. Raises `DocumentError` naming it when it is missing, unreadable or
    of a type not read."""
    content_type = content_type_for(str(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(f"{path}: no such file") from None
    except OSError as exc:
        raise DocumentError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return DocumentFile(
        name=str(path),
        data=data,
        source=str(path.resolve()),
        content_type=content_type,
        title=path.name,
    )


def upload_document(
    file_name: str, data: bytes, declared_type: str | None, title: str | None = None
) -> DocumentFile:
    """A client's upload. Its source is its file name (without any folder a browser may
    send): uploading a file of the same name again replaces it."""
    name = file_name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name:
        raise DocumentError("the upload has no file name: name the file (e.g. notes.md)")
    try:
        storable(name)
        if title is not None:
            storable(title)
    except ValueError as exc:
        raise DocumentError(f"{name!r}: file name or title {exc}") from None
    return DocumentFile(
        name=name,
        data=data,
        source=f"upload:{name}",
        content_type=content_type_for(name, declared_type),
        title=_title(title) if title and title.strip() else _title(name),
    )


def add_document(
    runtime: AgentModels, agent_id: uuid.UUID, document: DocumentFile
) -> tuple[DocumentRecord, Outcome]:
    """Store the document with its fragments, unembedded; the same content again changes
    nothing (and is not read again). Fragments are `knowledge_chunk_tokens` long as the
    agent's embedding model counts tokens, overlapping by `knowledge_chunk_overlap`.

    Raises `DocumentError` naming the document when it cannot be read or holds no text."""
    digest = hashlib.sha256(document.data).hexdigest()
    unchanged = runtime.store.document_stored_as(agent_id, document.source, digest)
    if unchanged is not None:
        return unchanged, Outcome.UNCHANGED
    text = extract_text(document.name, document.data, document.content_type)
    model = runtime.models_for(runtime.store.character(agent_id)).embedding.name
    settings = runtime.settings
    fragments = chunk_text(
        text,
        count=lambda piece: count_tokens(model, piece),
        size=settings.knowledge_chunk_tokens,
        overlap=settings.knowledge_chunk_overlap,
    )
    new = NewDocument(document.title, document.source, document.content_type, digest)
    return runtime.store.save_document(agent_id, new, fragments)


@dataclass(frozen=True)
class Skipped:
    """A file or knowledge item not imported, and why."""

    name: str
    #: Why, naming it.
    message: str


@dataclass
class ImportReport:
    documents: list[tuple[DocumentRecord, Outcome]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for _, done in self.documents if done is outcome)


def files_at(path: Path) -> tuple[list[Path], list[Skipped]]:
    """The files to import from `path`: the file itself, which must be of a type read
    (else `DocumentError` naming it), or a folder's files, in name order, its subfolders'
    included; files of other types are skipped and reported. Hidden files and folders (a
    name starting with a dot) are left out."""
    if path.is_file():
        content_type_for(str(path))
        return [path], []
    if not path.is_dir():
        raise DocumentError(f"{path}: no such file or folder")
    files: list[Path] = []
    skipped: list[Skipped] = []
    for folder, subfolders, names in os.walk(path):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith(".")):
            found = Path(folder, name)
            try:
                content_type_for(str(found))
            except DocumentError as exc:
                skipped.append(Skipped(str(found), str(exc)))
            else:
                files.append(found)
    return files, skipped


def import_files(
    runtime: AgentModels,
    agent_id: uuid.UUID,
    files: Sequence[Path],
    *,
    strict: bool,
    report: ImportReport,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Add each file as a document, into `report`. A file that cannot be read raises its
    `DocumentError` when `strict` (a file named on its own), else it is skipped and
    reported (a file found in a folder). `progress` is told (files done, files in all)
    after each file."""
    for done, path in enumerate(files, start=1):
        try:
            report.documents.append(add_document(runtime, agent_id, file_document(path)))
        except DocumentError as exc:
            if strict:
                raise
            report.skipped.append(Skipped(str(path), str(exc)))
        if progress is not None:
            progress(done, len(files))
