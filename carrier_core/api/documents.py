"""An agent's knowledge documents: upload one, list them, read one's status, remove one.

An upload is a file sent as `multipart/form-data` (`file`, and an optional `title`), as a
browser form or `curl -F file=@notes.md` sends it: plain text, Markdown or PDF. The
document is read and cut into fragments within the request and stored `pending`; the
fragments are embedded afterwards (in the cloud by the embed function, which the upload
queues a request for), and the document becomes `ready` once they are.
"""

from __future__ import annotations

import uuid
from contextlib import suppress
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import BaseModel

from carrier_core.api.deps import AgentRef, Caller, EmbedDep, RuntimeDep
from carrier_core.api.errors import ApiError, ErrorBody
from carrier_core.api.pages import Cursor, Limit, Page, seq_cursor
from carrier_core.api.posting import agent_of
from carrier_core.knowledge import (
    DocumentError,
    DocumentRecord,
    DocumentStatus,
    Outcome,
    UnsupportedDocument,
    add_document,
    upload_document,
)
from carrier_core.knowledge.documents import MAX_TITLE_CHARS
from carrier_core.models import ModelError
from carrier_core.store.base import NotFound

router = APIRouter(prefix="/v1/agents/{agent}/documents", tags=["documents"])


class DocumentView(BaseModel):
    id: uuid.UUID
    title: str
    #: Where it came from: `upload:<file name>`, a file's path, or `character:<sha256>`.
    source: str
    content_type: str
    #: sha256 of the content given: the same content is stored once.
    sha256: str
    #: pending (fragments not all embedded yet), ready (recalled in conversation) or failed
    #: (embedding failed: `error` says why; tried again with the agent's next embed job).
    status: DocumentStatus
    error: str | None
    fragments: int
    created_at: datetime
    updated_at: datetime


class UploadedView(DocumentView):
    #: created, replaced (a file of the same name had other content: its fragments were
    #: replaced) or unchanged (this content was stored already; answered 200, not 201).
    outcome: Outcome


def _view(record: DocumentRecord) -> DocumentView:
    return DocumentView.model_validate(record, from_attributes=True)


@router.post(
    "",
    status_code=201,
    response_model=UploadedView,
    responses={
        200: {"model": UploadedView, "description": "the same content was stored already"},
        415: {"model": ErrorBody, "description": "a file type that is not read"},
        503: {"model": ErrorBody, "description": "the embedding model cannot be used"},
    },
)
def upload(
    runtime: RuntimeDep,
    principal: Caller,
    embed: EmbedDep,
    agent: AgentRef,
    response: Response,
    file: Annotated[
        UploadFile, File(description="plain text (.txt), Markdown (.md) or PDF (.pdf)")
    ],
    title: Annotated[
        str | None,
        Form(min_length=1, max_length=MAX_TITLE_CHARS, description="default: the file name"),
    ] = None,
) -> UploadedView:
    """Add a document. A file of the same name with new content replaces the old one's
    fragments; the same content again changes nothing. Answers at once: poll the document
    until its `status` is `ready`."""
    principal.require_key("adding documents")
    agent_id = agent_of(runtime, principal, agent).id
    try:
        given = upload_document(file.filename or "", file.file.read(), file.content_type, title)
        record, outcome = add_document(runtime, agent_id, given)
    except UnsupportedDocument as exc:
        raise ApiError(415, "unsupported_document", str(exc)) from None
    except DocumentError as exc:
        raise ApiError(422, "invalid_document", str(exc)) from None
    except ModelError as exc:  # the agent's embedding model, whose tokens size the fragments
        raise ApiError(503, "model_unavailable", f"cannot cut the document: {exc}") from None
    if record.status is not DocumentStatus.READY:
        # Embedded at once (not in the cloud) and failed: the document says so (failed, why).
        with suppress(ModelError):
            embed(agent_id)
        record = runtime.store.document(agent_id, record.id)
    if outcome is Outcome.UNCHANGED:
        response.status_code = 200
    return UploadedView(**_view(record).model_dump(), outcome=outcome)


@router.get("", response_model=Page[DocumentView])
def list_documents(
    runtime: RuntimeDep,
    principal: Caller,
    agent: AgentRef,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[DocumentView]:
    """Newest first."""
    principal.require_key("reading documents")
    agent_id = agent_of(runtime, principal, agent).id
    records = runtime.store.documents_page(agent_id, limit=limit, before_seq=seq_cursor(cursor))
    return Page(
        data=[_view(r) for r in records],
        next_cursor=str(records[-1].seq) if len(records) == limit else None,
    )


@router.get("/{document_id}", response_model=DocumentView)
def get_document(
    runtime: RuntimeDep, principal: Caller, agent: AgentRef, document_id: uuid.UUID
) -> DocumentView:
    principal.require_key("reading documents")
    agent_id = agent_of(runtime, principal, agent).id
    return _view(runtime.store.document(agent_id, document_id))


@router.delete("/{document_id}", status_code=204, response_class=Response)
def remove_document(
    runtime: RuntimeDep, principal: Caller, agent: AgentRef, document_id: uuid.UUID
) -> Response:
    """Remove a document and its fragments: the agent no longer recalls it."""
    principal.require_key("removing documents")
    agent_id = agent_of(runtime, principal, agent).id
    if not runtime.store.delete_document(agent_id, document_id):
        raise NotFound(f"no document with id {document_id}")
    return Response(status_code=204)
