"""The serverless bundle in one process, on AWS emulated by moto.

`Emulator` reads `template.yaml`, starts moto (Step Functions really executing,
Lambda without Docker), creates the template's queues (dead-letter queues first)
and state machines (the ASL file with its `DefinitionSubstitutions` resolved),
and imports every function's handler from its own file. Then:

- Lambda invokes (the state machine's `arn:aws:states:::lambda:invoke` tasks) reach
  the handlers through a patch of moto's `LambdaSimpleBackend.invoke`, a private
  API: moto is pinned exactly, and a test fails if the patch stops being called.
  A handler that raises is a Lambda function error (`x-amz-function-error: Unhandled`,
  `{"errorType", "errorMessage"}`), which the state machine's Retry and Catch see.
- SQS event sources are polled here, not by moto's trigger (which ignores batch
  sizes and `batchItemFailures`): up to `BatchSize` records per invocation, deleted
  unless reported failed; when the handler raises, the whole batch stays for
  redelivery after its visibility timeout, and a queue's redrive policy applies.
- The HTTP API is the api function's FastAPI `app`, served by uvicorn or a TestClient.
- Custom resources served by a template function (`ServiceToken: !GetAtt F.Arn`) are
  created as CloudFormation would on a deploy, before anything else runs: the function
  gets a Create request, and its answer, PUT to the request's URL (served here), must be
  SUCCESS. The stack's `DatabaseMigrations` migrates the database this way.
- Schedules (`Type: Schedule`, `rate(...)`) call their function with EventBridge's
  `Scheduled Event`, every `schedule_interval_s` (default: the template's rate), and once
  at start with `detail.every_lease` set: the emulated account is new, so no room runner
  from before it can be alive, and the turn sweep takes every such room over at once.
- The WebSocket API is served at `/v1/ws` of that same app (`carrier_aws.local.websocket`):
  its routes call their function with API Gateway's events, and the functions' pushes
  (`post_to_connection`) reach the local sockets through a patch of moto's
  `ApiGatewayManagementApiBackend.post_to_connection`, a private API as well (a test fails
  if it stops being called); a connection not open here is a `GoneException`.

moto really sleeps through Retry intervals: `retry_interval_scale` shortens them
(tests use 0.01); the default 1 keeps the template's timing.

What the functions did is counted as Lambda would bill and AWS would meter it (for
`bench/cloud_sim.py`; the counting never changes what runs):

- `invocations`, `billed_ms`, `peak_concurrency`, by function: every handler call (the
  state machine's tasks, the SQS event sources, the schedules, the WebSocket routes) and
  every HTTP request to `app` (API Gateway invokes the HTTP API function once per request).
  Billed duration is each invocation's wall time rounded up to the millisecond, as Lambda
  bills it (warm: no init phase; in one process, so time waiting for the CPU counts too).
- `api_calls`, by (function, service, operation): the AWS API calls a handler makes
  (`StartExecution`, `SendMessage`, `PostToConnection`...), from a botocore `before-call`
  hook registered on every botocore session (the hook does nothing outside a handler). A call
  is the handler's when its context says so: `call` and the HTTP meter set a context
  variable, which Starlette's worker threads inherit and other threads do not. So moto's
  own clients (the state machine's Lambda and SQS integrations, which are state transitions,
  not API calls), the emulator's pollers and threads a handler starts itself are not counted.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, cast
from unittest import mock

from carrier_aws import clients
from carrier_aws.local.template import (
    ACCOUNT_ID,
    REGION,
    STACK,
    FunctionSpec,
    QueueSpec,
    SqsSource,
    StateMachineSpec,
    Template,
    TemplateError,
    Unresolved,
    function_arn,
    read_template,
)
from carrier_aws.local.websocket import Gone, WebSocketGateway

log = logging.getLogger(__name__)

#: Where the repository's template is when none is named (an editable install).
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

#: The environment of the emulated account: never real credentials.
AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}

#: SQS queue properties passed on to the emulated queue as attributes.
_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "DeduplicationScope",
    "FifoThroughputLimit",
)

_EMPTY_METRICS = "No application metrics to publish"

#: Database connections of the handlers' shared runtime: in Lambda each concurrent
#: invocation is a container of its own with one connection.
HANDLER_CONNECTIONS = 8


#: The emulator and function whose handler runs in this context (see the module's doc).
_RUNNING: ContextVar[tuple[Emulator, str] | None] = ContextVar(
    "carrier_emulated_function", default=None
)
#: The unique id of `_count_api_call` on sessions it is registered on by hand.
_HOOK_ID = "carrier-emulator-api-calls"


def _count_api_call(model: Any = None, context: Any = None, **kwargs: Any) -> None:
    """botocore's `before-call`: count the call for the handler running in this context.

    Sessions made while an emulator runs get this hook from botocore's built-in handlers,
    the default session made before is given it by hand: one client may thus hear it
    twice, so the call's own `context` dict marks it counted."""
    running = _RUNNING.get()
    if running is None or model is None:
        return
    if isinstance(context, dict):
        if context.get(_HOOK_ID):
            return
        context[_HOOK_ID] = True
    emulator, function = running
    emulator._count_api_call(function, model.service_model.service_name, model.name)


def _forget_filter(message: str) -> None:
    filters = cast(list[Any], warnings.filters)
    filters[:] = [f for f in filters if getattr(f[1], "pattern", None) != message]


def default_template() -> Path:
    """`template.yaml` in the working directory, else the one beside this package."""
    here = Path("template.yaml")
    return here if here.is_file() else PACKAGE_ROOT / "template.yaml"


@dataclass
class LambdaContext:
    """What a handler's `context` offers (Powertools reads these names)."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_s: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    started: float = field(default_factory=time.monotonic)

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


@dataclass
class Function:
    spec: FunctionSpec
    module: ModuleType

    @property
    def name(self) -> str:
        return self.spec.logical_id

    def call(self, event: Any) -> Any:
        context = LambdaContext(
            function_name=self.name,
            invoked_function_arn=self.spec.arn,
            memory_limit_in_mb=self.spec.memory_mb,
            timeout_s=self.spec.timeout_s,
        )
        handler = getattr(self.module, self.spec.function_name)
        return handler(event, context)


class _ScaledTime:
    """Stands in for `time` in moto's retrier, so Retry waits are `scale` times as long."""

    def __init__(self, scale: float):
        self.scale = scale

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds * self.scale)


def _import_handler(spec: FunctionSpec) -> ModuleType:
    """Import a function's handler file under a name of its own (they are all `app.py`),
    with its folder first on the path, as Lambda has it."""
    path = spec.module_path
    if not path.is_file():
        raise TemplateError(f"{spec.logical_id}: no handler file {path}")
    name = f"_carrier_fn_{spec.logical_id}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise TemplateError(f"{spec.logical_id}: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    sys.path.insert(0, str(spec.code_dir))
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(spec.code_dir))
    if not callable(getattr(module, spec.function_name, None)):
        raise TemplateError(f"{spec.logical_id}: {path} has no function {spec.function_name}")
    return module


def _sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """A received message as a record of Lambda's SQS event."""
    attributes = {k: str(v) for k, v in (message.get("Attributes") or {}).items()}
    message_attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value.get("DataType"),
        }
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


class _Poller:
    """One SQS event source: a thread that receives batches, and workers that run them.

    Up to `concurrency` batches are in flight at once; a FIFO queue hands out one
    batch per message group at a time, so a room's messages stay in order.
    """

    def __init__(
        self,
        emulator: Emulator,
        function: Function,
        source: SqsSource,
        queue_url: str,
        queue_arn: str,
        *,
        concurrency: int,
        idle_s: float,
        visibility_timeout: int | None,
    ):
        self.emulator = emulator
        self.function = function
        self.source = source
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.idle_s = idle_s
        self.visibility_timeout = visibility_timeout
        self.stop_event = threading.Event()
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._busy = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"{function.name}-worker", daemon=True)
            for _ in range(concurrency)
        ]
        self._receiver = threading.Thread(
            target=self._receive, name=f"{function.name}-poller", daemon=True
        )
        self._batches: list[list[dict[str, Any]]] = []
        self._ready = threading.Condition(self._lock)
        self.concurrency = concurrency

    @property
    def busy(self) -> bool:
        """A receive or a batch is under way."""
        with self._lock:
            return self._busy > 0

    def start(self) -> None:
        for thread in (*self._threads, self._receiver):
            thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop receiving, let batches under way end; False if some were still running."""
        self.stop_event.set()
        with self._ready:
            self._ready.notify_all()
        deadline = time.monotonic() + timeout
        for thread in (self._receiver, *self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in (self._receiver, *self._threads))

    def _receive_batch(self) -> list[dict[str, Any]]:
        sqs = self.emulator.sqs
        batch: list[dict[str, Any]] = []
        while len(batch) < self.source.batch_size:
            wanted = min(10, self.source.batch_size - len(batch))
            extra = (
                {"VisibilityTimeout": self.visibility_timeout}
                if self.visibility_timeout is not None
                else {}
            )
            received = sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=wanted,
                # Never long polling: moto's long poll spins while a FIFO group is in flight.
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                **extra,
            ).get("Messages", [])
            batch.extend(received)
            if len(received) < wanted:
                break
        return batch

    def _receive(self) -> None:
        while not self.stop_event.is_set():
            if not self._slots.acquire(timeout=self.idle_s):
                continue
            with self._lock:
                self._busy += 1
            try:
                batch = self._receive_batch()
            except Exception:
                if not self.stop_event.is_set():
                    log.exception("polling %s failed", self.queue_url)
                batch = []
            if batch:
                with self._ready:
                    self._batches.append(batch)
                    self._ready.notify()
                continue
            with self._lock:
                self._busy -= 1
            self._slots.release()
            self.stop_event.wait(self.idle_s)

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._batches and not self.stop_event.is_set():
                    self._ready.wait()
                if not self._batches:
                    return
                batch = self._batches.pop(0)
            try:
                self._deliver(batch)
            finally:
                with self._lock:
                    self._busy -= 1
                self._slots.release()

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        event = {"Records": [_sqs_record(m, self.queue_arn) for m in batch]}
        try:
            result = self.emulator.call(self.function, event)
        except Exception:
            # As Lambda does: the batch stays on the queue, to come back after its
            # visibility timeout (and go to the dead-letter queue after maxReceiveCount).
            log.exception(
                "%s failed on a batch of %d; it will be redelivered", self.function.name, len(batch)
            )
            return
        ids = {m["MessageId"] for m in batch}
        failed: set[str] = set()
        if self.source.report_batch_item_failures and isinstance(result, dict):
            for failure in result.get("batchItemFailures") or []:
                item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
                if not isinstance(item, str) or item not in ids:
                    # Lambda treats a failure it cannot match as the whole batch failing.
                    log.error(
                        "%s reported an unknown failed item %r; keeping the batch",
                        self.function.name,
                        item,
                    )
                    return
                failed.add(item)
        done = [m for m in batch if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            self.emulator.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(done[start : start + 10])
                ],
            )


class ResponseReceiver:
    """The presigned URL a custom resource's function answers CloudFormation on: a local
    HTTP server that takes one PUT."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, HTTPServer

        answers: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answers.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.answers = answers
        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/cloudformation-response"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def scheduled_event(detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """EventBridge's event for a schedule's rule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [],
        "detail": dict(detail or {}),
    }


class _Scheduler:
    """The template's schedules: a thread that calls each function when its rule is due."""

    def __init__(self, emulator: Emulator, interval_s: float | None):
        self.emulator = emulator
        self.rules = [
            (function, interval_s or schedule.rate_s)
            for function in emulator.functions.values()
            for schedule in function.spec.schedules
            if schedule.enabled
        ]
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schedules", daemon=True)

    def start(self) -> None:
        if self.rules:
            self._thread.start()

    def stop(self, timeout: float) -> None:
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _fire(self, function: Function, detail: Mapping[str, Any] | None = None) -> None:
        try:
            self.emulator.call(function, scheduled_event(detail))
        except Exception:
            log.exception("%s failed on its schedule", function.name)

    def _run(self) -> None:
        due = {}
        for function, interval in self.rules:
            self._fire(function, {"every_lease": True})
            due[function.name] = time.monotonic() + interval
        while not self.stop_event.is_set():
            now = time.monotonic()
            for function, interval in self.rules:
                if now >= due[function.name] and not self.stop_event.is_set():
                    self._fire(function)
                    due[function.name] = time.monotonic() + interval
            self.stop_event.wait(min(due.values()) - time.monotonic() if due else 1.0)


class Emulator:
    """The template's functions, queues and state machines on moto, in this process.

    Use as a context manager. `database_url` is what the handlers get as
    `DATABASE_URL`; `environment` adds or overrides other variables for them;
    `parameters` overrides template parameters' defaults (e.g. ModelProvider).
    Their environment is set in this process while the emulator runs.
    """

    def __init__(
        self,
        database_url: str,
        *,
        template: Path | None = None,
        environment: Mapping[str, str] | None = None,
        retry_interval_scale: float = 1.0,
        visibility_timeout: int | None = None,
        concurrency: int = 4,
        idle_poll_s: float = 0.05,
        stop_timeout_s: float = 15.0,
        poll: bool = True,
        parameters: Mapping[str, str] | None = None,
        schedule_interval_s: float | None = None,
    ):
        self.template: Template = read_template(template or default_template())
        self.template.overrides = dict(parameters or {})
        self.template.parameters  # noqa: B018 - refuses unknown parameter names now
        self.database_url = database_url
        self.extra_environment = dict(environment or {})
        self.retry_interval_scale = retry_interval_scale
        self.visibility_timeout = visibility_timeout
        self.concurrency = concurrency
        self.idle_poll_s = idle_poll_s
        self.stop_timeout_s = stop_timeout_s
        #: False: no SQS event source is polled and no schedule fires (to call the queue and
        #: scheduled functions by hand).
        self.poll = poll
        #: How often each schedule fires; None: at the template's rate.
        self.schedule_interval_s = schedule_interval_s
        self._scheduler: _Scheduler | None = None
        #: Handler invocations by function logical id, by any route (HTTP requests to `app`
        #: are invocations of the HTTP API function).
        self.invocations: Counter[str] = Counter()
        #: Those that came through the patched moto Lambda invoke (the state machine's tasks).
        self.hooked_invocations: Counter[str] = Counter()
        #: Billed duration by function: each invocation's wall time, rounded up to the ms.
        self.billed_ms: Counter[str] = Counter()
        #: The most invocations of each function under way at once (Lambda's concurrency:
        #: as many containers, each with its own database connection).
        self.peak_concurrency: Counter[str] = Counter()
        #: AWS API calls made by handlers, by (function, service, operation).
        self.api_calls: Counter[tuple[str, str, str]] = Counter()
        self._in_flight: Counter[str] = Counter()
        self.functions: dict[str, Function] = {}
        self.queue_urls: dict[str, str] = {}
        self.queue_arns: dict[str, str] = {}
        self.state_machine_arns: dict[str, str] = {}
        #: What the handlers find in the environment (set in this process while running).
        self.environment: dict[str, str] = {}
        #: The template's WebSocket API, served by `app` (None: the template has none).
        self.websocket: WebSocketGateway | None = None
        #: Pushes that came through the patched Management API, by outcome (sent, gone).
        self.hooked_pushes: Counter[str] = Counter()
        self.sqs: Any = None
        self.sfn: Any = None
        self._pollers: list[_Poller] = []
        self._stack: ExitStack | None = None
        self._count_lock = threading.Lock()
        self._saved_env: dict[str, str | None] = {}

    # -- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Emulator:
        if self._stack is not None:
            raise RuntimeError("the emulator is already running")
        stack = ExitStack()
        self._stack = stack
        try:
            self._start(stack)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, stack: ExitStack) -> None:
        import boto3
        from moto import mock_aws
        from moto.apigatewaymanagementapi.models import ApiGatewayManagementApiBackend
        from moto.awslambda_simple.models import LambdaSimpleBackend
        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

        self._set_env(AWS_ENVIRONMENT)
        stack.callback(self._restore_env)
        # All functions share Powertools' metric set in one process: one function's flush
        # may leave another's empty. Not a problem of the functions, so not worth a warning.
        warnings.filterwarnings("ignore", message=_EMPTY_METRICS, category=UserWarning)
        stack.callback(_forget_filter, _EMPTY_METRICS)
        aws = mock_aws(
            config={
                "stepfunctions": {"execute_state_machine": True},
                "lambda": {"use_docker": False},
            }
        )
        aws.start()
        stack.callback(aws.stop)
        stack.enter_context(clients.separate_session())
        emulator = self

        def invoke(
            backend: Any,
            function_name: str,
            qualifier: str | None,
            body: Any,
            headers: Any,
            response_headers: dict[str, str],
        ) -> bytes:
            return emulator._invoke(function_name, body, response_headers)

        stack.enter_context(mock.patch.object(LambdaSimpleBackend, "invoke", invoke))

        def post_to_connection(backend: Any, data: bytes, connection_id: str) -> None:
            emulator._post_to_connection(connection_id, data)

        stack.enter_context(
            mock.patch.object(
                ApiGatewayManagementApiBackend, "post_to_connection", post_to_connection
            )
        )
        apis = list(self.template.websocket_apis.values())
        if len(apis) > 1:
            raise TemplateError("the emulator serves one WebSocket API; the template has more")
        self.websocket = WebSocketGateway(self, apis[0]) if apis else None
        if self.retry_interval_scale != 1.0:
            scaled = _ScaledTime(self.retry_interval_scale)
            stack.enter_context(mock.patch.object(retrier_decl, "time", scaled))

        self._hook_api_calls(stack)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        for queue in self.template.queues_in_creation_order():
            self._create_queue(queue)
        for machine in self.template.state_machines.values():
            self._create_state_machine(machine)
        self.environment = self._handler_environment()
        self._set_env(self.environment)
        stack.callback(self._close_handler_runtime)
        self._close_handler_runtime()  # one opened before, perhaps on another database
        stack.callback(self._forget_modules)
        for spec in self.template.functions.values():
            self.functions[spec.logical_id] = Function(spec, _import_handler(spec))
        self._create_custom_resources()
        stack.callback(self._wait_for_executions)
        for function in self.functions.values():
            for source in function.spec.sqs_sources:
                if source.enabled and self.poll:
                    self._pollers.append(
                        _Poller(
                            self,
                            function,
                            source,
                            self.queue_urls[source.queue],
                            self.queue_arns[source.queue],
                            concurrency=self.concurrency,
                            idle_s=self.idle_poll_s,
                            visibility_timeout=self.visibility_timeout,
                        )
                    )
        stack.callback(self._stop_pollers)
        for poller in self._pollers:
            poller.start()
        if self.poll:
            self._scheduler = _Scheduler(self, self.schedule_interval_s)
            stack.callback(self._scheduler.stop, self.stop_timeout_s)
            self._scheduler.start()

    def stop(self) -> None:
        """Stop polling, let running turns end (up to `stop_timeout_s`), stop moto."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    @staticmethod
    def _hook_api_calls(stack: ExitStack) -> None:
        """Register `_count_api_call` on boto3's sessions, before the handlers' modules
        make their clients: on sessions made from now on (botocore's built-in handlers, as
        moto registers its own), and on the default session if one was made already."""
        import boto3
        from botocore import handlers

        builtin = ("before-call", _count_api_call)
        handlers.BUILTIN_HANDLERS.append(builtin)
        stack.callback(handlers.BUILTIN_HANDLERS.remove, builtin)
        session = boto3.DEFAULT_SESSION
        if session is not None:
            session.events.register("before-call", _count_api_call, unique_id=_HOOK_ID)
            stack.callback(session.events.unregister, "before-call", unique_id=_HOOK_ID)

    def _stop_pollers(self) -> None:
        deadline = time.monotonic() + self.stop_timeout_s
        for poller in self._pollers:
            poller.stop_event.set()
        for poller in self._pollers:
            if not poller.stop(max(0.0, deadline - time.monotonic())):
                log.warning("%s still busy when the emulator stopped", poller.function.name)
        self._pollers = []

    def _wait_for_executions(self) -> None:
        deadline = time.monotonic() + self.stop_timeout_s
        while self.running_executions() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _forget_modules(self) -> None:
        for function in self.functions.values():
            sys.modules.pop(function.module.__name__, None)
        self.functions = {}

    @staticmethod
    def _close_handler_runtime() -> None:
        """The handlers' runtime is kept per process (per container in Lambda)."""
        from carrier_aws.runtime import close_runtime

        close_runtime()

    def _set_env(self, values: Mapping[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}

    # -- resources -----------------------------------------------------------------------

    def _create_custom_resources(self) -> None:
        """Each custom resource's Create request, answered SUCCESS or the start fails."""
        for resource in self.template.custom_resources.values():
            properties = {
                name: self.template.resolve(value, self._refs)
                for name, value in resource.properties.items()
            }
            receiver = ResponseReceiver()
            try:
                self.call(
                    self.functions[resource.function],
                    {
                        "RequestType": "Create",
                        "ResponseURL": receiver.url,
                        "StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK}/0",
                        "RequestId": str(uuid.uuid4()),
                        "ResourceType": resource.resource_type,
                        "LogicalResourceId": resource.logical_id,
                        "ResourceProperties": properties,
                    },
                )
            finally:
                receiver.close()
            [answer] = receiver.answers or [{"Reason": "the function sent no answer"}]
            if answer.get("Status") != "SUCCESS":
                raise TemplateError(f"{resource.logical_id} failed: {answer.get('Reason')}")

    def _resource_type(self, logical_id: str) -> str:
        resource = (self.template.body.get("Resources") or {}).get(logical_id) or {}
        return str(resource.get("Type", ""))

    def _refs(self, logical_id: str, attribute: str | None) -> Any:
        """`!Ref` and `!GetAtt` values of the emulated resources."""
        if logical_id in self.template.functions:
            values = {None: logical_id, "Arn": function_arn(logical_id)}
        elif logical_id in self.template.queues and logical_id in self.queue_urls:
            url, arn = self.queue_urls[logical_id], self.queue_arns[logical_id]
            name = url.rsplit("/", 1)[-1]
            values = {None: url, "Arn": arn, "QueueUrl": url, "QueueName": name}
        elif logical_id in self.state_machine_arns:
            arn = self.state_machine_arns[logical_id]
            values = {None: arn, "Arn": arn, "Name": arn.rsplit(":", 1)[-1]}
        elif logical_id in self.template.websocket_apis:
            api_id = self.template.websocket_apis[logical_id].api_id
            endpoint = f"wss://{api_id}.execute-api.{REGION}.amazonaws.com"
            values = {None: api_id, "ApiId": api_id, "ApiEndpoint": endpoint}
        elif stages := [
            api for api in self.template.websocket_apis.values() if api.stage_id == logical_id
        ]:
            values = {None: stages[0].stage_name}
        elif self._resource_type(logical_id) == "AWS::Serverless::LayerVersion":
            # The functions run this tree's code, which is what the layer holds: version 1.
            values = {None: f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:layer:{logical_id}:1"}
        else:
            raise Unresolved(f"{logical_id} is not emulated")
        if attribute not in values:
            raise Unresolved(f"{logical_id} has no attribute {attribute} here")
        return values[attribute]

    def _name(self, value: Any, default: str) -> str:
        """A resource's name as the template gives it (`!Sub ${AWS::StackName}-x` works)."""
        if value is None:
            return default
        try:
            return str(self.template.resolve(value, self._refs))
        except Unresolved:
            return default

    def _create_queue(self, queue: QueueSpec) -> None:
        attributes = {"VisibilityTimeout": str(queue.visibility_timeout)}
        if queue.fifo:
            attributes["FifoQueue"] = "true"
            attributes["ContentBasedDeduplication"] = str(queue.content_based_deduplication).lower()
        for name in _QUEUE_ATTRIBUTES:
            if name in queue.properties:
                try:
                    value = self.template.resolve(queue.properties[name], self._refs)
                except Unresolved:
                    continue
                attributes[name] = str(value)
        if queue.dead_letter_queue:
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": self.queue_arns[queue.dead_letter_queue],
                    "maxReceiveCount": queue.max_receive_count,
                }
            )
        name = self._name(queue.name_value, queue.default_name)
        url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        self.queue_urls[queue.logical_id] = url
        self.queue_arns[queue.logical_id] = arn["Attributes"]["QueueArn"]

    def definition(self, machine: StateMachineSpec) -> str:
        """The state machine's ASL with its substitutions resolved, as SAM deploys it."""
        text = machine.definition_path.read_text()
        for name, value in machine.substitutions.items():
            try:
                resolved = self.template.resolve(value, self._refs)
            except Unresolved as exc:
                raise TemplateError(f"{machine.logical_id}: substitution {name}: {exc}") from None
            text = text.replace("${" + name + "}", str(resolved))
        return text

    def _create_state_machine(self, machine: StateMachineSpec) -> None:
        created = self.sfn.create_state_machine(
            name=self._name(machine.name_value, machine.logical_id),
            definition=self.definition(machine),
            roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/carrier-local",
            type="STANDARD",
        )
        self.state_machine_arns[machine.logical_id] = created["stateMachineArn"]

    def _handler_environment(self) -> dict[str, str]:
        """The functions' environment variables, resolved; one process holds them all,
        so a name given two different values in the template is refused."""
        env: dict[str, str] = {}
        for function in self.template.functions.values():
            for name, value in function.environment.items():
                try:
                    resolved = self.template.resolve(value, self._refs)
                except Unresolved as exc:
                    log.debug("%s: %s not set: %s", function.logical_id, name, exc)
                    continue
                if resolved is None:
                    continue
                if name in env and env[name] != str(resolved):
                    raise TemplateError(
                        f"environment variable {name} differs between functions; "
                        "the emulator runs them all in one process"
                    )
                env[name] = str(resolved)
        env.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Carrier")
        env.setdefault("POWERTOOLS_SERVICE_NAME", "carrier")
        # One process runs what would be many containers at once, each with its connection.
        env.setdefault("CARRIER_POOL_SIZE", str(HANDLER_CONNECTIONS))
        if self.template.websocket_apis:
            from carrier_aws.push import CLIENT_URL_VARIABLE

            # The WebSocket API is served by `app` itself, at /v1/ws: the web console
            # connects beside its page, not to the template's execute-api URL.
            env[CLIENT_URL_VARIABLE] = ""
        env.update(self.extra_environment)
        env["DATABASE_URL"] = self.database_url
        return env

    # -- calling the handlers --------------------------------------------------------------

    def function(self, name: str) -> Function:
        """A function by logical id, function name or ARN (with or without a qualifier)."""
        if name.startswith("arn:"):
            name = name.split(":")[6]
        name = name.split(":")[0]
        try:
            return self.functions[name]
        except KeyError:
            from moto.awslambda.exceptions import UnknownFunctionException

            raise UnknownFunctionException(function_arn(name)) from None

    def call(self, function: Function, event: Any) -> Any:
        """Run a handler, counting the call, its billed duration and its AWS API calls."""
        with self._invocation(function.name):
            return function.call(event)

    @contextmanager
    def _invocation(self, name: str) -> Iterator[None]:
        """One invocation of the function `name`: counted, timed, its API calls its own."""
        with self._count_lock:
            self.invocations[name] += 1
            self._in_flight[name] += 1
            if self._in_flight[name] > self.peak_concurrency[name]:
                self.peak_concurrency[name] = self._in_flight[name]
        token = _RUNNING.set((self, name))
        started = time.perf_counter()
        try:
            yield
        finally:
            billed = max(1, math.ceil((time.perf_counter() - started) * 1000))
            _RUNNING.reset(token)
            with self._count_lock:
                self._in_flight[name] -= 1
                self.billed_ms[name] += billed

    def _count_api_call(self, function: str, service: str, operation: str) -> None:
        with self._count_lock:
            self.api_calls[function, service, operation] += 1

    def _metered(self, function: Function, app: Any) -> Any:
        """The HTTP API function's ASGI app, each HTTP request one invocation of it."""

        async def metered(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            with self._invocation(function.name):
                await app(scope, receive, send)

        return metered

    def _invoke(self, function_name: str, body: Any, response_headers: dict[str, str]) -> bytes:
        function = self.function(function_name)
        with self._count_lock:
            self.hooked_invocations[function.name] += 1
        raw = body.decode() if isinstance(body, bytes) else body
        event = json.loads(raw) if raw else {}
        try:
            result = self.call(function, event)
        except Exception as exc:
            log.info("%s raised %s: %s", function.name, type(exc).__name__, exc)
            response_headers["x-amz-function-error"] = "Unhandled"
            error = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            return json.dumps(error).encode()
        return json.dumps(result).encode()

    def _post_to_connection(self, connection_id: str, data: bytes) -> None:
        """A function's push (moto's Management API): to the local socket, or GoneException."""
        from moto.core.exceptions import JsonRESTError

        connection_id = urllib.parse.unquote(connection_id)  # moto leaves the path quoted
        try:
            if self.websocket is None:
                raise Gone(connection_id)
            self.websocket.sockets.post(connection_id, data)
        except Gone:
            with self._count_lock:
                self.hooked_pushes["gone"] += 1
            gone = JsonRESTError("GoneException", f"connection {connection_id} is gone")
            gone.code = 410
            raise gone from None
        with self._count_lock:
            self.hooked_pushes["sent"] += 1

    # -- looking at it -------------------------------------------------------------------

    @property
    def app(self) -> Any:
        """The HTTP API function's ASGI app (its module's `app`), to serve or test, with the
        WebSocket API at `/v1/ws` when the template has one. Each HTTP request is counted
        as an invocation of the function (`invocations`, `billed_ms`, `api_calls`)."""
        for function in self.functions.values():
            if function.spec.http_routes and hasattr(function.module, "app"):
                http_app = self._metered(function, function.module.app)
                return self.websocket.asgi(http_app) if self.websocket else http_app
        raise TemplateError("no function with an HttpApi event has a module-level `app`")

    @property
    def state_machine_arn(self) -> str:
        if len(self.state_machine_arns) != 1:
            raise TemplateError(f"{len(self.state_machine_arns)} state machines; name one")
        return next(iter(self.state_machine_arns.values()))

    @staticmethod
    def client(service: str) -> Any:
        """A boto3 client of the emulated account (only while the emulator runs)."""
        import boto3

        return boto3.client(service, region_name=REGION)

    def queue_url(self, logical_id: str) -> str:
        return self.queue_urls[logical_id]

    def executions(self, status: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for arn in self.state_machine_arns.values():
            kwargs = {"statusFilter": status} if status else {}
            pages = self.sfn.get_paginator("list_executions").paginate(
                stateMachineArn=arn, **kwargs
            )
            for page in pages:
                found.extend(page["executions"])
        return found

    def running_executions(self) -> list[dict[str, Any]]:
        return self.executions("RUNNING")

    def _queue_depth(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def idle(self) -> bool:
        """Nothing queued for a function, nothing being handled, no execution running."""
        if any(p.busy for p in self._pollers):
            return False
        if any(self._queue_depth(p.queue_url) for p in self._pollers):
            return False
        return not self.running_executions()

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the emulated system is idle (twice in a row); TimeoutError if not."""
        deadline = time.monotonic() + timeout
        calm = 0
        while calm < 2:
            calm = calm + 1 if self.idle() else 0
            if calm < 2:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"still busy after {timeout:g}s: {self._busy_report()}")
                time.sleep(0.02)

    def _busy_report(self) -> str:
        parts = [f"{p.function.name} handling" for p in self._pollers if p.busy]
        parts += [
            f"{depth} message(s) on {p.queue_url.rsplit('/', 1)[-1]}"
            for p in self._pollers
            if (depth := self._queue_depth(p.queue_url))
        ]
        parts += [f"execution {e['name']} running" for e in self.running_executions()]
        return ", ".join(parts) or "nothing"

    def iter_history(self, execution_arn: str) -> Iterator[dict[str, Any]]:
        pages = self.sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
        for page in pages:
            yield from page["events"]
