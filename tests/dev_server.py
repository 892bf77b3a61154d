"""`carrier dev` as a newcomer starts it: a subprocess serving on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CARRIER = (sys.executable, "-m", "carrier_core.cli")


def free_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port: int = free.getsockname()[1]
    return port


def offline_environment(**overrides: str) -> dict[str, str]:
    """This environment without model keys (the offline model answers), plus overrides."""
    unset = {"OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "CARRIER_MODEL_PROVIDER"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(overrides)
    return env


def carrier_chat(env: dict[str, str], *args: str, said: str) -> list[str]:
    """`carrier chat` with `said` piped in, as a script would: its reply lines."""
    chat = subprocess.run(
        [*CARRIER, "chat", *args],
        input=said,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert chat.returncode == 0, chat.stderr
    return chat.stdout.splitlines()


@dataclass(frozen=True)
class DevServer:
    base: str
    env: dict[str, str]
    log: Path


@contextmanager
def carrier_dev(env: dict[str, str], log: Path, *args: str) -> Iterator[DevServer]:
    """Start `carrier dev`, wait until it serves, stop it with Ctrl-C and check it ended well."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [*CARRIER, "dev", "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{base}/v1/health", timeout=1)
                    break
                except OSError:
                    assert server.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "carrier dev did not start serving"
                    time.sleep(0.1)
            yield DevServer(base, env, log)
        finally:
            server.send_signal(signal.SIGINT)
            code = server.wait(timeout=30)
    assert code == 0, log.read_text()
