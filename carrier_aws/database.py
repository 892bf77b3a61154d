"""Where a function's database is, found from its environment.

`DATABASE_URL` wins when set. Otherwise the credentials come from the Secrets
Manager secret named by `CARRIER_DB_SECRET_ARN` (an RDS secret: username,
password, host, port, dbname), read through `carrier_aws.secret_values` so warm
invocations reuse it; `CARRIER_DB_HOST` (an RDS Proxy endpoint) and
`CARRIER_DB_NAME` override the secret's host and database. The URL is never logged.
In a deployed stack that secret is the app's login, not the owner's (see
`carrier_aws.migrations`).

RDS rotates a managed master password (every 7 days by default): the pool asks for the
URL again for every new connection, and after a failed attempt the secret is read anew,
so a warm container follows the rotation instead of failing once its connections age out.

The connection's TLS is verified. `sslmode=require` would encrypt but accept any certificate,
so whoever sits on the network path could pose as the database and be handed the password.
When the URL is built from the secret, it says `sslmode=verify-full` (the certificate must
chain to a trusted CA and name the host connected to) and `sslrootcert`, a file with the CAs
shipped in this package (`CA_FILES`, installed with it, so in the Lambda layer):
`rds-ca-bundle.pem`, AWS's bundle of the RDS CAs that sign DB instances' certificates
(https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem, kept byte for byte), and
`amazon-root-ca.pem`, Amazon Trust Services' roots 1 to 4 (https://www.amazontrust.com/repository/,
as in Mozilla's list), which RDS Proxy's certificates (from ACM) chain to. libpq reads one CA
file, so the two are written into one temporary file once per process. `CARRIER_DB_SSLMODE`
and `CARRIER_DB_SSLROOTCERT` (a PEM file) override both. Under a mode other than verify-ca or
verify-full no CA file is given unless `CARRIER_DB_SSLROOTCERT` names one: libpq checks the
chain whenever it has one, even under `require`. To refresh a bundle (a new AWS Region brings
new RDS CAs), download it from its URL over the same file and run tests/test_aws_runtime.py,
which checks what the files hold.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
from importlib import resources
from pathlib import Path

from psycopg.conninfo import make_conninfo

from carrier_aws.secret_values import SecretValueError, read_json_secret

#: The functions' login: in a deployed stack, the app's secret (a member of `carrier_app`,
#: which may read and write Carrier's rows and nothing else).
SECRET_VARIABLE = "CARRIER_DB_SECRET_ARN"
#: The tables' owner's login, which runs the migrations: given to the migrate function only.
OWNER_SECRET_VARIABLE = "CARRIER_DB_OWNER_SECRET_ARN"


#: The CAs trusted by default, files of this package: the RDS CAs (DB instances) and Amazon
#: Trust Services' roots (RDS Proxy).
CA_FILES = ("rds-ca-bundle.pem", "amazon-root-ca.pem")
_ca_lock = threading.Lock()
_ca_file: Path | None = None


class ConfigurationError(RuntimeError):
    """The function's environment does not say where the database is."""


def bundled_ca_file() -> str:
    """A file holding the certificates of `CA_FILES`, written once per process (again if it
    was removed) under a name of its own in the temporary folder, and removed at exit."""
    global _ca_file
    with _ca_lock:
        if _ca_file is None or not _ca_file.exists():
            package = resources.files("carrier_aws")
            certificates = b"".join((package / name).read_bytes() for name in CA_FILES)
            handle, name = tempfile.mkstemp(prefix="carrier-db-ca-", suffix=".pem")
            with os.fdopen(handle, "wb") as file:
                file.write(certificates)
            _ca_file = Path(name)
            atexit.register(_ca_file.unlink, missing_ok=True)
        return str(_ca_file)


def _tls() -> tuple[str, str | None]:
    """`sslmode` and `sslrootcert` (None: not in the URL) of a URL built from the secret:
    verify-full against `CA_FILES`, unless CARRIER_DB_SSLMODE or CARRIER_DB_SSLROOTCERT says
    otherwise."""
    sslmode = os.environ.get("CARRIER_DB_SSLMODE") or "verify-full"
    rootcert = os.environ.get("CARRIER_DB_SSLROOTCERT") or None
    if rootcert is None and sslmode in ("verify-ca", "verify-full"):
        rootcert = bundled_ca_file()
    return sslmode, rootcert


def database_url(refresh: bool = False, *, secret_variable: str = SECRET_VARIABLE) -> str:
    """The database's URL; `refresh` reads the secret anew rather than from the cache.
    `secret_variable` names the variable holding the secret's ARN: the migrate function
    alone also has the tables' owner's (`OWNER_SECRET_VARIABLE`)."""
    explicit = os.environ.get("DATABASE_URL")
    if explicit:
        return explicit
    secret_arn = os.environ.get(secret_variable)
    if not secret_arn:
        raise ConfigurationError(f"set DATABASE_URL or {secret_variable} for the database")
    try:
        secret = read_json_secret(secret_arn, refresh=refresh)
    except SecretValueError as exc:
        raise ConfigurationError(f"the database secret: {exc}") from None
    if not isinstance(secret, dict) or not {"username", "password"} <= secret.keys():
        raise ConfigurationError(
            "the database secret must be JSON with at least username and password"
        )
    host = os.environ.get("CARRIER_DB_HOST") or secret.get("host")
    if not host:
        raise ConfigurationError("no database host: set CARRIER_DB_HOST or put host in the secret")
    sslmode, sslrootcert = _tls()
    return make_conninfo(
        host=host,
        port=str(secret.get("port") or 5432),
        dbname=os.environ.get("CARRIER_DB_NAME") or secret.get("dbname") or "carrier",
        user=secret["username"],
        password=secret["password"],
        sslmode=sslmode,
        sslrootcert=sslrootcert,
    )
