"""`carrier chat` as a newcomer runs it: a fresh embedded Postgres, piped input, two sessions."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from carrier_core import Character
from carrier_core.api.app import create_app
from carrier_core.cli import main
from carrier_core.config import Settings
from carrier_core.models.select import primary_provider
from carrier_core.store.store import Store
from carrier_core.tenants import key_for_secret
from tests.conftest import CHARACTERS, TenantKey, make_runtime, run_inline
from tests.dev_server import CARRIER
from tests.test_chat_completions import serving


def chat(
    home: Path, lines: str, *args: str, cwd: Path | None = None, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    # No model keys from the developer's shell: these tests talk to the offline model.
    unset = {"DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(CARRIER_HOME=str(home), **env_vars)
    return subprocess.run(
        [sys.executable, "-m", "carrier_core.cli", "chat", *args],
        input=lines,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_the_agent_recalls_across_restarts_through_the_embedded_database(tmp_path: Path) -> None:
    ada = str(CHARACTERS / "ada.json")
    first = chat(
        tmp_path,
        "Hello\nMy name is Grace\nI like sailing\n/quit\nnot read\n",
        "--character",
        ada,
        "--user",
        "grace",
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "Hello, grace. How are you today?",
        "Nice to meet you, Grace. What would you like to talk about?",
        "What do you like most about sailing?",
    ]
    assert "offline model" in first.stderr
    assert (tmp_path / "pg").is_dir()

    second = chat(
        tmp_path, "What do you remember about me?\n", "--character", ada, "--user", "grace"
    )
    assert second.returncode == 0, second.stderr
    [reply] = second.stdout.splitlines()
    assert reply.startswith("Here is what I remember: ")
    assert "grace's name is Grace" in reply and "grace likes sailing" in reply

    # Another user of the same agent is a different person with nothing remembered.
    stranger = chat(
        tmp_path, "What do you remember about me?\n", "--character", ada, "--user", "bo"
    )
    assert "don't know much about you" in stranger.stdout


def test_a_broken_character_file_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "bio": [1]}')
    result = chat(tmp_path, "", "--character", str(bad))
    assert result.returncode == 2
    assert f"carrier: {bad}: field 'bio.0': Input should be a valid string" in result.stderr
    assert not (tmp_path / "pg").exists()


def test_an_oversized_line_is_refused_and_the_chat_goes_on(tmp_path: Path) -> None:
    ada = str(CHARACTERS / "ada.json")
    result = chat(tmp_path, "x" * 9000 + "\nhello\n", "--character", ada, "--user", "sam")
    assert result.returncode == 0
    assert "text: 9000 characters, the limit is 8000" in result.stderr
    assert result.stdout.splitlines() == ["Hello, sam. How are you today?"]


def test_an_unreachable_database_and_bad_settings_are_reported_without_a_traceback(
    tmp_path: Path,
) -> None:
    ada = str(CHARACTERS / "ada.json")
    unreachable = chat(
        tmp_path, "", "--character", ada, DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"
    )
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("carrier: cannot connect to the database:")
    assert "Traceback" not in unreachable.stderr
    bad = chat(tmp_path, "", "--character", ada, CARRIER_MAX_STEPS="0")
    assert bad.returncode == 2
    assert "carrier: bad configuration" in bad.stderr and "max_steps" in bad.stderr
    unknown = chat(tmp_path, "", "--character", ada, CARRIER_MODEL_PROVIDER="gpt9")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("carrier: no model provider named 'gpt9'; known: ")
    assert "offline" in unknown.stderr and "openai" in unknown.stderr
    assert "Traceback" not in unknown.stderr + bad.stderr


def test_a_misspelt_fallback_provider_is_named_at_start(tmp_path: Path) -> None:
    ada = str(CHARACTERS / "ada.json")
    result = chat(tmp_path, "hello\n", "--character", ada, CARRIER_MODEL_FALLBACK="ofline")
    assert result.returncode == 2
    assert "model_fallback names no model provider 'ofline'" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_are_made_listed_and_revoked_from_the_command_line(
    database_url: str,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["keys", "create", "--tenant", "acme", "--name", "ci"]) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    key = key_for_secret(store, secret)
    acme = store.tenant_named("acme")
    assert acme is not None and f"tenant acme: {acme.id}" in err
    assert key is not None and key.tenant_id == acme.id and key.name == "ci"
    assert "shown once" in err and secret not in err

    assert main(["keys", "list", "--tenant", "acme"]) == 0
    listed = capsys.readouterr().out
    assert str(key.id) in listed and key.prefix in listed and secret not in listed

    assert main(["keys", "revoke", "--tenant", "globex", str(key.id)]) == 2  # no such tenant
    assert main(["keys", "create", "--tenant", "globex"]) == 0
    capsys.readouterr()
    assert main(["keys", "revoke", "--tenant", "globex", str(key.id)]) == 2  # not theirs
    assert key_for_secret(store, secret) is not None
    assert main(["keys", "revoke", "--tenant", "acme", str(key.id)]) == 0
    assert key_for_secret(store, secret) is None
    capsys.readouterr()

    # A key is limited only to the tenant's own agents.
    other = store.save_agent(Character(name="Bea"))  # the local tenant's
    assert main(["keys", "create", "--tenant", "acme", "--agent", str(other)]) == 2
    assert f"tenant acme has no agent {other}" in capsys.readouterr().err
    assert main(["keys", "create", "--tenant", "acme", "--agent", "bea"]) == 2
    ours = store.save_agent(Character(name="Bea", id=uuid.uuid4()), acme.id)  # acme's "bea"
    assert main(["keys", "create", "--tenant", "acme", "--agent", "bea"]) == 0
    limited = key_for_secret(store, capsys.readouterr().out.strip())
    assert limited is not None and limited.agent_ids == frozenset({ours})


def test_ctrl_c_leaves_the_chat_cleanly_and_what_was_said_is_remembered(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"}
    }
    env["CARRIER_HOME"] = str(tmp_path)
    args = ["--character", str(CHARACTERS / "ada.json"), "--user", "grace"]
    process = subprocess.Popen(
        [sys.executable, "-m", "carrier_core.cli", "chat", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("I live in Lisbon\n")
    process.stdin.flush()
    # The reply is out: the chat now waits for the next line, where Ctrl-C finds it.
    assert process.stdout.readline().strip() == "What is it like to live in Lisbon?"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    # The end-of-session reflection ran (one message is below reflection_interval).
    recalled = chat(tmp_path, "What do you remember about me?\n", *args)
    assert "grace lives in Lisbon" in recalled.stdout


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "carrier_core.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("carrier ") and done.stdout.strip() != "carrier"


def test_chat_over_the_api_exits_1_on_a_wrong_key_or_an_unknown_agent(
    store: Store,
    make_tenant: Callable[[str], TenantKey],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    runtime = make_runtime(store)
    tenant = make_tenant("cli")
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps({"name": "Nobody Registered"}))
    with serving(create_app(lambda: runtime, run_inline(runtime))) as url:
        for key, character, words in (
            ("carrier_not-a-key", CHARACTERS / "ada.json", "401"),
            (tenant.key, stranger, "404"),
        ):
            monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nAgain\n"))
            code = main(["chat", "--character", str(character), "--api", url, "--key", key])
            err = capsys.readouterr().err
            assert code == 1, err
            assert words in err and "Traceback" not in err


def test_a_dotenv_file_in_the_working_folder_is_read_and_the_environment_wins(
    tmp_path: Path,
) -> None:
    home = tmp_path / "from-dotenv"
    (tmp_path / ".env").write_text(f"CARRIER_HOME={home}\nCARRIER_RECENT_MESSAGES=not-a-number\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"}
        and not k.startswith("CARRIER_")
    }
    run = partial(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "carrier_core.cli",
            "chat",
            "--character",
            str(CHARACTERS / "ada.json"),
        ],
        input="Hello\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    refused = run(env=env)
    # The .env's bad value is read, and named.
    assert refused.returncode == 2 and "recent_messages" in refused.stderr
    chatted = run(env={**env, "CARRIER_RECENT_MESSAGES": "12"})
    assert chatted.returncode == 0, chatted.stderr
    assert (home / "pg").is_dir()  # CARRIER_HOME came from the .env


SHARED_CHARACTERS = CHARACTERS.parent.parent / "shared" / "elizaos-characters"


def test_what_is_given_and_ignored_is_said(tmp_path: Path) -> None:
    """A misspelt carrier.yaml key, a v0 character's modelProvider without its key, and
    ElizaOS connectors (`clients`): each named, and the chat goes on."""
    (tmp_path / "carrier.yaml").write_text("recent_mesages: 5\nreflection_interval: 2\n")
    sol = SHARED_CHARACTERS / "sol.character.json"  # modelProvider openai, clients [twitter]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"}
    }
    done = subprocess.run(
        [*CARRIER, "chat", "--character", str(sol)],
        input="Hi, who are you?\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "CARRIER_HOME": str(tmp_path)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "unknown setting 'recent_mesages' ignored" in done.stderr
    assert "reflection_interval" not in done.stderr
    assert "modelProvider 'openai' (ElizaOS v0) is not used" in done.stderr
    assert "clients ['twitter']" in done.stderr
    assert done.stdout.startswith("I'm Sol.")


def test_a_v0_model_provider_is_followed_when_its_key_is_set() -> None:
    c3po = Character.model_validate({"name": "C-3PO", "modelProvider": "anthropic"})
    settings = Settings(database_url="postgresql://unused")
    both = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"}
    assert primary_provider(settings, c3po, both) == "anthropic"  # the character's choice
    assert primary_provider(settings, c3po, {"OPENAI_API_KEY": "sk-o"}) == "openai"
    assert primary_provider(settings, c3po, {}) == "offline"
    explicit = settings.model_copy(update={"model_provider": "offline"})
    assert primary_provider(explicit, c3po, both) == "offline"  # a setting wins


def test_verbose_chat_shows_each_turns_steps_decision_and_model_calls(tmp_path: Path) -> None:
    result = chat(
        tmp_path, "I like sailing\n", "--character", str(CHARACTERS / "ada.json"), "--verbose"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["What do you like most about sailing?"]
    trace = result.stderr.splitlines()
    assert any(line.startswith("  ingest ok ") for line in trace), result.stderr
    assert any(line.startswith("  decide ok ") and line.endswith("actions REPLY") for line in trace)
    [decide_call] = [line for line in trace if "(decide): ok" in line and "model large" in line]
    assert "offline/carrier-offline-eliza" in decide_call and " tokens in, " in decide_call
    assert "$0.0000" in decide_call
    quiet = chat(tmp_path, "I like tea\n", "--character", str(CHARACTERS / "ada.json"))
    assert "model large" not in quiet.stderr and "decide ok" not in quiet.stderr


def test_a_reply_shows_its_attachments() -> None:
    from carrier_core.cli import reply_lines

    assert reply_lines(
        "Here it is", [{"id": "a1", "title": "Chart", "url": "https://x/c.png"}]
    ) == [
        "Here it is",
        "[Chart] https://x/c.png",
    ]
    assert reply_lines("", [{"id": "a2", "url": "https://x/d.pdf"}]) == ["[a2] https://x/d.pdf"]


ADA = CHARACTERS / "ada.json"


def test_a_carrier_yaml_with_a_syntax_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "carrier.yaml").write_text("model:\n  provider: [openai\n")
    result = chat(tmp_path / "home", "Hello\n", "--character", str(ADA), cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("carrier: bad configuration: while parsing a flow sequence")
    assert 'in "carrier.yaml", line 2' in line
