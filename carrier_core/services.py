"""Plugin services: long-lived helpers (a client, a connection, a cache) a plugin declares.

A service is started the first time a step asks for it (`TurnContext.service`), once per
runtime, which is once per process: a Lambda container and `carrier dev` each open one
runtime. Most turns need no service, so nothing is started that no turn asks for. The
runtime stops what it started when it closes, newest first; a stop that fails is logged
and the others still stop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carrier_core.runtime import Runtime

log = logging.getLogger(__name__)


def _nothing_to_stop(instance: Any) -> None:
    return None


@dataclass(frozen=True)
class Service:
    """A service by its name (ElizaOS's `serviceType`): how to start it and stop it."""

    name: str
    #: Makes the service's instance; given the runtime it runs in.
    start: Callable[[Runtime], Any]
    #: Given the instance when the runtime closes.
    stop: Callable[[Any], None] = _nothing_to_stop
    description: str = ""


class ServiceError(LookupError):
    """A service asked for by a name none of the agent's plugins declares."""


class Services:
    """The services started in one runtime, by name."""

    def __init__(self, runtime: Runtime):
        self._runtime = runtime
        self._started: dict[str, tuple[Service, Any]] = {}
        # Held while a service starts, so two threads asking at once start it once.
        self._lock = threading.Lock()

    def get(self, service: Service) -> Any:
        """The service's instance, started now if it was not yet. A start that raises
        starts nothing: the next call tries again."""
        with self._lock:
            if service.name not in self._started:
                self._started[service.name] = (service, service.start(self._runtime))
            return self._started[service.name][1]

    @property
    def started(self) -> list[str]:
        """The names of the services running, in the order they started."""
        with self._lock:
            return list(self._started)

    def stop_all(self) -> None:
        """Stop every started service, newest first."""
        with self._lock:
            started, self._started = self._started, {}
        for name, (service, instance) in reversed(started.items()):
            try:
                service.stop(instance)
            except Exception:
                log.exception("service %s did not stop cleanly", name)
