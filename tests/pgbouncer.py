"""PgBouncer in transaction pooling mode in front of a Postgres, as RDS Proxy pools.

Like RDS Proxy, it refuses startup parameters it does not know (`options` among them),
and it hands each transaction whichever server connection is free: a session setting or
a prepared statement made in one transaction is not there in the next. Debian's package
(`apt-get install pgbouncer`); `.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tests.dev_server import free_port

#: PgBouncer will not run as root; as root it runs as the embedded Postgres's own user.
USER = "pgserver" if os.geteuid() == 0 else None


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).exists()), None
    )


@contextmanager
def running_pgbouncer(target_url: str) -> Iterator[str]:
    """Start PgBouncer before the database `target_url` names; yields the URL to use
    instead (same database and user, through the pooler). Stopped when the block ends."""
    binary = pgbouncer_binary()
    assert binary is not None, "PgBouncer is not installed (apt-get install pgbouncer)"
    target = conninfo_to_dict(target_url)
    folder = Path(tempfile.mkdtemp(prefix="carrier-pgbouncer-"))
    port = free_port()
    server = " ".join(
        f"{name}={target[name]}"
        for name in ("host", "port", "user", "password")
        if target.get(name)
    )
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n* = {server}\n\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        "max_client_conn = 500\ndefault_pool_size = 20\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
    )
    if USER is not None:
        shutil.chown(folder, USER)
    # Started as that user directly (not through runuser), so the signal that stops it
    # reaches PgBouncer itself.
    process = subprocess.Popen(
        [binary, str(config)], user=USER, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    url = f"postgresql://{target.get('user', 'postgres')}@127.0.0.1:{port}/{target['dbname']}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                log = folder / "pgbouncer.log"
                assert process.poll() is None, log.read_text() if log.exists() else "no log"
                assert time.monotonic() < deadline, "PgBouncer did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(folder, ignore_errors=True)
