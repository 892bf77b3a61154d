"""Knowledge documents, as rows: an agent's documents and the fragments linked to them.

Storing a document and its fragments is one transaction under a lock on the agent's
documents, so two imports of the same file at once store it once, and a reader never sees a
document without its fragments (or a changed one with both its old and new fragments).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from psycopg.rows import DictRow

from carrier_core.store.base import NotFound, StoreBase, where


class DocumentStatus(StrEnum):
    #: Its fragments are stored; not all of them are embedded yet.
    PENDING = "pending"
    #: Every fragment is embedded: the KNOWLEDGE provider can recall it.
    READY = "ready"
    #: The last attempt to embed its fragments failed (`error` says why); the agent's next
    #: embed job tries again.
    FAILED = "failed"


class Outcome(StrEnum):
    """What storing a document did."""

    CREATED = "created"
    #: The same source held other content: its fragments were replaced.
    REPLACED = "replaced"
    #: The same content was stored already: nothing changed.
    UNCHANGED = "unchanged"


class NewDocument(NamedTuple):
    """A document to store, before it has an id."""

    title: str
    #: Where it came from: a file's absolute path, `upload:<file name>`, `character:<sha256>`.
    #: The same source with new content replaces the document's fragments.
    source: str
    content_type: str
    #: sha256 (hex) of the bytes given: the same content is stored once per agent.
    sha256: str


class DocumentRecord(NamedTuple):
    id: uuid.UUID
    agent_id: uuid.UUID
    title: str
    source: str
    content_type: str
    sha256: str
    status: DocumentStatus
    error: str | None
    fragments: int
    #: Page order, newest first (the list's cursor).
    seq: int
    created_at: datetime
    updated_at: datetime


_COLUMNS = (
    "id, agent_id, title, source, content_type, sha256, status, error, fragments, seq,"
    " created_at, updated_at"
)


def _record(row: DictRow) -> DocumentRecord:
    return DocumentRecord(**{**row, "status": DocumentStatus(row["status"])})


# The fragments of a document, unembedded, in one statement whatever their number.
_INSERT_FRAGMENTS = (
    "INSERT INTO memories (id, agent_id, entity_id, kind, content, metadata, document_id)"
    " SELECT gen_random_uuid(), %(agent)s, %(agent)s, 'fragment',"
    " jsonb_build_object('text', t.text, 'source', 'knowledge'),"
    " jsonb_build_object('document_id', %(document)s::text, 'position', t.n - 1), %(document)s"
    " FROM unnest(%(texts)s::text[]) WITH ORDINALITY AS t(text, n)"
)


class KnowledgeStore(StoreBase):
    """Documents and their fragments: stored, listed, marked as their embedding goes."""

    def document_stored_as(
        self, agent_id: uuid.UUID, source: str, sha256: str
    ) -> DocumentRecord | None:
        """The document holding exactly this content from this source, if stored: what lets an
        unchanged file be skipped without reading it any further."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM documents WHERE agent_id = %s AND source = %s"
                " AND sha256 = %s",
                (agent_id, source, sha256),
            ).fetchone()
        return None if row is None else _record(row)

    def save_document(
        self, agent_id: uuid.UUID, document: NewDocument, fragments: Sequence[str]
    ) -> tuple[DocumentRecord, Outcome]:
        """Store a document with its fragments (unembedded, so `pending`), idempotently:

        - content already stored (any source) is not stored again: that document is returned;
        - a source stored with other content keeps its document (id, place in the list), whose
          old fragments are replaced by these;
        - a source whose new content is already stored as another document is removed: the
          other document holds that content.
        """
        with self.transaction() as conn:
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"documents:{agent_id}",)
            )
            same = conn.execute(
                f"SELECT {_COLUMNS} FROM documents WHERE agent_id = %s AND sha256 = %s",
                (agent_id, document.sha256),
            ).fetchone()
            at_source = conn.execute(
                f"SELECT {_COLUMNS} FROM documents WHERE agent_id = %s AND source = %s",
                (agent_id, document.source),
            ).fetchone()
            if same is not None:
                if at_source is not None and at_source["id"] != same["id"]:
                    conn.execute("DELETE FROM documents WHERE id = %s", (at_source["id"],))
                return _record(same), Outcome.UNCHANGED
            if at_source is not None:
                conn.execute("DELETE FROM memories WHERE document_id = %s", (at_source["id"],))
                row = conn.execute(
                    "UPDATE documents SET title = %s, content_type = %s, sha256 = %s,"
                    " status = 'pending', error = NULL, fragments = %s, updated_at = now()"
                    f" WHERE id = %s RETURNING {_COLUMNS}",
                    (
                        document.title,
                        document.content_type,
                        document.sha256,
                        len(fragments),
                        at_source["id"],
                    ),
                ).fetchone()
                outcome = Outcome.REPLACED
            else:
                row = conn.execute(
                    "INSERT INTO documents (id, agent_id, title, source, content_type, sha256,"
                    f" fragments) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                    (
                        uuid.uuid4(),
                        agent_id,
                        document.title,
                        document.source,
                        document.content_type,
                        document.sha256,
                        len(fragments),
                    ),
                ).fetchone()
                outcome = Outcome.CREATED
            assert row is not None
            conn.execute(
                _INSERT_FRAGMENTS,
                {"agent": agent_id, "document": row["id"], "texts": list(fragments)},
            )
        return _record(row), outcome

    def document(self, agent_id: uuid.UUID, document_id: uuid.UUID) -> DocumentRecord:
        """The agent's document; `NotFound` if it has none of this id."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM documents WHERE id = %s AND agent_id = %s",
                (document_id, agent_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"no document with id {document_id}")
        return _record(row)

    def documents_page(
        self, agent_id: uuid.UUID, *, limit: int, before_seq: int | None = None
    ) -> list[DocumentRecord]:
        """A page of the agent's documents, newest first (keyset: `before_seq` the last seq)."""
        filters, params = where(("agent_id = %s", agent_id), ("seq < %s", before_seq))
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM documents WHERE {filters}"
                " ORDER BY seq DESC LIMIT %s".encode(),
                [*params, limit],
            ).fetchall()
        return [_record(row) for row in rows]

    def delete_document(self, agent_id: uuid.UUID, document_id: uuid.UUID) -> bool:
        """Remove a document; its fragments go with it (they reference it ON DELETE CASCADE)."""
        with self.connection() as conn:
            return (
                conn.execute(
                    "DELETE FROM documents WHERE id = %s AND agent_id = %s", (document_id, agent_id)
                ).rowcount
                > 0
            )

    def mark_documents_embedded(self, agent_id: uuid.UUID) -> int:
        """Mark ready the agent's documents whose fragments are all embedded; returns how many.
        One index probe when none is waiting, as after most turns."""
        with self.connection() as conn:
            return conn.execute(
                "UPDATE documents d SET status = 'ready', error = NULL, updated_at = now()"
                " WHERE d.agent_id = %s AND d.status <> 'ready' AND NOT EXISTS (SELECT 1"
                " FROM memories m WHERE m.document_id = d.id AND m.embedding IS NULL)",
                (agent_id,),
            ).rowcount

    def mark_documents_failed(self, agent_id: uuid.UUID, error: str) -> int:
        """Record on the agent's waiting documents that embedding their fragments failed."""
        with self.connection() as conn:
            return conn.execute(
                "UPDATE documents SET status = 'failed', error = %s, updated_at = now()"
                " WHERE agent_id = %s AND status <> 'ready'",
                (error, agent_id),
            ).rowcount
