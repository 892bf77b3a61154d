"""One runtime per Lambda container, on the database `carrier_aws.database` finds.

RDS rotates a managed master password (every 7 days by default): the pool asks for the
URL again for every new connection, and after a failed attempt the secret is read anew,
so a warm container follows the rotation instead of failing once its connections age out.
"""

from __future__ import annotations

import atexit
import os
import threading

from carrier_aws.database import database_url
from carrier_core.config import Settings
from carrier_core.runtime import Runtime

_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The container's runtime, opened on first use and kept while the container lives.

    One database connection, as a Lambda container runs one invocation at a time; the
    emulator, which runs many at once in one process, sets `CARRIER_POOL_SIZE`.
    """
    global _runtime
    with _lock:
        if _runtime is None:
            from carrier_aws.keys import load_model_keys

            load_model_keys()  # model provider keys from Secrets Manager, if configured
            pool_size = int(os.environ.get("CARRIER_POOL_SIZE") or 1)
            settings = Settings(database_url=database_url(), pool_size=pool_size)
            _runtime = Runtime.open(settings, login=database_url)
            # Its plugins' services are stopped when the container's process ends.
            atexit.register(close_runtime)
        return _runtime


def close_runtime() -> None:
    """Close the container's runtime, if open (the emulator does, when it starts and stops)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            try:
                _runtime.close()
            finally:
                _runtime = None
