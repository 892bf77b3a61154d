"""The functions' AWS clients: made with botocore alone, each on its first call.

Not boto3: the functions use none of what it adds to botocore (resources, S3 transfers),
and importing it imports s3transfer, which took about a sixth of a handler's cold start
(`bench/cold_start.py`). Not at import: making a client loads its service's model and
endpoint rules (the first one, the session's endpoint data too), tens of milliseconds a
function's invocations may never need (the API's reads, the WebSocket's `$connect`).

The clients of a process share one botocore session (its loaded data), made on first
use: under `carrier dev` the emulator swaps it out while it runs, as moto does boto3's
default session, so the clients of a run are moto's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.session import Session

_lock = threading.Lock()
_session: Session | None = None


def session() -> Session:
    """The process's botocore session (region and credentials from the environment, as
    boto3's default session has them)."""
    global _session
    with _lock:
        if _session is None:
            import botocore.session

            _session = botocore.session.get_session()
        return _session


@contextmanager
def separate_session() -> Iterator[None]:
    """Within the block, clients made use a session of their own, forgotten after it (the
    emulator's: its clients see moto's handlers and its own, none of another run's)."""
    global _session
    with _lock:
        before, _session = _session, None
    try:
        yield
    finally:
        with _lock:
            _session = before


class AwsClient:
    """A botocore client of `service`, made on its first call and kept; it answers every
    attribute the client has (`client.send_message(...)`, `client.exceptions`).
    `options` are `create_client`'s (`endpoint_url`, `config`, `region_name`)."""

    def __init__(self, service: str, **options: Any):
        self.service = service
        self.options = options
        self._client: BaseClient | None = None
        self._lock = threading.Lock()

    def client(self) -> BaseClient:
        """The client itself, made now if it was not yet (botocore's session is not safe
        to make clients from in several threads at once)."""
        with self._lock:
            if self._client is None:
                made = session()
                with _lock:
                    self._client = made.create_client(self.service, **self.options)
            return self._client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and the like ask the class's protocol
            raise AttributeError(name)
        return getattr(self.client(), name)

    def __repr__(self) -> str:
        state = "made" if self._client is not None else "not made yet"
        return f"AwsClient({self.service!r}, {state})"
