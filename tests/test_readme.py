"""The README's client-API walkthrough, run as written against `carrier dev`: an agent made
with a key, chat over REST, the WebSocket and the OpenAI SDK, a signed webhook received and
checked, and another tenant kept out. If the README's commands stop working, this fails."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from carrier_core import Character, Runtime
from carrier_core.cli import main
from carrier_core.store.store import Store
from carrier_core.tasks import create_task
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
        "ada Ada\n",
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


#: `<!-- readme-test: NAME -->` before a shell block: a test here runs it as `block(NAME)`.
#: `<!-- not run by tests: WHY -->`: it cannot run here (an AWS account, a key), and says so.
MARK = re.compile(
    r"<!-- (readme-test: ([\w-]+)[^>]*|not run by tests: .+?) -->\n```sh\n(.*?)```", re.DOTALL
)


def block(name: str) -> str:
    for match in MARK.finditer(README.read_text()):
        if match.group(2) == name:
            return match.group(3)
    raise AssertionError(f"the README lost its block {name!r}")


def test_every_shell_block_of_the_readme_is_run_by_a_test_or_says_why_not() -> None:
    text = README.read_text()
    walkthrough_span = (text.index(START), text.index(END))
    unaccounted = []
    for found in re.finditer(r"```sh\n", text):
        if walkthrough_span[0] < found.start() < walkthrough_span[1]:
            continue
        before = text[: found.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if not re.fullmatch(r"<!-- (readme-test: [\w-]+.*|not run by tests: .+) -->", before):
            line = text[: found.start()].count("\n") + 1
            unaccounted.append(f"README.md:{line}")
    assert not unaccounted, f"shell blocks neither tested nor marked: {unaccounted}"
    named = {m.group(2) for m in MARK.finditer(text) if m.group(2)}
    tested = set(re.findall(r'block\("([\w-]+)"\)', Path(__file__).read_text()))
    assert named == tested, "each readme-test block has a test here, and each test a block"


def test_the_readme_set_up_and_chatting_blocks_run_as_written(tmp_path: Path) -> None:
    """The main set-up command in a copy of the repository (a fresh virtualenv, pip install,
    a chat whose input is piped), then the Chatting, knowledge and agents blocks there."""
    repo = tmp_path / "carrier"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    home = tmp_path / "home"
    home.mkdir()
    env = offline_environment(HOME=str(home))
    for name in list(env):
        if name.startswith(("CARRIER_", "DATABASE_URL", "VIRTUAL_ENV")):
            del env[name]
    # The shell's PATH without this test's virtualenv: the README's own `python3 -m venv`.
    env["PATH"] = ":".join(
        p for p in os.environ["PATH"].split(":") if p != str(Path(sys.executable).parent)
    )

    def run(script: str, stdin: str = "") -> str:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=repo,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"{script}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    assert "Ada" in run(block("setup-chat"), "Hi, who are you?\n")
    venv = ". .venv/bin/activate\n"
    remembered = run(venv + block("chatting"))
    assert "Here is what I remember: " in remembered and "likes sailing" in remembered

    (repo / "manuals").mkdir()
    (repo / "manuals" / "ferries.md").write_text("# Ferries\n\nThe ferry leaves at seven.\n")
    add, show, remove = block("knowledge").splitlines()
    found = re.search(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", run(f"{venv}{add}\n{show}"))
    assert found is not None, "carrier knowledge add/list printed no document id"
    run(venv + remove.replace("DOCUMENT_ID", found.group(0)))
    assert found.group(0) not in run(venv + show)

    agents = run(venv + block("agents"))
    assert agents.splitlines()[1].split()[:2] == ["ada", "Ada"]
    assert '"handle": "ada"' in agents
    assert run(venv + "carrier agents list") == ""  # the block's last line removed Ada


def test_the_readme_handler_snippet_runs_as_written(tmp_path: Path) -> None:
    """ "Try a handler, without Docker": the shell block as the README shows it, with the
    embedded Postgres under a home of the test's own, and no Powertools variable set."""
    block_text = block("handler")
    home = tmp_path / "home"
    home.mkdir()
    env = offline_environment(HOME=str(home), PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    for name in list(env):
        if name.startswith(("POWERTOOLS_", "DATABASE_URL")):
            del env[name]
    done = subprocess.run(
        ["bash", "-c", block_text],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "{'batchItemFailures': []}" in done.stdout


def test_the_readme_tasks_block_lists_the_scheduled_tasks(
    database_url: str,
    runtime: Runtime,
    ada: Character,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each line of the block, run by the `carrier` command's entry point in this process,
    on the tests' database, where Ada has a repeating task (tests/task_plugin.py's worker)."""
    agent = runtime.register_agent(ada.model_copy(update={"plugins": ["tests.task_plugin:plugin"]}))
    task = create_task(runtime, agent, "tick", metadata={"updateInterval": 60_000})
    monkeypatch.setenv("DATABASE_URL", database_url)
    for line in block("tasks").splitlines():
        command, _, _ = line.partition("#")
        assert shlex.split(command)[0] == "carrier"
        assert main(shlex.split(command)[1:]) == 0, line
        header, row = capsys.readouterr().out.splitlines()
        assert header.split()[:2] == ["agent", "name"]
        assert row.split()[:2] == ["ada", "tick"] and str(task.id) in row
