"""Logs, metrics and traces of the functions, each tied to the turn it serves.

Every function logs and traces through one Powertools `Logger` and `Tracer`, wrapped
around its handler by `function_handler`, and sends metrics with `send_metrics`. In Lambda
the loggers of `carrier_core` and `carrier_aws` write through the same JSON handler, so a
library's line carries the Lambda context and the turn's ids too (under `carrier dev` they
stay on the console's handler).

The turn id and message id follow a turn across functions: the state machine passes them
to every step, and a step calls `correlated(...)` so they are on each line it logs, on
its trace (X-Ray annotations, which can be searched) and on the turn's metrics (EMF
metadata: an id as a dimension would make a metric per turn). Metrics are sent as they
happen, one EMF document each time, so a function that handles several turns in one
invocation (a batch, the finish step that also fetches the next turn) never mixes their
ids, and concurrent invocations under `carrier dev` never mix their metrics (Powertools'
`Metrics` keeps one set per process).

Keys are kept per thread (Powertools' thread-safe keys, a context variable): Lambda runs
one invocation per container, but `carrier dev` runs every function in one process at
once, where keys set by one invocation would show on another's lines.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import botocore
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

if TYPE_CHECKING:
    from carrier_core.turn.ingest import Ingested

logger = Logger()
tracer = Tracer(auto_patch=False)
_patch_lock = threading.Lock()
_aws_calls_traced = False


def _trace_aws_calls(session: Any) -> None:
    """Trace botocore's calls (SQS, Step Functions, Secrets Manager...): patched when the
    process makes its first botocore session, before any client (Powertools Parameters'
    too), not at import. Patching imports botocore's client module, about a tenth of a
    cold start, which an invocation that calls no AWS API never needs. botocore only:
    patching every library X-Ray supports would import them all."""
    global _aws_calls_traced
    with _patch_lock:
        if not _aws_calls_traced:
            tracer.patch(["botocore"])
            _aws_calls_traced = True


botocore.register_initializer(_trace_aws_calls)

Handler = TypeVar("Handler", bound=Callable[..., Any])

_cold_start = True


def _in_lambda() -> bool:
    return bool(os.environ.get("LAMBDA_TASK_ROOT"))


def _route_library_logs() -> None:
    """In Lambda, the libraries' lines go out as the function's own: JSON, with its keys."""
    handler = logger.registered_handler
    for name in ("carrier_core", "carrier_aws"):
        library = logging.getLogger(name)
        library.handlers = [handler]
        library.setLevel(logger.log_level)
        library.propagate = False


if _in_lambda():
    _route_library_logs()


def function_handler(handler: Handler) -> Handler:
    """A Lambda handler with its logs and trace: the Lambda context on every log line,
    the invocation traced (its response left out: it may hold a user's words)."""
    traced = tracer.capture_lambda_handler(handler, capture_response=False)

    @functools.wraps(handler)
    def run(event: Any, context: Any) -> Any:
        global _cold_start
        cold_start, _cold_start = _cold_start, False
        logger.thread_safe_clear_keys()
        logger.thread_safe_append_keys(
            cold_start=cold_start,
            function_name=context.function_name,
            function_memory_size=context.memory_limit_in_mb,
            function_arn=context.invoked_function_arn,
            function_request_id=context.aws_request_id,
        )
        try:
            return traced(event, context)
        finally:
            logger.thread_safe_clear_keys()

    return run  # type: ignore[return-value]


def turn_ids(turn_id: Any = None, message_id: Any = None) -> dict[str, str]:
    """The ids that name a turn, as log keys; absent ones are left out."""
    ids = {"turn_id": turn_id, "message_id": message_id}
    return {key: str(value) for key, value in ids.items() if value is not None}


@contextmanager
def correlated(turn_id: Any = None, message_id: Any = None) -> Iterator[dict[str, str]]:
    """Within the block, the turn's ids are on every log line of this thread and on the
    trace; they are taken off after it, for a batch's next record."""
    ids = turn_ids(turn_id, message_id)
    logger.thread_safe_append_keys(**ids)
    for key, value in ids.items():
        tracer.put_annotation(key=key, value=value)
    try:
        yield ids
    finally:
        logger.thread_safe_remove_keys(list(ids))


#: Where the metrics go when the environment does not say (the template sets it).
NAMESPACE = "Carrier"

Metric = tuple[MetricUnit, float]


def send_metrics(values: Mapping[str, Metric], ids: Mapping[str, str] | None = None) -> None:
    """Send metrics now, as one EMF document; `ids` (a turn's) go in as metadata."""
    if not values:
        return
    document = EphemeralMetrics(
        namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE
    )
    for name, (unit, value) in values.items():
        document.add_metric(name=name, unit=unit, value=value)
    for key, id_ in (ids or {}).items():
        document.add_metadata(key=key, value=id_)
    document.flush_metrics()


def accepted(ingested: Ingested) -> None:
    """Say that a message was taken in (its turn's first log line and metric)."""
    with correlated(ingested.turn_id, ingested.message_id) as ids:
        if ingested.created:
            logger.info("message accepted", extra={"agent_id": str(ingested.agent_id)})
            send_metrics({"MessagesAccepted": (MetricUnit.Count, 1)}, ids)
        else:
            logger.info("message delivered again", extra={"status": ingested.status})
