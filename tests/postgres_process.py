"""A Postgres server of one test's own, to kill with SIGKILL and start again.

The session's database (tests/conftest.py) is shared by every test: never kill that one.
This runs pgserver's binaries (the same PostgreSQL with pgvector) on a data folder of
the test, listening on a fixed TCP port of 127.0.0.1, so a URL stays valid across
restarts. The postmaster is this process's child, so a killed one is reaped here (some
containers' init reaps nothing, and Postgres refuses to start while the pid in a stale
`postmaster.pid` still exists, even as a zombie).
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg


def _pgserver_bin() -> Path:
    """pgserver's PostgreSQL binaries, found without importing it (its import warns)."""
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.submodule_search_locations, "pgserver is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def steady_port() -> int:
    """A free port below the ephemeral range: while the server is down, no outgoing
    connection takes it as its own port (nor connects to itself on it), so the server
    finds it free again when it restarts."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(max(1024, low - 10_000), low), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port below the ephemeral range")


def postgres_with_tls() -> Path | None:
    """The binaries of a PostgreSQL built with OpenSSL, or None. pgserver's are built
    without it; Debian's `postgresql` package has one (without pgvector)."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda folder: [int(n) for n in folder.parent.name.split(".") if n.isdigit()],
    )
    for folder in [_pgserver_bin(), *reversed(debian)]:
        try:
            configure = subprocess.run(
                [folder / "pg_config", "--configure"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if "--with-openssl" in configure or "--with-ssl=openssl" in configure:
            return folder
    return None


#: Postgres refuses to run as root; as root, the servers run as pgserver's own user.
SYSTEM_USER = "pgserver" if os.geteuid() == 0 else None


class PostgresProcess:
    """A new database folder: `start()`, `kill()` (SIGKILL to the postmaster), `start()`
    again (crash recovery), `stop()`. `binaries`: another PostgreSQL's (default: pgserver's)."""

    def __init__(self, root: Path, binaries: Path | None = None):
        self.data = root / "pgdata"
        self.log = root / "postgres.log"
        self.port = steady_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._bin = binaries or _pgserver_bin()
        self._server: subprocess.Popen[bytes] | None = None
        self._initdb()

    def _initdb(self) -> None:
        self.data.mkdir(parents=True)
        if SYSTEM_USER is not None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
                from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            entry = ensure_user_exists(SYSTEM_USER)
            assert entry is not None
            ensure_prefix_permissions(self.data)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
            self.log.touch()
            os.chown(self.log, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [self._bin / "initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "-E", "utf8"],
            user=SYSTEM_USER,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def require_password(self, role: str) -> None:
        """Make `role` log in with its password over TCP (the others keep trust), as a
        managed database would, so a wrong or old password is refused."""
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

    def serve_tls(self, certificate: bytes, key: bytes) -> None:
        """Before `start()`: accept TLS, with this certificate (chain) and key, PEM. They go
        in the data folder as server.crt and server.key (Postgres's defaults), owned by the
        server's user with mode 0600: Postgres refuses a key others may read."""
        for name, content in (("server.crt", certificate), ("server.key", key)):
            path = self.data / name
            path.write_bytes(content)
            path.chmod(0o600)
            if SYSTEM_USER is not None:
                shutil.chown(path, user=SYSTEM_USER)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("ssl = on\n")

    @property
    def pid(self) -> int:
        """The postmaster's pid, as its lock file says (first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def start(self, timeout: float = 30) -> None:
        """Start the server (after a kill: crash recovery) and wait until it answers."""
        assert self._server is None, "already running"
        # No Unix socket: TCP on 127.0.0.1 only, the same port every time.
        listen = ("-h", "127.0.0.1", "-p", str(self.port), "-k", "")
        with self.log.open("ab") as log:
            self._server = subprocess.Popen(
                [self._bin / "postgres", "-D", self.data, *listen],
                user=SYSTEM_USER,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self._server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"postgres did not start:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its children notice and exit."""
        assert self._server is not None, "not running"
        pid = self.pid
        assert pid == self._server.pid
        children = psutil.Process(pid).children()
        os.kill(pid, signal.SIGKILL)
        self._server.wait(timeout=10)
        self._server = None
        # A backend exits when it notices its postmaster is gone; a new postmaster will not
        # start while one still holds the old shared memory, so wait for them (bounded).
        deadline = time.monotonic() + 10
        while not all(exited(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in children:
            if not exited(child):
                child.kill()

    def stop(self) -> None:
        """Stop the server if it runs (fast: the test is over, its data is not kept)."""
        if self._server is None:
            return
        self._server.send_signal(signal.SIGQUIT)  # immediate shutdown
        try:
            self._server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait(timeout=10)
        self._server = None


def exited(process: psutil.Process) -> bool:
    """Gone, or a zombie (nobody may reap an orphan here: it holds nothing any more)."""
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@contextmanager
def running_postgres(root: Path) -> Iterator[PostgresProcess]:
    """A new server under `root`, started, and stopped at the end whatever happened."""
    postgres = PostgresProcess(root)
    try:
        postgres.start()
        yield postgres
    finally:
        postgres.stop()
