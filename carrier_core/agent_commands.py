"""`carrier agents list|show|remove|reset-memory`: the agents of the database the settings
name (the embedded one by default), found by handle, name or id.

`carrier chat` and `carrier dev` register agents in the local tenant; the API registers
them in the caller's. These commands see every tenant's, as whoever holds the database does.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from carrier_core.command_line import CommandError, open_runtime, read_settings

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime
    from carrier_core.store.agents import AgentRecord


def find_agent(runtime: Runtime, agent: str) -> AgentRecord:
    """The one stored agent with this handle, name or id; `CommandError` if none or several
    (one handle in several tenants: give the id)."""
    found = [r for r in runtime.store.agents() if agent in (r.handle, r.name, str(r.id))]
    if not found:
        raise CommandError(
            f"no agent {agent!r} (a handle, name or id; `carrier agents list` shows them):"
            " `carrier chat --character FILE` registers one",
            2,
        )
    if len(found) > 1:
        ids = ", ".join(f"{r.id} ({r.handle})" for r in found)
        raise CommandError(f"{len(found)} agents match {agent!r}: give one's id ({ids})", 2)
    return found[0]


def list_agents(args: argparse.Namespace) -> int:
    with open_runtime(read_settings()) as runtime:
        agents = runtime.store.agents()
        tenants = runtime.store.tenant_names()
        if not agents:
            print("no agents yet: `carrier chat --character FILE` registers one", file=sys.stderr)
            return 0
        rows = [("handle", "name", "tenant", "memories", "id")] + [
            (
                a.handle,
                a.name,
                tenants.get(a.tenant_id, str(a.tenant_id)),
                str(sum(runtime.store.count_memories(a.id).values())),
                str(a.id),
            )
            for a in agents
        ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def show(args: argparse.Namespace) -> int:
    """The agent, its counts and its stored character (secrets shown by name only)."""
    with open_runtime(read_settings()) as runtime:
        agent = find_agent(runtime, args.agent)
        store = runtime.store
        counts = {kind.value: n for kind, n in store.count_memories(agent.id).items()}
        view: dict[str, Any] = {
            "id": str(agent.id),
            "handle": agent.handle,
            "name": agent.name,
            "tenant_id": str(agent.tenant_id),
            "created_at": agent.created_at.isoformat(),
            "updated_at": agent.updated_at.isoformat(),
            "memories": counts,
            "character": store.character(agent.id).to_document(),
        }
    print(json.dumps(view, indent=2, ensure_ascii=False))
    return 0


def _confirmed(args: argparse.Namespace, what: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise CommandError(f"{what}: add --yes to confirm (no terminal to ask)", 2)
    return input(f"{what}? [y/N] ").strip().lower() in ("y", "yes")


def remove(args: argparse.Namespace) -> int:
    with open_runtime(read_settings()) as runtime:
        agent = find_agent(runtime, args.agent)
        what = f"delete agent {agent.handle} ({agent.id}) with all it remembers"
        if not _confirmed(args, what):
            return 1
        runtime.delete_agent(agent.id)
    print(f"deleted agent {agent.handle} ({agent.id})", file=sys.stderr)
    return 0


def reset_memory(args: argparse.Namespace) -> int:
    with open_runtime(read_settings()) as runtime:
        agent = find_agent(runtime, args.agent)
        what = (
            f"forget the conversations, facts and relationships of {agent.handle}"
            " (its character and knowledge stay)"
        )
        if not _confirmed(args, what):
            return 1
        deleted = runtime.store.reset_memory(agent.id)
    print(f"{agent.handle}: {deleted} memories forgotten", file=sys.stderr)
    return 0


def register(commands: Any) -> None:
    """Add `carrier agents` to the command line's subcommands."""
    agents_cmd = commands.add_parser("agents", help="list, show, remove or reset stored agents")
    sub = agents_cmd.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    sub.add_parser("list", help="every stored agent").set_defaults(run=list_agents)
    show_cmd = sub.add_parser("show", help="an agent's counts and character")
    show_cmd.add_argument("agent", help="handle, name or id")
    show_cmd.set_defaults(run=show)
    for name, run, help_text in (
        ("remove", remove, "delete an agent with everything it remembers"),
        ("reset-memory", reset_memory, "forget conversations and facts, keep the character"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("agent", help="handle, name or id")
        cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        cmd.set_defaults(run=run)
