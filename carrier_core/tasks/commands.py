"""`carrier tasks list [--agent AGENT]`: the scheduled tasks of the database the settings
name (the embedded one by default), every agent's or one's (by handle, name or id), soonest
due first. As `carrier agents list`, it sees every tenant's, as whoever holds the database
does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from carrier_core.agent_commands import find_agent
from carrier_core.command_line import open_runtime, read_settings


def list_command(args: argparse.Namespace) -> int:
    with open_runtime(read_settings()) as runtime:
        agent_id = find_agent(runtime, args.agent).id if args.agent else None
        handles = {a.id: a.handle for a in runtime.store.agents()}
        tasks = runtime.store.tasks(agent_id)
    if not tasks:
        print("no tasks: plugins schedule them (carrier_core.tasks.create_task)", file=sys.stderr)
        return 0
    rows = [("agent", "name", "due", "every", "status", "runs", "failures", "id", "last error")]
    for task in tasks:
        every = task.interval
        rows.append(
            (
                handles.get(task.agent_id, str(task.agent_id)),
                task.name,
                task.due_at.isoformat(timespec="seconds"),
                f"{every.total_seconds():g}s" if every else "once",
                task.status.value,
                str(task.runs),
                str(task.failures),
                str(task.id),
                task.last_error or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def register(commands: Any) -> None:
    """Add `carrier tasks` to the command line's subcommands."""
    tasks_cmd = commands.add_parser("tasks", help="list the agents' scheduled tasks")
    sub = tasks_cmd.add_subparsers(dest="tasks_command", required=True, metavar="ACTION")
    list_cmd = sub.add_parser("list", help="the scheduled tasks, soonest due first")
    list_cmd.add_argument("--agent", help="only this agent's (handle, name or id)")
    list_cmd.set_defaults(run=list_command)
