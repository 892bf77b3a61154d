"""Knowledge documents: a character's files, `carrier knowledge`, the REST endpoints and the
cloud's path (stored pending, embedded by the embed function from the queue, then ready)."""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from carrier_core import Character, Runtime, Settings, load_character, run_turn
from carrier_core.api.app import create_app
from carrier_core.api.errors import MAX_DOCUMENT_BYTES
from carrier_core.knowledge import (
    DocumentError,
    DocumentStatus,
    Outcome,
    UnsupportedDocument,
    add_document,
    file_document,
)
from carrier_core.knowledge.chunk import chunk_text
from carrier_core.models import ModelError, ModelSet, ScriptedModel
from carrier_core.models.base import estimate_tokens
from carrier_core.models.embedding import HashEmbedding
from carrier_core.store.migrate import migrate, migrations
from carrier_core.store.store import Store
from carrier_core.tenants import create_key
from carrier_core.world import LOCAL_TENANT_ID
from tests.conftest import ROOT, TenantKey, make_runtime, run_inline
from tests.test_migrations import fresh_database  # noqa: F401 (a fixture)
from tests.test_turn import NO_FACTS, message, xml

#: The fact only the PDF holds.
PDF_FACT = "The lighthouse keeper owns a ginger cat called Marmalade."


def make_pdf(*pages: list[str]) -> bytes:
    """A real PDF (Helvetica text, one line per string), made with pypdf."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        shown = " ".join(f"({line}) Tj T*" for line in lines)
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 11 Tf 14 TL 72 720 Td {shown} ET".encode("latin-1"))
        page.replace_contents(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def rows(store: Store, sql: str, *params: object) -> list[dict[str, Any]]:
    with store._pool.connection() as conn:
        return list(conn.execute(sql, params).fetchall())


def fragments_of(store: Store, document_id: uuid.UUID) -> list[str]:
    found = rows(
        store,
        "SELECT content->>'text' AS text FROM memories WHERE document_id = %s"
        " AND kind = 'fragment' ORDER BY (metadata->>'position')::int",
        document_id,
    )
    return [r["text"] for r in found]


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A character file with every kind of knowledge item, and the files they name."""
    folder = tmp_path / "ada-info"
    (folder / "docs" / "nested").mkdir(parents=True)
    (folder / "docs" / ".cache").mkdir()
    (folder / "guide.md").write_text(
        "# Tea\n\nAda brews oolong tea at exactly eighty five degrees.\n\n- cups: two\n"
    )
    (folder / "docs" / "notes.txt").write_text("The harbour ferry leaves at seven each morning.")
    (folder / "docs" / "nested" / "log.pdf").write_bytes(
        make_pdf(["Keeper log, page one.", PDF_FACT], ["Page two: the lamp was cleaned."])
    )
    (folder / "docs" / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "docs" / ".cache" / "x.md").write_text("hidden: never read")
    (folder / "docs" / ".DS_Store").write_bytes(b"\x00\x01")
    character = {
        "name": "Keeper",
        "bio": ["Keeps a lighthouse."],
        "knowledge": [
            "Ada Lovelace wrote the first program.",
            {"path": "guide.md"},
            {"directory": "docs", "shared": True},
        ],
    }
    (folder / "keeper.json").write_text(json.dumps(character))
    return folder / "keeper.json"


def documents_of(store: Store, agent_id: uuid.UUID) -> dict[str, Any]:
    """The agent's documents by title."""
    return {d.title: d for d in store.documents_page(agent_id, limit=100)}


def test_a_character_s_files_are_imported_and_a_fact_only_in_the_pdf_is_recalled(
    scripted_runtime: Runtime,
    scripted: ScriptedModel,
    library: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    character = load_character(library)
    assert character.folder == library.parent
    with caplog.at_level(logging.WARNING, logger="carrier_core.knowledge"):
        agent = scripted_runtime.register_agent(character)
    store = scripted_runtime.store
    found = documents_of(store, agent)
    assert set(found) == {
        "Ada Lovelace wrote the first program.",
        "guide.md",
        "notes.txt",
        "log.pdf",
    }
    assert all(d.status is DocumentStatus.READY and d.fragments >= 1 for d in found.values())
    pdf = found["log.pdf"]
    assert pdf.content_type == "application/pdf"
    assert pdf.source == str((library.parent / "docs" / "nested" / "log.pdf").resolve())
    assert any(PDF_FACT in text for text in fragments_of(store, pdf.id))
    # The PNG is skipped and reported by name; hidden files and folders are not looked at.
    skipped = [r.getMessage() for r in caplog.records]
    assert (
        len(skipped) == 1 and "photo.png" in skipped[0] and ".png files are not read" in skipped[0]
    )
    assert "x.md" not in " ".join(skipped)
    unembedded = "SELECT count(*) AS n FROM memories WHERE embedding IS NULL"
    assert rows(store, unembedded)[0]["n"] == 0

    scripted.add(xml("REPLY", text="Marmalade."), NO_FACTS)
    result = run_turn(scripted_runtime, message(agent, "What is the lighthouse cat called?"))
    assert result.status == "done"
    decide_prompt = scripted.requests[0].prompt
    knowledge = decide_prompt.split("Knowledge", 1)[1]
    assert PDF_FACT in knowledge

    # Registering again (every `carrier chat` does) reads nothing new and stores nothing twice.
    scripted_runtime.register_agent(load_character(library))
    assert {d.id for d in documents_of(store, agent).values()} == {d.id for d in found.values()}
    fragments = "SELECT count(*) AS n FROM memories WHERE kind = 'fragment'"
    assert rows(store, fragments)[0]["n"] == sum(d.fragments for d in found.values())


def test_paths_are_also_found_in_the_knowledge_folder_beside_the_character(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Where ElizaOS looks for them: a `knowledge/` folder beside the character file."""
    (tmp_path / "knowledge").mkdir()
    (tmp_path / "knowledge" / "faq.md").write_text("Opening hours: nine to five.")
    (tmp_path / "c.json").write_text(json.dumps({"name": "Eli", "knowledge": [{"path": "faq.md"}]}))
    agent = runtime.register_agent(load_character(tmp_path / "c.json"))
    assert set(documents_of(runtime.store, agent)) == {"faq.md"}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"path": "slides.pptx"}, r"slides\.pptx: not imported: \.pptx files are not read"),
        ({"path": "missing.md"}, r"knowledge path 'missing\.md' .*: no such file"),
        ({"path": "docs"}, r"knowledge path 'docs' .* is a folder"),
        ({"directory": "nowhere"}, r"knowledge directory 'nowhere' .*: no such folder"),
    ],
)
def test_a_bad_file_item_is_an_error_naming_it_and_nothing_is_stored(
    runtime: Runtime, tmp_path: Path, item: dict[str, str], expected: str
) -> None:
    (tmp_path / "slides.pptx").write_bytes(b"PK\x03\x04")
    (tmp_path / "docs").mkdir()
    (tmp_path / "c.json").write_text(json.dumps({"name": "Eli", "knowledge": [item]}))
    with pytest.raises(DocumentError, match=expected):
        runtime.register_agent(load_character(tmp_path / "c.json"))
    assert runtime.store.agents() == []


def test_a_character_from_the_api_names_files_the_server_does_not_open(
    api: TestClient, store: Store, library: Path
) -> None:
    key = create_key(store, LOCAL_TENANT_ID).secret
    body = json.loads(library.read_text())
    body["knowledge"].append({"path": "/etc/passwd"})
    made = api.post("/v1/agents", json=body, headers={"Authorization": f"Bearer {key}"})
    assert made.status_code == 201, made.text
    skipped = made.json()["skipped_knowledge"]
    assert set(skipped) == {"guide.md", "docs", "/etc/passwd"}
    assert "POST /v1/agents/{id}/documents" in skipped["/etc/passwd"]
    titles = set(documents_of(store, uuid.UUID(made.json()["id"])))
    assert titles == {"Ada Lovelace wrote the first program."}


def test_the_same_content_is_stored_once_and_a_changed_file_replaces_its_fragments(
    runtime: Runtime, ada: Character, tmp_path: Path
) -> None:
    agent = runtime.register_agent(ada)
    store = runtime.store
    notes = tmp_path / "notes.md"
    notes.write_text("The spare key is under the blue pot.")
    first, outcome = add_document(runtime, agent, file_document(notes))
    assert outcome is Outcome.CREATED and first.status is DocumentStatus.PENDING
    again, outcome = add_document(runtime, agent, file_document(notes))
    assert (again.id, outcome) == (first.id, Outcome.UNCHANGED)
    copy = tmp_path / "copy.md"
    shutil.copy(notes, copy)
    same, outcome = add_document(runtime, agent, file_document(copy))
    assert (same.id, outcome) == (first.id, Outcome.UNCHANGED)
    assert len(store.documents_page(agent, limit=10)) == 1 + len(ada.knowledge)

    notes.write_text("The spare key moved: it is in the shed now.")
    changed, outcome = add_document(runtime, agent, file_document(notes))
    assert outcome is Outcome.REPLACED and changed.id == first.id
    assert changed.sha256 != first.sha256 and changed.status is DocumentStatus.PENDING
    assert fragments_of(store, first.id) == ["The spare key moved: it is in the shed now."]
    old = "SELECT count(*) AS n FROM memories WHERE content->>'text' LIKE %s"
    assert rows(store, old, "%blue pot%")[0]["n"] == 0

    from carrier_core.embed import embed_pending

    embed_pending(runtime, agent)
    assert store.document(agent, first.id).status is DocumentStatus.READY

    assert store.delete_document(agent, first.id)
    assert fragments_of(store, first.id) == []
    assert not store.delete_document(agent, first.id)
    with pytest.raises(LookupError, match="no document with id"):
        store.document(agent, first.id)


def test_a_failed_embedding_marks_the_document_failed_until_a_later_run(
    store: Store, ada: Character, tmp_path: Path
) -> None:
    class Down(HashEmbedding):
        down = True

        def embed(self, texts: Any) -> Any:
            if self.down:
                raise ModelError("embedding service down")
            return super().embed(texts)

    embedder = Down()
    scripted = ScriptedModel()
    runtime = make_runtime(store, ModelSet(small=scripted, large=scripted, embedding=embedder))
    embedder.down = False
    agent = runtime.register_agent(ada)
    embedder.down = True
    (tmp_path / "a.txt").write_text("Some words to embed.")
    record, _ = add_document(runtime, agent, file_document(tmp_path / "a.txt"))
    from carrier_core.embed import embed_pending

    with pytest.raises(ModelError):
        embed_pending(runtime, agent)
    failed = store.document(agent, record.id)
    assert failed.status is DocumentStatus.FAILED
    assert failed.error == "embedding failed: embedding service down"
    embedder.down = False
    embed_pending(runtime, agent)
    ready = store.document(agent, record.id)
    assert (ready.status, ready.error) == (DocumentStatus.READY, None)


def test_an_agent_made_while_the_embedding_model_is_down_is_made_with_its_knowledge_failed(
    store: Store, make_tenant: Callable[[str], TenantKey]
) -> None:
    class Down(HashEmbedding):
        def embed(self, texts: Any) -> Any:
            raise ModelError("embedding service down")

    scripted = ScriptedModel()
    runtime = make_runtime(store, ModelSet(small=scripted, large=scripted, embedding=Down()))
    acme = make_tenant("acme")
    with TestClient(create_app(lambda: runtime, None), headers=acme.headers) as client:
        made = client.post("/v1/agents", json={"name": "Kay", "knowledge": ["Kay likes tea."]})
        assert made.status_code == 201, made.text  # it was a 422 blaming the body
        documents = client.get("/v1/agents/kay/documents").json()["data"]
        assert [(d["status"], d["error"]) for d in documents] == [
            ("failed", "embedding failed: embedding service down")
        ]


def test_a_knowledge_text_of_only_a_byte_order_mark_is_no_document(
    client: TestClient, runtime: Runtime
) -> None:
    made = client.post("/v1/agents", json={"name": "Bom", "knowledge": ["\ufeff", "Real."]})
    assert made.status_code == 201, made.text  # it was a 500, with the agent stored
    agent_id = uuid.UUID(made.json()["id"])
    assert [d.title for d in runtime.store.documents_page(agent_id, limit=10)] == ["Real."]


def test_a_document_failed_by_a_later_batch_becomes_ready_when_a_run_embeds_only_replies(
    store: Store, ada: Character, tmp_path: Path
) -> None:
    """One run embeds a document's last fragment, then its next batch (a reply) fails, and
    the document is marked failed though its fragments are all embedded. A later run that
    embeds only a reply must still find the document waiting and mark it ready."""
    from carrier_core.embed import embed_pending
    from carrier_core.memory import Content, Memory, MemoryKind

    class FailsSecond(HashEmbedding):
        calls = 0

        def embed(self, texts: Any) -> Any:
            self.calls += 1
            if self.calls == 2:
                raise ModelError("embedding service down")
            return super().embed(texts)

    scripted = ScriptedModel()
    embedder = FailsSecond()
    runtime = make_runtime(
        store, ModelSet(small=scripted, large=scripted, embedding=embedder), embed_batch_size=1
    )
    agent = runtime.register_agent(Character(name="Eli"))
    (tmp_path / "a.txt").write_text("Some words to embed.")
    record, _ = add_document(runtime, agent, file_document(tmp_path / "a.txt"))

    def reply(text: str) -> None:
        store.add_memory(
            Memory(
                agent_id=agent, entity_id=agent, kind=MemoryKind.MESSAGE, content=Content(text=text)
            )
        )

    reply("a reply waiting for its embedding")
    embedder.calls = 0
    with pytest.raises(ModelError):
        embed_pending(runtime, agent)
    assert store.document(agent, record.id).status is DocumentStatus.FAILED
    reply("another reply")
    embed_pending(runtime, agent)  # embeds only the two replies
    ready = store.document(agent, record.id)
    assert (ready.status, ready.error) == (DocumentStatus.READY, None)


def test_unreadable_documents_are_refused_naming_them(runtime: Runtime, tmp_path: Path) -> None:
    agent = runtime.register_agent(Character(name="Eli"))
    cases = {
        "latin1.txt": (b"caf\xe9", r"latin1\.txt: not imported: not UTF-8 text"),
        "blank.md": (b"  \n\n ", r"blank\.md: not imported: it has nothing but white space"),
        "fake.pdf": (b"hello", r"fake\.pdf: not imported: not a PDF file"),
        "broken.pdf": (b"%PDF-1.4\n garbage", r"broken\.pdf: not imported: the PDF cannot be read"),
        "scan.pdf": (make_pdf([]), r"scan\.pdf: not imported: it has no text layer"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DocumentError, match=expected):
            add_document(runtime, agent, file_document(tmp_path / name))
    (tmp_path / "deck.key").write_bytes(b"x")
    with pytest.raises(UnsupportedDocument, match=r"deck\.key: not imported: \.key files"):
        file_document(tmp_path / "deck.key")
    assert runtime.store.documents_page(agent, limit=10) == []


def test_fragments_fit_the_token_budget_and_overlap() -> None:
    def count(text: str) -> int:
        return estimate_tokens(text) * 5 // 4 + 1

    sentences = [f"Sentence number {n} tells one small fact about the sea." for n in range(60)]
    text = " ".join(sentences[:30]) + "\n\n" + " ".join(sentences[30:])
    chunks = chunk_text(text, count=count, size=80, overlap=20)
    assert len(chunks) > 5
    assert all(count(c) <= 80 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        # Each begins with the end of the one before.
        assert after.split(". ")[0] in before
    # Every sentence is in some fragment; a paragraph break stays a blank line.
    assert all(any(s in c for c in chunks) for s in sentences)
    assert any("\n\n" in c for c in chunks)
    # A "word" longer than a fragment is cut, never lost.
    long = chunk_text("x" * 1000, count=count, size=50, overlap=10)
    assert "".join(long) == "x" * 1000 and all(count(c) <= 50 for c in long)
    with pytest.raises(ValueError, match="overlap"):
        Settings(knowledge_chunk_tokens=100, knowledge_chunk_overlap=100)


def test_knowledge_stored_before_documents_existed_becomes_documents(
    fresh_database: str,  # noqa: F811
) -> None:
    """Migration 0008: a knowledge text stored as a `document` memory and its fragments
    becomes a document of the same id, with its fragments linked."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in migrations():
            if version < 8:
                conn.execute(sql.encode())
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, name))
        agent, doc = uuid.uuid4(), uuid.uuid4()
        digest = "ab" * 32
        conn.execute(
            "INSERT INTO agents (id, tenant_id, name, character) SELECT %s, id, 'Old', '{}'"
            " FROM tenants WHERE name = 'local'",
            (agent,),
        )
        conn.execute(
            "INSERT INTO memories (id, agent_id, entity_id, kind, content, dedupe_key)"
            " VALUES (%s, %s, %s, 'document', %s, %s)",
            (doc, agent, agent, json.dumps({"text": "Old text.\nSecond line."}), digest),
        )
        for n in range(2):
            conn.execute(
                "INSERT INTO memories (id, agent_id, entity_id, kind, content, dedupe_key,"
                " metadata) VALUES (%s, %s, %s, 'fragment', %s, %s, %s)",
                (
                    uuid.uuid4(),
                    agent,
                    agent,
                    json.dumps({"text": f"part {n}"}),
                    f"{digest}:{n}",
                    json.dumps({"document": digest}),
                ),
            )
    assert migrate(fresh_database) == [v for v, _, _ in migrations() if v >= 8]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT title, source, sha256, status, fragments FROM documents WHERE id = %s", (doc,)
        ).fetchone()
        assert row == ("Old text.", f"character:{digest}", digest, "pending", 2)
        linked = conn.execute(
            "SELECT count(*) FROM memories WHERE document_id = %s", (doc,)
        ).fetchone()
        assert linked == (3,)  # the two fragments and the document memory itself


# -- the command line --------------------------------------------------------------------


def carrier(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    unset = {"OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"}
    env = {k: v for k, v in os.environ.items() if k not in unset and not k.startswith("CARRIER_")}
    env.update(DATABASE_URL=database_url, CARRIER_MODEL_PROVIDER="offline")
    return subprocess.run(
        [sys.executable, "-m", "carrier_core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_carrier_knowledge_add_list_and_remove(
    store: Store, database_url: str, ada: Character, library: Path
) -> None:
    runtime = make_runtime(store, None, model_provider="offline")
    agent = runtime.register_agent(ada)
    folder = library.parent / "docs"

    added = carrier(database_url, "knowledge", "add", str(folder), "--agent", "Ada")
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("created") for line in lines)
    assert "embedding" in added.stderr and "fragments" in added.stderr  # the progress bar
    assert "skipped" in added.stderr and "photo.png" in added.stderr
    assert "2 added, 0 replaced, 0 unchanged, 1 skipped." in added.stderr
    found = documents_of(store, agent)
    assert {found[t].status for t in ("notes.txt", "log.pdf")} == {DocumentStatus.READY}

    again = carrier(database_url, "knowledge", "add", str(folder / "notes.txt"), "--agent", "Ada")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("unchanged") and "0 added" in again.stderr

    listed = carrier(database_url, "knowledge", "list", "--agent", str(agent))
    assert listed.returncode == 0, listed.stderr
    assert "log.pdf" in listed.stdout and "notes.txt" in listed.stdout
    assert all(" ready " in line for line in listed.stdout.splitlines())

    pdf = found["log.pdf"].id
    removed = carrier(database_url, "knowledge", "remove", str(pdf), "--agent", "Ada")
    assert removed.returncode == 0, removed.stderr
    assert "log.pdf" not in documents_of(store, agent) and fragments_of(store, pdf) == []
    gone = carrier(database_url, "knowledge", "remove", str(pdf), "--agent", "Ada")
    assert gone.returncode == 2 and f"agent Ada has no document {pdf}" in gone.stderr

    refused = carrier(database_url, "knowledge", "add", str(folder / "photo.png"), "--agent", "Ada")
    assert refused.returncode == 2
    assert "photo.png: not imported: .png files are not read" in refused.stderr
    nobody = carrier(database_url, "knowledge", "list", "--agent", "Nobody")
    assert nobody.returncode == 2 and "no agent 'Nobody'" in nobody.stderr


# -- the REST API ------------------------------------------------------------------------


@pytest.fixture
def acme(make_tenant: Callable[[str], TenantKey]) -> TenantKey:
    return make_tenant("acme")


@pytest.fixture
def client(runtime: Runtime, acme: TenantKey) -> Iterator[TestClient]:
    app = create_app(lambda: runtime, run_inline(runtime))
    with TestClient(app, headers=acme.headers) as test_client:
        yield test_client


@pytest.fixture
def agent(runtime: Runtime, ada: Character, acme: TenantKey) -> uuid.UUID:
    return runtime.register_agent(ada, acme.tenant_id)


def upload(
    client: TestClient,
    agent: uuid.UUID,
    name: str,
    content: bytes,
    content_type: str = "application/octet-stream",
    **extra: Any,
) -> Any:
    """POST a file as multipart/form-data, as `curl -F file=@NAME` does."""
    files = {"file": (name, content, content_type)}
    return client.post(f"/v1/agents/{agent}/documents", files=files, **extra)


def test_upload_list_get_and_delete_documents(
    client: TestClient, agent: uuid.UUID, store: Store, ada: Character
) -> None:
    made = upload(client, agent, "faq.md", b"# FAQ\n\nThe office opens at nine.")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["outcome"] == "created" and body["status"] == "ready"  # embedded at once here
    assert (body["title"], body["source"]) == ("faq.md", "upload:faq.md")
    assert body["content_type"] == "text/markdown" and body["fragments"] == 1

    same = upload(client, agent, "faq.md", b"# FAQ\n\nThe office opens at nine.")
    assert same.status_code == 200 and same.json()["outcome"] == "unchanged"
    assert same.json()["id"] == body["id"]
    changed = upload(client, agent, "faq.md", b"The office opens at ten.", data={"title": "FAQ"})
    assert changed.status_code == 201
    assert changed.json()["outcome"] == "replaced" and changed.json()["id"] == body["id"]
    assert changed.json()["title"] == "FAQ"
    assert fragments_of(store, uuid.UUID(body["id"])) == ["The office opens at ten."]

    pdf = upload(client, agent, "log.pdf", make_pdf([PDF_FACT]), content_type="application/pdf")
    assert pdf.status_code == 201 and pdf.json()["content_type"] == "application/pdf"
    pdf_id = pdf.json()["id"]

    # Newest first, in keyset pages: the uploads, then the character's knowledge texts.
    listed = f"/v1/agents/{agent}/documents"
    first = client.get(listed, params={"limit": 2}).json()
    assert [d["title"] for d in first["data"]] == ["log.pdf", "FAQ"]
    second = client.get(listed, params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [d["title"] for d in second["data"]] == [ada.knowledge[1], ada.knowledge[0]]
    last = client.get(listed, params={"limit": 2, "cursor": second["next_cursor"]}).json()
    assert last == {"data": [], "next_cursor": None}

    one = client.get(f"{listed}/{pdf_id}")
    assert one.status_code == 200 and one.json()["status"] == "ready"
    assert one.json()["sha256"] == pdf.json()["sha256"] and "outcome" not in one.json()
    assert client.delete(f"{listed}/{pdf_id}").status_code == 204
    assert fragments_of(store, uuid.UUID(pdf_id)) == []
    again = client.get(f"{listed}/{pdf_id}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    assert client.delete(f"{listed}/{pdf_id}").status_code == 404


def test_bad_uploads_are_refused_naming_what_is_wrong(
    client: TestClient, agent: uuid.UUID, store: Store
) -> None:
    def error(response: Any) -> tuple[int, str, str]:
        found = response.json()["error"]
        return response.status_code, found["code"], found["message"]

    status, code, text = error(upload(client, agent, "deck.pptx", b"PK"))
    assert (status, code) == (415, "unsupported_document")
    assert text.startswith("deck.pptx: not imported: .pptx files are not read")
    status, code, text = error(upload(client, agent, "empty.txt", b""))
    assert (status, code) == (422, "invalid_document") and text.startswith("empty.txt: ")
    status, code, text = error(upload(client, agent, "scan.pdf", b"not a pdf"))
    assert (status, code) == (422, "invalid_document") and "scan.pdf" in text
    # A name without an extension: the declared media type says what it is, if it says.
    readme = upload(client, agent, "README", b"Plain words.", content_type="text/markdown")
    assert readme.status_code == 201 and readme.json()["content_type"] == "text/markdown"
    status, code, text = error(upload(client, agent, "blob", b"??"))
    assert (status, code) == (415, "unsupported_document")
    assert text.startswith("blob: not imported: files without an extension are not read")
    # No file name at all: not a file.
    nameless = upload(client, agent, "", b"plain words", content_type="text/plain")
    assert error(nameless)[:2] == (422, "invalid_request")
    no_file = client.post(f"/v1/agents/{agent}/documents", json={"title": "x", "text": "y"})
    status, code, text = error(no_file)
    assert (status, code) == (422, "invalid_request") and "body.file" in text
    huge = upload(client, agent, "big.txt", b"a" * (MAX_DOCUMENT_BYTES + 1))
    assert error(huge)[:2] == (413, "too_large")
    bad_title = upload(client, agent, "t.txt", b"words", data={"title": "x" * 201})
    assert error(bad_title)[:2] == (422, "invalid_request")
    cursor = client.get(f"/v1/agents/{agent}/documents", params={"cursor": "abc"})
    assert error(cursor)[:2] == (422, "invalid_cursor")
    titles = {d.title for d in store.documents_page(agent, limit=10)}
    assert not titles & {"deck.pptx", "empty.txt", "scan.pdf", "big.txt", "t.txt"}


def test_another_tenant_s_agent_and_documents_answer_404(
    client: TestClient,
    agent: uuid.UUID,
    make_tenant: Callable[[str], TenantKey],
    runtime: Runtime,
) -> None:
    doc = upload(client, agent, "faq.md", b"Secret plans.").json()["id"]
    globex = make_tenant("globex")
    theirs = runtime.register_agent(Character(name="Theirs"), globex.tenant_id)
    other = {"Authorization": f"Bearer {globex.key}"}
    base = f"/v1/agents/{agent}/documents"
    answers = [
        client.post(base, files={"file": ("x.md", b"words")}, headers=other),
        client.get(base, headers=other),
        client.get(f"{base}/{doc}", headers=other),
        client.delete(f"{base}/{doc}", headers=other),
        # Their own agent does not reach our document either.
        client.get(f"/v1/agents/{theirs}/documents/{doc}", headers=other),
    ]
    assert [a.status_code for a in answers] == [404] * 5
    assert client.get(f"{base}/{doc}").status_code == 200  # still there


# -- the cloud's path, emulated ----------------------------------------------------------


@pytest.mark.skipif(not (ROOT / "template.yaml").is_file(), reason="no template.yaml")
def test_an_upload_through_the_emulated_api_is_pending_until_the_embed_queue_is_drained(
    database_url: str, store: Store, runtime: Runtime, ada: Character
) -> None:
    """The API stores the document and queues its embedding; the embed function, fed from
    the queue, embeds the fragments and makes it ready. Nothing polls here (poll=False): the
    queue is handed to the function below, so the pending state is seen for certain."""
    from carrier_aws.local.emulator import Emulator, _sqs_record

    agent = runtime.register_agent(ada)
    key = create_key(store, LOCAL_TENANT_ID).secret
    unembedded = "SELECT count(*) AS n FROM memories WHERE document_id = %s AND embedding IS NULL"
    with Emulator(database_url, retry_interval_scale=0.01, poll=False) as emulator:
        with TestClient(emulator.app, headers={"Authorization": f"Bearer {key}"}) as api:
            made = upload(api, agent, "log.pdf", make_pdf([PDF_FACT]))
            assert made.status_code == 201, made.text
            doc = made.json()["id"]
            assert made.json()["status"] == "pending"
            assert rows(store, unembedded, doc)[0]["n"] == made.json()["fragments"] >= 1
            assert emulator.api_calls["ApiFunction", "sqs", "SendMessage"] == 1

            queue = emulator.queue_url("EmbedQueue")
            queued = emulator.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
            [request] = queued["Messages"]
            assert json.loads(request["Body"]) == {"agent_id": str(agent)}
            event = {"Records": [_sqs_record(request, emulator.queue_arns["EmbedQueue"])]}
            answer = emulator.call(emulator.functions["MemoryEmbedFunction"], event)
            assert answer == {"batchItemFailures": []}

            ready = api.get(f"/v1/agents/{agent}/documents/{doc}").json()
        assert ready["status"] == "ready"
        assert rows(store, unembedded, doc)[0]["n"] == 0
        # Nothing was left for another request.
        assert emulator.api_calls["MemoryEmbedFunction", "sqs", "SendMessage"] == 0
