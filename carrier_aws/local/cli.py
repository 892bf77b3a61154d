"""`carrier dev`: the serverless bundle on this machine, AWS emulated, the HTTP API served.

The database is the one `carrier chat` uses (DATABASE_URL, else the embedded
Postgres); the functions in `functions/` run in this process on the queues and
the state machine of `template.yaml`, emulated by moto. Talk to it with
`carrier chat --character PATH --api http://127.0.0.1:8000`, with curl, or in the web
console (the `Console:` link it prints carries the local key); listen and talk on the
WebSocket API at `ws://127.0.0.1:8000/v1/ws?agent=...&room=...&token=...`.

Webhooks may point at private addresses (a receiver on this machine) while the API is
served on a loopback address only; with `--no-private-webhooks`, or a `--host` other
machines reach, they are refused as in a deployment.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from carrier_core.character import CharacterError
from carrier_core.command_line import (
    CommandError,
    distinct_handles,
    open_runtime,
    read_character,
    read_settings,
)
from carrier_core.knowledge import DocumentError
from carrier_core.plugin import PluginError
from carrier_core.secrets import SecretStoreError
from carrier_core.store.agents import AgentConflict
from carrier_core.store.database import DatabaseError
from carrier_core.tenants import dev_key_file, local_dev_key


def register(subparsers: Any) -> None:
    """Add `dev` to the `carrier` command (entry point `carrier.commands`)."""
    dev_cmd = subparsers.add_parser(
        "dev",
        help="run the serverless bundle locally on emulated AWS and serve its HTTP API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dev_cmd.add_argument("--host", default="127.0.0.1", help="address to serve on")
    dev_cmd.add_argument("--port", type=int, default=8000, help="port to serve on")
    dev_cmd.add_argument(
        "--character",
        action="append",
        default=[],
        metavar="PATH",
        help="register this character file first (may be given several times)",
    )
    dev_cmd.add_argument(
        "--template",
        type=Path,
        help="the SAM template (default: ./template.yaml, else the repository's)",
    )
    dev_cmd.add_argument(
        "--retry-scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="multiply the state machine's Retry waits by this (moto really sleeps them)",
    )
    dev_cmd.add_argument(
        "--schedule-interval",
        type=float,
        metavar="SECONDS",
        help="run the template's schedules (the turn and webhook sweeps, due tasks) this often"
        " instead of at their rates",
    )
    dev_cmd.add_argument(
        "--parameter",
        action="append",
        default=[],
        type=_parameter,
        metavar="NAME=VALUE",
        help="a template parameter's value, e.g. ModelProvider=openai (may be repeated)",
    )
    dev_cmd.add_argument(
        "--no-private-webhooks",
        dest="private_webhooks",
        action="store_false",
        help="refuse webhook URLs on private addresses, as a deployment does (always, when"
        " --host is not a loopback address)",
    )
    dev_cmd.add_argument(
        "--verbose",
        action="store_true",
        help="the functions' JSON log lines (info and up) and metric documents, as Lambda"
        " writes them; without it only their warnings and errors show",
    )
    dev_cmd.set_defaults(run=dev)


#: The template's variables that your shell's environment overrides under `carrier dev`:
#: the model's, the end-user tokens' and the webhooks' timing are a deployment's defaults,
#: which a developer tunes; the rest (queues, ARNs, the database) are the emulator's own.
SHELL_SETTINGS = ("CARRIER_MODEL_", "CARRIER_JWT_", "CARRIER_WEBHOOK_")


def shell_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of `environ` that win over the template's (see `SHELL_SETTINGS`)."""
    return {name: value for name, value in environ.items() if name.startswith(SHELL_SETTINGS)}


def _parameter(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _loopback(host: str) -> bool:
    """Whether an API served on `host` is reachable from this machine only."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name (or nothing: every address) may be reached from elsewhere


def private_webhooks(host: str, wanted: bool) -> bool:
    """Whether the functions take webhook URLs on private addresses. On your own machine a
    webhook may point at your own machine (a receiver on localhost); but an API others
    can reach would let them make Carrier send requests into your network, so then the
    allowance is refused, with a notice."""
    if wanted and not _loopback(host):
        print(
            f"carrier: serving on {host}, which is not a loopback address:"
            " webhook URLs on private addresses are refused",
            file=sys.stderr,
        )
        return False
    return wanted


def console_link(host: str, port: int, key: str) -> str:
    """The web console's address with the local key in its fragment (`#key=...`), which
    browsers never send to the server. A wildcard host is opened at the loopback address."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/#key={quote(key, safe='')}"


def dev(args: argparse.Namespace) -> int:
    # Imported here: `carrier chat` should not pay for moto and uvicorn.
    try:
        import moto  # noqa: F401
        import uvicorn

        from carrier_aws.local.emulator import Emulator, default_template
        from carrier_aws.local.template import TemplateError
    except ImportError as exc:
        raise CommandError(
            f"`carrier dev` needs the emulated extra ({exc.name} is missing): "
            "pip install 'carrier[emulated]'",
            1,
        ) from None
    from carrier_core.store.database import database_url

    characters = [read_character(path) for path in args.character]
    distinct_handles(characters, args.character)
    settings = read_settings()
    try:
        url = database_url(settings)  # starts the embedded Postgres when none is configured
    except DatabaseError as exc:
        raise CommandError(str(exc), 1) from None
    template = args.template or default_template()
    quiet = {"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING"}
    # Set either way: a refusal holds whatever the shell's environment says.
    allow_private = private_webhooks(args.host, args.private_webhooks)
    environment = {
        **shell_settings(os.environ),
        "CARRIER_WEBHOOK_ALLOW_PRIVATE_URLS": "true" if allow_private else "false",
        # Secrets in files under the data folder, not in moto's Secrets Manager: moto's lasts
        # only as long as this process, while the database keeps the agents and webhooks
        # whose secrets they are.
        "CARRIER_SECRET_STORE": "file",
        "CARRIER_HOME": str(settings.data_dir),
        **({} if args.verbose else quiet),
    }
    try:
        emulator = Emulator(
            url,
            template=template,
            retry_interval_scale=args.retry_scale,
            environment=environment,
            parameters=dict(args.parameter),
            schedule_interval_s=args.schedule_interval,
            # Ctrl-C stops soon: turns under way are taken up again at the next start.
            stop_timeout_s=3.0,
        )
    except TemplateError as exc:
        raise CommandError(str(exc), 2) from None
    logging.getLogger("carrier_aws").setLevel(logging.INFO)
    with emulator:
        # Registered with the settings the functions have (the emulator set their
        # environment): the same model set embeds the agents' knowledge. Opening the
        # runtime also migrates the database.
        try:
            with open_runtime(read_settings()) as runtime:
                for character in characters:
                    runtime.models_for(character)  # a model set that does not exist fails here
                    agent_id = runtime.register_agent(character)
                    named = f"{character.handle} ({character.name})"
                    print(f"agent {named}: {agent_id}", file=sys.stderr)
                    for name, reason in runtime.plugins_for(character).skipped:
                        print(f"carrier: plugin {name!r} skipped: {reason}", file=sys.stderr)
                key, made = local_dev_key(runtime.store, settings.data_dir)
        except (
            DatabaseError,
            PluginError,
            AgentConflict,
            CharacterError,
            SecretStoreError,
            DocumentError,
        ) as exc:
            raise CommandError(str(exc), 1) from None
        base = f"http://{args.host}:{args.port}"
        agent = characters[0].handle if characters else "AGENT"
        where = (settings.database_url and "DATABASE_URL") or str(settings.data_dir / "pg")
        key_note = "made now" if made else "saved earlier"
        key_file = dev_key_file(settings.data_dir)
        print(
            f"Carrier on emulated AWS ({template}), database: {where}.\n"
            f"API: {base} (docs: {base}/docs)\n"
            # The key once, in the fragment, which the browser keeps to itself: the page reads
            # it and takes it out of the address bar.
            f"Console: {console_link(args.host, args.port, key)}\n"
            f"API key of the local tenant ({key_note}, in {key_file}):\n"
            f"  export CARRIER_API_KEY=$(cat {shlex.quote(str(key_file))})\n"
            f"  curl -s -X POST {base}/v1/agents/{agent}/rooms/demo/messages \\\n"
            '    -H "Authorization: Bearer $CARRIER_API_KEY" \\\n'
            '    -H "content-type: application/json" \\\n'
            '    -d \'{"text": "Hello!", "sender": "me"}\'\n'
            f'  curl -s -H "Authorization: Bearer $CARRIER_API_KEY" {base}/v1/turns/TURN_ID\n'
            f"WebSocket: ws://{args.host}:{args.port}/v1/ws?agent={agent}&room=demo"
            "&token=$CARRIER_API_KEY\n"
            f"Chat: carrier chat --character "
            f"{args.character[0] if args.character else 'PATH'} --api {base}\n"
            "Ctrl-C stops.",
            file=sys.stderr,
        )
        uvicorn.run(emulator.app, host=args.host, port=args.port, log_level="warning")
    return 0
