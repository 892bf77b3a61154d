"""The application's login: a member of `carrier_app`, given its password without sending it.

Migration 0006 makes the group role `carrier_app` and grants it the rows of Carrier's tables
and nothing more. A migration cannot make the login itself, as it cannot know the password:
whoever holds it (the stack's migrate function, which reads it from the app's secret) calls
`ensure_app_login` as the tables' owner once the migrations are done.

The password never travels: libpq computes its SCRAM-SHA-256 verifier here (the same code as
psql's `\\password`, SASLprep included) and only the verifier is sent, in `CREATE ROLE` or
`ALTER ROLE`. Calling again with the same password is harmless (a new salt, the same
password), so every deploy may do it.

The login also gets the session settings the tables' owner has as a role but the database
does not give everyone (migration 0005 falls back to the owner's role where it may not alter
the database), and a search path naming the schemas the migrations used, so that it finds the
tables whatever its name (`"$user"` in the default path means the owner's schema for the
owner only).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from carrier_core.store.database import DatabaseError, unpooled_connection
from carrier_core.store.migrate import _LOCK_KEY

log = logging.getLogger(__name__)

#: The group role of migration 0006.
APP_ROLE = "carrier_app"

#: Postgres keeps role names to 63 bytes, cutting longer ones without an error.
MAX_NAME_BYTES = 63

#: Role settings never copied from the owner: they would make the login act as another role,
#: and its search path is set on purpose.
_NOT_COPIED = frozenset({"role", "session_authorization", "search_path"})


def ensure_app_login(url: str, username: str, password: str) -> bool:
    """Make `username` a login of `carrier_app` whose password is `password`; connect to `url`
    as the owner of Carrier's tables (a login that may create roles). Returns True when the
    login was made, False when it existed and its password was set again.

    Raises `DatabaseError` when the migrations have not made `carrier_app` yet, when the
    owner may not manage roles, or when `username` names a role that is more than a login
    (the owner itself, a superuser, a member of other roles): giving such a role the app's
    password would hand the functions its powers.
    """
    if not username or len(username.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"a login's name has 1 to {MAX_NAME_BYTES} bytes: {username!r}")
    if username == APP_ROLE:
        raise ValueError(f"{APP_ROLE} is the group role; its logins need names of their own")
    if not password:
        raise ValueError("the login needs a password")
    conn = unpooled_connection(url, autocommit=False)
    with conn, conn.transaction():
        # The migrations' lock: two deploys at once cannot both create the login.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        try:
            created = _ensure(conn, username, password)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise DatabaseError(
                f"cannot set up the login {username}: {exc} (the migrations' login needs"
                " CREATEROLE, as an RDS master user has)"
            ) from None
    log.info("app login %s %s", username, "created" if created else "updated")
    return created


def _ensure(conn: psycopg.Connection[Any], username: str, password: str) -> bool:
    owner, database = _one(conn, "SELECT current_user, current_database()")
    if not _one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (APP_ROLE,))[0]:
        raise DatabaseError(f"no role {APP_ROLE}: run the migrations first (0006 makes it)")
    if username == owner:
        raise DatabaseError(f"{username} is the migrations' own login, not an app login")
    existing = conn.execute(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls,"
        " ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        "       WHERE m.member = r.oid AND g.rolname <> %s ORDER BY 1)"
        " FROM pg_roles r WHERE r.rolname = %s",
        (APP_ROLE, username),
    ).fetchone()
    if existing is not None:
        powerful, others = existing
        if powerful or others:
            what = "may create roles or databases" if powerful else f"belongs to {others}"
            raise DatabaseError(f"the role {username} {what}: it cannot be the app's login")
    login = sql.Identifier(username)
    verifier = sql.Literal(
        conn.pgconn.encrypt_password(
            password.encode(), username.encode(), b"scram-sha-256"
        ).decode()
    )
    if existing is None:
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {} IN ROLE {}").format(
                login, verifier, sql.Identifier(APP_ROLE)
            )
        )
    else:
        conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(login, verifier))
        member = _one(conn, "SELECT pg_has_role(%s, %s, 'MEMBER')", (username, APP_ROLE))[0]
        if not member:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APP_ROLE), login))
    _settings(conn, login, sql.Identifier(database))
    return existing is None


def _settings(
    conn: psycopg.Connection[Any], login: sql.Identifier, database: sql.Identifier
) -> None:
    """The owner's search path, and its role settings the database lacks, for the login in
    this database."""
    schemas = _one(conn, "SELECT current_schemas(false)")[0]
    if schemas:
        conn.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path TO {}").format(
                login, database, sql.SQL(", ").join(sql.Identifier(s) for s in schemas)
            )
        )
    names = [
        name
        for (name,) in conn.execute(
            "SELECT split_part(item, '=', 1) FROM pg_db_role_setting s, unnest(s.setconfig) item"
            " WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
            " AND s.setdatabase IN (0, (SELECT oid FROM pg_database"
            "                           WHERE datname = current_database()))"
            " EXCEPT"
            " SELECT split_part(item, '=', 1) FROM pg_db_role_setting s, unnest(s.setconfig) item"
            " WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_database"
            "                                          WHERE datname = current_database())"
            " ORDER BY 1"
        ).fetchall()
        if name not in _NOT_COPIED
    ]
    if not names:
        return
    # Until an extension's library is loaded, its parameters are placeholders that only a
    # superuser may set for a role; Carrier's (hnsw.*) are pgvector's: use it once.
    conn.execute("SELECT '[0]'::vector")
    for name in names:
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} FROM CURRENT").format(
                        login, database, sql.Identifier(*name.split("."))
                    )
                )
        except psycopg.errors.InsufficientPrivilege as exc:
            log.warning("the app login does not get the owner's setting %s: %s", name, exc)


def _one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query.encode(), params).fetchone()
    assert row is not None, query
    return row
