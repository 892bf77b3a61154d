"""The README's client-API walkthrough, run as written against `carrier dev`: an agent made
with a key, chat over REST, the WebSocket and the OpenAI SDK, a signed webhook received and
checked, and another tenant kept out. If the README's commands stop working, this fails."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from carrier_core.store import Store
from tests.conftest import ROOT
from tests.dev_server import carrier_dev, free_port, offline_environment

README = ROOT / "README.md"
START = "<!-- client-api-walkthrough"
END = "<!-- /client-api-walkthrough -->"


def walkthrough() -> str:
    text = README.read_text()
    section = text[text.index(START) : text.index(END)]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) >= 6, "the README walkthrough lost its blocks"
    return "\n".join(blocks)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples use curl")
def test_the_readme_client_api_walkthrough_works_as_written(
    database_url: str, store: Store, tmp_path: Path
) -> None:
    home = tmp_path / "home"  # `~/.carrier/dev-api-key` in the README is the one carrier dev made
    home.mkdir()
    venv_bin = str(Path(sys.executable).parent)
    env = offline_environment(
        DATABASE_URL=database_url, HOME=str(home), PATH=f"{venv_bin}:/usr/bin:/bin"
    )
    env.pop("CARRIER_HOME", None)
    ada = str(ROOT / "characters" / "ada.json")
    with carrier_dev(env, tmp_path / "dev.log", "--character", ada) as dev:
        script = (
            walkthrough()
            .replace("API=http://127.0.0.1:8000", f"API={dev.base}")
            .replace("HOOK_PORT=9000", f"HOOK_PORT={free_port()}")
        )
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    out = run.stdout
    assert run.returncode == 0, f"{out}\n{run.stderr}\n{dev.log.read_text()}"
    for seen in [
        "agent ",
        '"status":"done"',
        "Nice to meet you, Grace.",
        "reply What do you like most about sailing?",
        "turn.done",
        "Here is what I remember: ",
        "grace's name is Grace",
        "grace likes sailing",
        "verified ",
        "404",
        '{"data":[],"next_cursor":null}',
        "document ready",
        "Here is something I know: The harbour ferry leaves at seven each morning.",
    ]:
        assert seen in out, f"{seen!r} not in:\n{out}\n{run.stderr}"
    assert "BAD SIGNATURE" not in out
    assert "lives in Lisbon" in out


def test_the_readme_handler_snippet_runs_as_written(tmp_path: Path) -> None:
    """ "Try a handler, without Docker": the shell block as the README shows it, with the
    embedded Postgres under a home of the test's own, and no Powertools variable set."""
    text = README.read_text()
    section = text[text.index("**Without Docker**") :]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None, "the README lost its handler snippet"
    home = tmp_path / "home"
    home.mkdir()
    env = offline_environment(HOME=str(home), PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    for name in list(env):
        if name.startswith(("POWERTOOLS_", "DATABASE_URL")):
            del env[name]
    done = subprocess.run(
        ["bash", "-c", block.group(1)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "{'batchItemFailures': []}" in done.stdout
