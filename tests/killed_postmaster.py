"""Run as `python -m tests.killed_postmaster HOME`: start Carrier's embedded Postgres in a
child process, kill that process and its postmaster outright, then start it again while
the killed postmaster is still a zombie; print what happened as JSON.

This process makes itself the orphans' subreaper (Linux) and does not reap them until the
end, as a container whose first process never reaps would not: the killed postmaster is
reparented here and stays a zombie for as long as the second start takes.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.postgres_process import exited

PR_SET_CHILD_SUBREAPER = 36

#: A Carrier process: start (or join) the embedded server, say when its server started,
#: and hold it until stdin closes.
START = """
import sys
from pathlib import Path
import psycopg
from carrier_core.store.database import embedded_database_url
with psycopg.connect(embedded_database_url(Path(sys.argv[1]))) as conn:
    print(conn.execute("SELECT pg_postmaster_start_time()::text").fetchone()[0], flush=True)
sys.stdin.read()
"""


def _stops(pid: int, timeout_s: float = 30) -> bool:
    """Whether the server process `pid` exits within the time."""
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    deadline = time.monotonic() + timeout_s
    while not exited(process):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def main(home: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    command = [sys.executable, "-c", START, home]
    first = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    first_started = first.stdout.readline().strip()
    pid = int((Path(home) / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])
    first.kill()
    first.wait()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the killed postmaster {pid} never became a zombie")
        time.sleep(0.05)
    second = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert second.stdout is not None and second.stderr is not None and second.stdin is not None
    second_started = second.stdout.readline().strip()
    still_zombie = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    users = json.loads((Path(home) / "pg" / ".handle_pids.json").read_text())
    lock = Path(home) / "pg" / "postmaster.pid"
    second_pid = int(lock.read_text().split("\n", 1)[0]) if lock.is_file() else None
    second.stdin.close()  # the last process using the server stops it as it exits
    error = second.stderr.read()
    second.wait(timeout=60)
    stopped = second_pid is not None and _stops(second_pid)
    while True:  # now reap every orphan this process adopted
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break
    print(
        json.dumps(
            {
                "first": first_started,
                "second": second_started,
                "zombie_during_second_start": still_zombie,
                "first_process_listed_as_user": first.pid in users,
                "second_server_stopped": stopped,
                "returncode": second.returncode,
                "stderr": error[-3000:],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
