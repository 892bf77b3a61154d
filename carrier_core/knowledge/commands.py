"""`carrier knowledge add|list|remove`: an agent's documents from the command line.

They work on the database the settings name (the embedded one by default) and find the
agent by handle, name or id among those registered (`carrier chat` and `carrier dev` register
theirs). Adding embeds the new fragments at once, with a progress bar: locally nothing
else would.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carrier_core.agent_commands import find_agent
from carrier_core.command_line import CommandError, open_runtime, progress_bar, read_settings
from carrier_core.embed import embed_pending
from carrier_core.knowledge.documents import ImportReport, files_at, import_files
from carrier_core.knowledge.extract import DocumentError
from carrier_core.models import ModelError
from carrier_core.plugin import PluginError
from carrier_core.store.knowledge import DocumentStatus, Outcome

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime

#: Documents listed per page read (all are listed).
_PAGE = 100


def add(args: argparse.Namespace) -> int:
    """Import a file, or a folder's files, as documents of the agent, and embed them."""
    path = Path(args.path)
    try:
        files, skipped = files_at(path)
    except DocumentError as exc:
        raise CommandError(str(exc), 2) from None
    report = ImportReport(skipped=skipped)
    with open_runtime(read_settings()) as runtime:
        agent_id = find_agent(runtime, args.agent).id
        try:
            with progress_bar("reading", "files") as show:
                show(0, len(files))
                strict = path.is_file()
                import_files(runtime, agent_id, files, strict=strict, report=report, progress=show)
        except DocumentError as exc:
            raise CommandError(str(exc), 2) from None
        except (ModelError, PluginError) as exc:  # the agent's embedding model cannot be used
            raise CommandError(str(exc), 1) from None
        for left in report.skipped:
            print(f"carrier: skipped {left.message}", file=sys.stderr)
        for record, outcome in report.documents:
            fragments = f"{record.fragments:>4} fragments"
            print(f"{outcome.value:<9}  {record.id}  {fragments}  {record.title}")
        error = _embed(runtime, agent_id)
    print(
        f"{report.count(Outcome.CREATED)} added, {report.count(Outcome.REPLACED)} replaced,"
        f" {report.count(Outcome.UNCHANGED)} unchanged, {len(report.skipped)} skipped.",
        file=sys.stderr,
    )
    if error is not None:
        raise CommandError(
            f"embedding failed: {error}; the documents are stored and marked failed:"
            " `carrier knowledge add` again embeds them",
            1,
        )
    return 0


def _embed(runtime: Runtime, agent_id: uuid.UUID) -> str | None:
    """Embed what the agent has waiting, with a progress bar; the error, if it failed."""
    total = runtime.store.count_unembedded(agent_id)
    if not total:
        return None
    with progress_bar("embedding", "fragments") as show:
        show(0, total)
        try:
            embed_pending(
                runtime, agent_id, max_batches=None, progress=lambda done: show(done, total)
            )
        except ModelError as exc:
            return str(exc)
    return None


def list_documents(args: argparse.Namespace) -> int:
    """The agent's documents, newest first: id, status, fragments, when, title, source."""
    with open_runtime(read_settings()) as runtime:
        agent_id = find_agent(runtime, args.agent).id
        records = []
        before: int | None = None
        while page := runtime.store.documents_page(agent_id, limit=_PAGE, before_seq=before):
            records += page
            before = page[-1].seq
    if not records:
        print(
            f"No documents: `carrier knowledge add PATH --agent {args.agent}` adds some.",
            file=sys.stderr,
        )
        return 0
    for record in records:
        status = record.status.value
        if record.status is DocumentStatus.FAILED and record.error:
            status += f" ({record.error})"
        print(
            f"{record.id}  {status:<7}  {record.fragments:>4} fragments"
            f"  {record.created_at:%Y-%m-%d %H:%M}  {record.title}  [{record.source}]"
        )
    return 0


def remove(args: argparse.Namespace) -> int:
    """Remove a document and its fragments."""
    with open_runtime(read_settings()) as runtime:
        agent_id = find_agent(runtime, args.agent).id
        if not runtime.store.delete_document(agent_id, args.document_id):
            raise CommandError(f"agent {args.agent} has no document {args.document_id}", 2)
    print(f"removed {args.document_id}", file=sys.stderr)
    return 0


def register(commands: Any) -> None:
    """Add `knowledge` and its subcommands to the `carrier` command."""
    knowledge = commands.add_parser(
        "knowledge", help="add, list and remove an agent's knowledge documents"
    )
    sub = knowledge.add_subparsers(dest="knowledge_command", required=True, metavar="ACTION")
    add_cmd = sub.add_parser(
        "add", help="import a file or a folder's files (.txt, .md, .pdf) and embed them"
    )
    add_cmd.add_argument("path", metavar="PATH|DIR")
    add_cmd.add_argument("--agent", required=True, help="the agent's name or id")
    add_cmd.set_defaults(run=add)
    list_cmd = sub.add_parser("list", help="the agent's documents, newest first")
    list_cmd.add_argument("--agent", required=True, help="the agent's name or id")
    list_cmd.set_defaults(run=list_documents)
    remove_cmd = sub.add_parser("remove", help="remove a document and its fragments")
    remove_cmd.add_argument("document_id", metavar="DOCUMENT_ID", type=uuid.UUID)
    remove_cmd.add_argument("--agent", required=True, help="the agent's name or id")
    remove_cmd.set_defaults(run=remove)
