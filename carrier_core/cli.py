"""`carrier`: the command line. `carrier chat` talks to a local agent.

In a terminal it is an interactive chat; with piped input it reads one
message a line and prints each reply on its own line, so it can be scripted.
Memory lives in Postgres (embedded by default), so a chat picks up where
the last one left off.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import TextIO

from carrier_core.character import CharacterError, load_character
from carrier_core.config import Settings
from carrier_core.plugin import PluginError
from carrier_core.runtime import Runtime
from carrier_core.store import DatabaseError
from carrier_core.turn import InvalidMessage, evaluate, run_turn

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


def chat(args: argparse.Namespace, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    try:
        character = load_character(args.character)
    except CharacterError as exc:
        print(f"carrier: {exc}", file=sys.stderr)
        return 2
    try:
        settings = Settings()
    except (ValueError, OSError) as exc:  # pydantic and YAML errors are ValueErrors
        print(f"carrier: bad configuration: {exc}", file=sys.stderr)
        return 2
    try:
        runtime = Runtime.open(settings)
    except DatabaseError as exc:
        print(f"carrier: {exc}", file=sys.stderr)
        return 1
    interactive = stdin.isatty()
    user = args.user or getpass.getuser()
    room = args.room or f"chat-{user}"
    last_turn: uuid.UUID | None = None
    with runtime:
        try:
            models = runtime.models_for(character)
        except PluginError as exc:
            print(f"carrier: {exc}", file=sys.stderr)
            return 2
        agent_id = runtime.register_agent(character)
        for name, reason in runtime.plugins_for(character).skipped:
            print(f"carrier: plugin {name!r} skipped: {reason}", file=sys.stderr)
        where = (settings.database_url and "DATABASE_URL") or str(settings.data_dir / "pg")
        model_note = (
            "offline model: deterministic ELIZA-style replies, no key needed"
            if models.offline
            else f"model: {models.large.name}"
        )
        print(
            f"Chatting with {character.name} ({model_note}). Memory: {where}.",
            file=sys.stderr,
        )
        if interactive:
            print("Type /quit or press Ctrl-D to leave.", file=sys.stderr)
        for line in _lines(stdin, interactive):
            if line.strip() in QUIT:
                break
            if not line.strip():
                continue
            try:
                result = run_turn(
                    runtime,
                    {
                        "agent_id": agent_id,
                        "room": room,
                        "sender": user,
                        "sender_name": user,
                        "text": line,
                        "source": "cli",
                    },
                )
            except InvalidMessage as exc:
                print(f"carrier: {exc}", file=sys.stderr)
                continue
            last_turn = result.turn_id
            if result.error:
                print(f"carrier: turn failed: {result.error}", file=sys.stderr)
            for text in result.reply_texts:
                print(f"{character.name}: {text}" if interactive else text, file=stdout, flush=True)
        if last_turn is not None:
            # Reflect on what was said since the last reflection, so nothing told is forgotten.
            evaluate(runtime, last_turn, force=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carrier", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    chat_cmd = commands.add_parser("chat", help="chat with a local agent in the terminal")
    chat_cmd.add_argument("--character", required=True, help="path to an ElizaOS character file")
    chat_cmd.add_argument("--user", help="your name in the conversation (default: login name)")
    chat_cmd.add_argument("--room", help="conversation to continue (default: chat-<user>)")
    chat_cmd.set_defaults(run=chat)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="carrier: %(message)s")
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
