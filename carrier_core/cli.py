"""`carrier`: the command line. `carrier chat` talks to a local agent.

In a terminal it is an interactive chat; with piped input it reads one
message a line and prints each reply on its own line, so it can be scripted.
Memory lives in Postgres (embedded by default), so a chat picks up where
the last one left off.
"""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dotenv import load_dotenv

from carrier_core.agent_commands import register as register_agents
from carrier_core.character import Character, CharacterError
from carrier_core.command_line import (
    CommandError,
    open_runtime,
    progress_bar,
    read_character,
    read_settings,
)
from carrier_core.knowledge import DocumentError
from carrier_core.knowledge.commands import register as register_knowledge
from carrier_core.models import ModelError
from carrier_core.models.select import primary_provider
from carrier_core.plugin import PluginError
from carrier_core.secrets import SecretStoreError
from carrier_core.store.agents import AgentConflict
from carrier_core.store.base import NotFound
from carrier_core.store.database import DatabaseError
from carrier_core.tasks.commands import register as register_tasks
from carrier_core.tenants import Tenant, create_key, dev_key_file
from carrier_core.turn import approval
from carrier_core.turn.evaluate import evaluate
from carrier_core.turn.ingest import InvalidMessage
from carrier_core.turn.run import TurnResult, resume_turn, run_turn, turn_result

if TYPE_CHECKING:
    from carrier_core.config import Settings
    from carrier_core.runtime import Runtime

QUIT = {"/quit", "/exit", "/q"}


def _lines(stdin: TextIO, interactive: bool) -> Iterator[str]:
    if not interactive:
        yield from (line.rstrip("\n") for line in stdin)
        return
    while True:
        try:
            yield input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return


@dataclass(frozen=True)
class Said:
    """What a turn said, as the terminal shows it."""

    lines: list[str]
    error: str | None = None
    #: The action the turn waits on a person's yes for, as the question names it, and how
    #: to answer (True: approve); the answer gives what the turn said after it.
    waiting: str | None = None
    answer: Callable[[bool], Said] | None = None


#: Sends one line and gives what its turn said.
Send = Callable[[str], Said]

#: Answers that approve an action the agent waits on; anything else refuses it.
YES = {"y", "yes"}


def _converse(name: str, send: Send, stdin: TextIO, stdout: TextIO) -> None:
    interactive = stdin.isatty()
    if interactive:
        print("Type /quit or press Ctrl-D to leave.", file=sys.stderr)
    try:
        _exchange(name, send, _lines(stdin, interactive), stdout, interactive)
    except KeyboardInterrupt:
        # Ctrl-C leaves as /quit does: the caller still reflects on what was said.
        print(file=sys.stderr)


def _exchange(
    name: str, send: Send, lines: Iterator[str], stdout: TextIO, interactive: bool
) -> None:
    for line in lines:
        if line.strip() in QUIT:
            break
        if not line.strip():
            continue
        try:
            said = send(line)
        except InvalidMessage as exc:
            print(f"carrier: {exc}", file=sys.stderr)
            continue
        while True:
            if said.error:
                print(f"carrier: turn failed: {said.error}", file=sys.stderr)
            for text in said.lines:
                print(f"{name}: {text}" if interactive else text, file=stdout, flush=True)
            if said.answer is None:
                break
            # The person at the terminal answers: the next line is the answer (y or yes
            # approves), so a piped chat can answer too. Ctrl-D refuses.
            print(f"carrier: {name} wants to {said.waiting}. Approve? [y/N]", file=sys.stderr)
            answer = next(lines, "")
            said = said.answer(answer.strip().lower() in YES)


def _waiting(action: str, arguments: Mapping[str, Any]) -> str:
    """The action an approval asks for, as the question names it."""
    text = str(arguments.get("text") or "").strip()
    return f"run {action}" + (f" ({text})" if text else "")


def reply_lines(text: str, attachments: Sequence[Mapping[str, Any]]) -> list[str]:
    """A reply as the terminal shows it: its text, then a line per attachment."""
    lines = [text] if text else []
    for media in attachments:
        title = media.get("title") or media.get("id") or "attachment"
        lines.append(f"[{title}] {media.get('url', '')}".rstrip())
    return lines


def turn_trace(
    steps: Sequence[Mapping[str, Any]],
    decision: Mapping[str, Any] | None,
    calls: Sequence[Mapping[str, Any]],
) -> list[str]:
    """What a turn did, for `carrier chat --verbose`: each step with its time, what the
    agent decided, and each model call with its tokens and estimated cost."""
    lines = []
    for step in steps:
        detail = step.get("detail") or {}
        said = f"  {step['step']} {step['status']} {step.get('duration_ms', 0)} ms"
        if step["step"] == "decide" and detail.get("actions") is not None:
            said += f": actions {', '.join(detail['actions']) or '(none)'}"
        if detail.get("error"):
            said += f": {detail['error']}"
        lines.append(said)
    if decision and decision.get("thought"):
        lines.append(f"  thought: {decision['thought']}")
    for call in calls:
        lines.append(
            f"  model {call['role']} {call['provider']}/{call['model']}"
            f" ({call.get('task') or call.get('step') or '-'}): {call['status']},"
            f" {call['input_tokens']} tokens in, {call['output_tokens']} out,"
            f" {call['latency_ms']} ms, ${call['cost_usd']:.4f}"
        )
    return lines


def _over_http(
    base_url: str, key: str, agent: str, room: str, user: str, *, verbose: bool = False
) -> Send:
    """Each line goes through the HTTP API (for instance `carrier dev`), as a client would."""

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            base_url.rstrip("/") + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer: dict[str, Any] = json.load(response)
                return answer
        except urllib.error.HTTPError as exc:
            detail = json.load(exc).get("error", {}).get("message", exc.reason)
            if exc.code in (401, 403, 404):
                # A wrong key or an agent the API does not know: no line will do better.
                raise CommandError(f"{base_url}: {exc.code}: {detail}", 1) from None
            raise InvalidMessage(f"{exc.code}: {detail}") from None

    def said(turn_id: str, shown: int = 0) -> Said:
        """What the turn said after the `shown` replies, once it ended or waits on an
        approval (which the key answers, as the person at the terminal says)."""
        deadline = time.monotonic() + 120
        while True:
            turn = call("GET", f"/v1/turns/{turn_id}")
            ready = turn["status"] in ("done", "failed", "awaiting_approval")
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if verbose:
            steps: Any = call("GET", f"/v1/turns/{turn_id}/steps")
            for line in turn_trace(steps, None, []):
                print(line, file=sys.stderr)
        replies = turn["replies"]
        lines = [ln for r in replies[shown:] for ln in reply_lines(r["text"], r["attachments"])]
        waiting = turn.get("approval")
        if turn["status"] != "awaiting_approval" or not waiting:
            return Said(lines, turn["error"])

        def answer(yes: bool) -> Said:
            try:
                call("POST", f"/v1/turns/{turn_id}/approval", {"approve": yes})
            except InvalidMessage as exc:  # 409: expired meanwhile; the turn goes on
                print(f"carrier: {exc}", file=sys.stderr)
            return said(turn_id, len(replies))

        return Said(lines, turn["error"], _waiting(waiting["action"], waiting["arguments"]), answer)

    def send(text: str) -> Said:
        body = {"text": text, "sender": user, "sender_name": user}
        return said(call("POST", f"/v1/agents/{agent}/rooms/{room}/messages", body)["turn_id"])

    return send


def _saved_dev_key() -> str | None:
    path = dev_key_file(read_settings().data_dir)
    return path.read_text().strip() if path.is_file() else None


def ignored_character_fields(character: Character, settings: Settings) -> list[str]:
    """What an ElizaOS character file says that this run does not follow, in a sentence each."""
    extra = character.model_extra or {}
    notes = []
    named = extra.get("modelProvider")
    if named and primary_provider(settings, character) != str(named).lower():
        notes.append(
            f"modelProvider {named!r} (ElizaOS v0) is not used: Carrier follows it for"
            " openai and anthropic when their key (OPENAI_API_KEY, ANTHROPIC_API_KEY) is set;"
            " settings.model_provider or CARRIER_MODEL_PROVIDER choose otherwise"
        )
    if extra.get("clients"):
        notes.append(
            f"clients {extra['clients']!r} are ElizaOS connectors Carrier does not run:"
            " ignored (talk to the agent through the API, the WebSocket or the ingest queue)"
        )
    return notes


def chat(
    args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    # Looked up when called, not when defined: whoever redirected them since is heard.
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    character = read_character(args.character)
    user = args.user or getpass.getuser()
    room = args.room or f"chat-{user}"
    if args.api:
        key = args.key or _saved_dev_key()
        if not key:
            raise CommandError(
                "--api needs an API key: --key, CARRIER_API_KEY, or the one `carrier dev` saved",
                2,
            )
        print(f"Chatting with {character.name} through {args.api}.", file=sys.stderr)
        send = _over_http(args.api, key, character.handle, room, user, verbose=args.verbose)
        try:
            _converse(character.name, send, stdin, stdout)
        except urllib.error.URLError as exc:
            raise CommandError(f"cannot reach {args.api}: {exc.reason}", 1) from None
        return 0
    settings = read_settings()
    with open_runtime(settings) as runtime:
        try:
            models = runtime.models_for(character)
        except (PluginError, ModelError) as exc:
            raise CommandError(str(exc), 2) from None
        try:
            agent_id = runtime.register_agent(character)
        except (AgentConflict, CharacterError, DocumentError) as exc:
            raise CommandError(f"{args.character}: {exc}", 2) from None
        except SecretStoreError as exc:
            raise CommandError(str(exc), 1) from None
        for name, reason in runtime.plugins_for(character).skipped:
            print(f"carrier: plugin {name!r} skipped: {reason}", file=sys.stderr)
        where = (settings.database_url and "DATABASE_URL") or str(settings.data_dir / "pg")
        model_note = (
            "offline model: deterministic ELIZA-style replies, no key needed"
            if models.offline
            else f"model: {getattr(models.large, 'provider', '')} {models.large.name}"
        )
        print(f"Chatting with {character.name} ({model_note}). Memory: {where}.", file=sys.stderr)
        for note in ignored_character_fields(character, settings):
            print(f"carrier: {args.character}: {note}", file=sys.stderr)
        turns: list[uuid.UUID] = []

        def said(result: TurnResult, shown: int = 0) -> Said:
            """What the turn said after the `shown` replies; if it waits on an approval,
            the question, answered here in this process as an API key holder would."""
            if args.verbose:
                _print_trace(runtime, result.turn_id)
            lines = [
                line
                for reply in result.replies[shown:]
                for line in reply_lines(reply.content.text, reply.content.attachments)
            ]
            waiting = runtime.store.pending_approval(result.turn_id)
            if result.status != "awaiting_approval" or waiting is None:
                return Said(lines, result.error)

            def answer(yes: bool) -> Said:
                try:
                    approval.answer(runtime.store, result.turn_id, approve=yes, by=f"cli:{user}")
                except approval.NotPending as exc:  # expired meanwhile: the turn goes on
                    print(f"carrier: {exc}", file=sys.stderr)
                resume_turn(runtime, result.turn_id)
                return said(turn_result(runtime, result.turn_id), len(result.replies))

            return Said(lines, result.error, _waiting(waiting.action, waiting.arguments), answer)

        def send(text: str) -> Said:
            message = {"agent_id": agent_id, "room": room, "sender": user, "sender_name": user}
            result = run_turn(runtime, {**message, "text": text, "source": "cli"})
            turns.append(result.turn_id)
            return said(result)

        _converse(character.name, send, stdin, stdout)
        if turns:
            # Reflect on what was said since the last reflection, so nothing told is forgotten.
            evaluate(runtime, turns[-1], force=True)
    return 0


def _print_trace(runtime: Runtime, turn_id: uuid.UUID) -> None:
    store = runtime.store
    steps = [{**s._asdict(), "duration_ms": s.duration_ms} for s in store.turn_steps(turn_id)]
    calls = [c._asdict() for c in store.model_calls(turn_id)]
    for line in turn_trace(steps, store.turn(turn_id).decision, calls):
        print(line, file=sys.stderr)


def usage(args: argparse.Namespace, stdout: TextIO = sys.stdout) -> int:
    """Model calls, tokens and estimated cost per agent and day, from the usage ledger."""
    with open_runtime(read_settings()) as runtime:
        rows = runtime.store.usage(agent=args.agent, days=args.days)
    if not rows:
        print(f"No model calls in the last {args.days} day(s).", file=stdout)
        return 0
    header = ("day", "agent", "calls", "errors", "tokens in", "tokens out", "cost (USD)")
    table = [
        (
            str(r.day),
            r.agent,
            str(r.calls),
            str(r.errors),
            str(r.input_tokens),
            str(r.output_tokens),
            f"{r.cost_usd:.4f}",
        )
        for r in rows
    ]
    total = (
        "total",
        "",
        str(sum(r.calls for r in rows)),
        str(sum(r.errors for r in rows)),
        str(sum(r.input_tokens for r in rows)),
        str(sum(r.output_tokens for r in rows)),
        f"{sum(r.cost_usd for r in rows):.4f}",
    )
    widths = [max(len(row[i]) for row in [header, *table, total]) for i in range(len(header))]
    for row in [header, *table, total]:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs]
        print("  ".join(cells).rstrip(), file=stdout)
    return 0


def reembed_command(args: argparse.Namespace) -> int:
    """Re-embed stored memories with the configured embedding model."""
    from carrier_core.reembed import reembed

    with open_runtime(read_settings()) as runtime:
        with progress_bar("re-embedding", "memories") as show:
            try:
                done = reembed(runtime, agent=args.agent, batch_size=args.batch, progress=show)
            except (LookupError, ModelError) as exc:
                raise CommandError(str(exc), 1) from None
        print(
            f"Re-embedded {done} memories ({runtime.store.embedding_dimensions} dimensions).",
            file=sys.stderr,
        )
    return 0


def migrate_command(args: argparse.Namespace) -> int:
    """Bring the database's schema up to this code's (a deployed stack does it on deploy)."""
    from carrier_core.store.database import database_url
    from carrier_core.store.migrate import latest_version, migrate

    try:
        applied = migrate(database_url(read_settings()))
    except DatabaseError as exc:
        raise CommandError(str(exc), 1) from None
    done = ", ".join(f"{v:04d}" for v in applied) or "none (already up to date)"
    print(f"Migrations applied: {done}; the schema is at {latest_version():04d}.", file=sys.stderr)
    return 0


def keys_create(args: argparse.Namespace) -> int:
    with open_runtime(read_settings()) as runtime:
        tenant = runtime.store.ensure_tenant(args.tenant)
        agents = (
            None
            if not args.agent
            else frozenset(_tenant_agent(runtime, tenant, a) for a in args.agent)
        )
        made = create_key(runtime.store, tenant.id, name=args.name, agent_ids=agents)
    print(f"tenant {tenant.name}: {tenant.id}\nkey id: {made.key.id}", file=sys.stderr)
    print("The key (shown once; store it now):", file=sys.stderr)
    print(made.secret)
    return 0


def _tenant_agent(runtime: Runtime, tenant: Tenant, agent: str) -> uuid.UUID:
    """The id of the tenant's agent with this handle or id."""
    try:
        return runtime.store.tenant_agent(tenant.id, agent).id
    except NotFound:
        raise CommandError(f"tenant {tenant.name} has no agent {agent}", 2) from None


def _tenant(runtime: Runtime, name: str) -> Tenant:
    found = runtime.store.tenant_named(name)
    if found is None:
        raise CommandError(f"no tenant named {name!r}", 2)
    return found


def keys_list(args: argparse.Namespace) -> int:
    with open_runtime(read_settings()) as runtime:
        for key in runtime.store.tenant_keys(_tenant(runtime, args.tenant).id):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "live"
            scope = "all agents" if key.agent_ids is None else ", ".join(map(str, key.agent_ids))
            print(f"{key.id}  {key.prefix}…  {state}  {key.name or '-'}  ({scope})")
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    with open_runtime(read_settings()) as runtime:
        if not runtime.store.revoke_key(_tenant(runtime, args.tenant).id, args.key_id):
            raise CommandError(f"tenant {args.tenant} has no live key {args.key_id}", 2)
    print(f"revoked {args.key_id}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carrier", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"carrier {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chat_cmd = commands.add_parser("chat", help="chat with a local agent in the terminal")
    chat_cmd.add_argument("--character", required=True, help="path to an ElizaOS character file")
    chat_cmd.add_argument("--user", help="your name in the conversation (default: login name)")
    chat_cmd.add_argument("--room", help="conversation to continue (default: chat-<user>)")
    chat_cmd.add_argument(
        "--api",
        metavar="URL",
        help="talk through a Carrier HTTP API, e.g. one `carrier dev` serves",
    )
    chat_cmd.add_argument(
        "--key",
        default=os.environ.get("CARRIER_API_KEY"),
        help="API key for --api (default: $CARRIER_API_KEY, else the key `carrier dev` saved)",
    )
    chat_cmd.add_argument(
        "--verbose",
        action="store_true",
        help="after each reply, show the turn's steps, decision, model calls and tokens",
    )
    chat_cmd.set_defaults(run=chat)
    keys_cmd = commands.add_parser("keys", help="make, list and revoke a tenant's API keys")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create_cmd = keys_sub.add_parser("create", help="make a key (the tenant is made if new)")
    create_cmd.add_argument("--tenant", required=True, help="tenant name, e.g. acme")
    create_cmd.add_argument("--name", default="", help="a label for the key")
    create_cmd.add_argument(
        "--agent", action="append", help="limit the key to this agent, by handle or id (repeatable)"
    )
    create_cmd.set_defaults(run=keys_create)
    list_cmd = keys_sub.add_parser("list", help="a tenant's keys (never the keys themselves)")
    list_cmd.add_argument("--tenant", required=True)
    list_cmd.set_defaults(run=keys_list)
    revoke_cmd = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke_cmd.add_argument("--tenant", required=True)
    revoke_cmd.add_argument("key_id", type=uuid.UUID)
    revoke_cmd.set_defaults(run=keys_revoke)
    usage_cmd = commands.add_parser("usage", help="model calls, tokens and cost per agent and day")
    usage_cmd.add_argument("--agent", help="only this agent (name or id)")
    usage_cmd.add_argument("--days", type=int, default=7, help="how many days back (default 7)")
    usage_cmd.set_defaults(run=usage)
    reembed_cmd = commands.add_parser(
        "reembed", help="re-embed stored memories after changing the embedding model"
    )
    reembed_cmd.add_argument("--agent", help="only this agent (name or id)")
    reembed_cmd.add_argument("--batch", type=int, help="memories per embedding call")
    reembed_cmd.set_defaults(run=reembed_command)
    migrate_cmd = commands.add_parser(
        "migrate", help="bring the database's schema up to this version of Carrier"
    )
    migrate_cmd.set_defaults(run=migrate_command)
    register_agents(commands)
    register_knowledge(commands)
    register_tasks(commands)
    # Other packages add commands (carrier_aws adds `dev`) without the core importing them.
    for command in entry_points(group="carrier.commands"):
        try:
            command.load()(commands)
        except ImportError as exc:  # e.g. `carrier dev` without the [emulated] extra
            logging.getLogger(__name__).debug("command %s unavailable: %s", command.name, exc)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="carrier: %(message)s")
    # As ElizaOS does: a `.env` file in the working folder (model keys, CARRIER_* settings).
    # What the environment already says wins over it.
    load_dotenv(Path.cwd() / ".env", override=False)
    try:
        code: int = args.run(args)
    except CommandError as exc:
        print(f"carrier: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a chat: no traceback
        print("carrier: interrupted", file=sys.stderr)
        return 130
    return code


def _version() -> str:
    try:
        return importlib.metadata.version("carrier")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
