"""Knowledge: documents an agent was given, cut into fragments the KNOWLEDGE provider recalls.

A document comes from a character's `knowledge` items, `carrier knowledge add` or the API;
it is stored with its fragments unembedded (`pending`) and becomes `ready` when the embed
step has embedded them (see `documents` for the one way they are stored).
"""

from carrier_core.knowledge.documents import (
    DocumentFile,
    ImportReport,
    Skipped,
    add_document,
    file_document,
    files_at,
    import_files,
    text_document,
    upload_document,
)
from carrier_core.knowledge.extract import DocumentError, UnsupportedDocument
from carrier_core.knowledge.items import KnowledgePlan, import_knowledge, plan_knowledge
from carrier_core.store.knowledge import DocumentRecord, DocumentStatus, Outcome

__all__ = [
    "DocumentError",
    "DocumentFile",
    "DocumentRecord",
    "DocumentStatus",
    "ImportReport",
    "KnowledgePlan",
    "Outcome",
    "Skipped",
    "UnsupportedDocument",
    "add_document",
    "file_document",
    "files_at",
    "import_files",
    "import_knowledge",
    "plan_knowledge",
    "text_document",
    "upload_document",
]
