"""The functions' logs, metrics and traces: a turn's ids on every line and metric of it,
each invocation's own Lambda context, library lines as JSON in Lambda, X-Ray annotations.

Real parts: the handlers under the emulator (moto's Step Functions running the ASL),
Powertools' Logger, Metrics and Tracer, and the AWS X-Ray SDK sending to a UDP socket as
it would to the X-Ray daemon.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from carrier_aws import observability
from carrier_aws.local.emulator import Emulator
from carrier_core import Character, Runtime
from carrier_core.store.store import Store
from carrier_core.tenants import create_key
from carrier_core.world import LOCAL_TENANT_ID
from tests.conftest import ROOT, json_lines
from tests.test_emulated import RETRY_SCALE, post, wait_turn


def test_a_turns_ids_are_on_the_log_lines_and_metrics_of_each_function_it_meets(
    database_url: str,
    store: Store,
    runtime: Runtime,
    ada: Character,
    log_lines: io.StringIO,
    capsys: pytest.CaptureFixture[str],
) -> None:
    agent_id = runtime.register_agent(ada)
    key = create_key(store, LOCAL_TENANT_ID).secret
    capsys.readouterr()
    with Emulator(database_url, retry_interval_scale=RETRY_SCALE) as emulator:
        client = TestClient(emulator.app, headers={"Authorization": f"Bearer {key}"})
        accepted = post(client, agent_id, "My name is Grace")
        assert wait_turn(client, accepted["turn_id"])["status"] == "done"
        emulator.drain()
    ids = {"turn_id": accepted["turn_id"], "message_id": accepted["message_id"]}

    logged = [line for line in json_lines(log_lines.getvalue()) if "turn_id" in line]
    mine = [line for line in logged if line["turn_id"] == ids["turn_id"]]
    # Accepted by the API (served in-process by the emulator, so without a Lambda context),
    # then taken up by the room's runner (turn_finish).
    assert [line["message"] for line in mine] == ["message accepted", "turn taken up"]
    assert mine[1]["function_name"] == "TurnFinishFunction"
    assert all(line["message_id"] == ids["message_id"] for line in mine), mine

    # EMF documents on stdout: each metric of the turn carries both ids as metadata, from
    # the decide step (llm_step), the action (action_exec) and the turn's end (turn_finish).
    documents = [d for d in json_lines(capsys.readouterr().out) if "_aws" in d]
    turn_docs = [d for d in documents if d.get("turn_id") == ids["turn_id"]]
    names = {m["Name"] for d in turn_docs for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"MessagesAccepted", "Decisions", "Actions", "TurnsDone", "TurnLatency"} <= names
    assert all(d["message_id"] == ids["message_id"] for d in turn_docs)
    ended = next(d for d in turn_docs if "TurnsDone" in d)
    # The model calls of this turn (the decision, the reflection, ...) are summed up.
    assert ended["ModelCalls"][0] >= 2
    assert ended["TurnLatency"][0] > 0
    # Ids are never dimensions: one metric per turn would be a metric per turn.
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]] for d in documents)


def test_concurrent_invocations_keep_their_own_lambda_context(log_lines: io.StringIO) -> None:
    """`carrier dev` runs all functions in one process: one invocation's keys must not show
    on another's lines (Powertools' shared `append_keys` did that)."""
    both_in = threading.Barrier(2)

    @observability.function_handler
    def handler(event: dict[str, Any], context: object) -> None:
        with observability.correlated(event["turn_id"]):
            both_in.wait(timeout=5)  # the other invocation has set its keys by now
            observability.logger.info("working")
            both_in.wait(timeout=5)

    def invoke(name: str, turn_id: str) -> None:
        context = SimpleNamespace(
            function_name=name,
            memory_limit_in_mb=128,
            invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
            aws_request_id=str(uuid.uuid4()),
        )
        handler({"turn_id": turn_id}, context)

    threads = [threading.Thread(target=invoke, args=(f"Function{n}", f"turn-{n}")) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = [line for line in json_lines(log_lines.getvalue()) if line["message"] == "working"]
    assert sorted((line["function_name"], line["turn_id"]) for line in lines) == [
        ("Function1", "turn-1"),
        ("Function2", "turn-2"),
    ]


TRACE_ID = "1-5759e988-bd862e3fe1be46a994272793"
LAMBDA_SCRIPT = """
import json, logging, sys
from types import SimpleNamespace
from botocore.config import Config
from carrier_aws.clients import AwsClient
from carrier_aws.observability import correlated, function_handler

# Nothing listens there: the call fails, and its trace says so.
sqs = AwsClient("sqs", endpoint_url="http://127.0.0.1:9",
                config=Config(retries={"max_attempts": 1}, connect_timeout=1))

@function_handler
def handler(event, context):
    with correlated(event["turn_id"], event["message_id"]):
        logging.getLogger("carrier_core.turn.decide").warning("a library's line")
        try:
            sqs.list_queues()
        except Exception:
            pass
    return {"ok": True}

context = SimpleNamespace(
    function_name="LlmStepFunction", memory_limit_in_mb=512,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:LlmStepFunction",
    aws_request_id="req-1",
)
print(json.dumps(handler(json.loads(sys.argv[1]), context)))
"""


def test_in_lambda_library_lines_are_json_and_the_trace_is_annotated_with_the_turn(
    tmp_path: Any,
) -> None:
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(10)
    port = daemon.getsockname()[1]
    env = {
        **os.environ,
        # What Lambda sets: the task root (Tracer is off elsewhere), the trace header of
        # the invocation, and where the X-Ray daemon listens.
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "AWS_LAMBDA_FUNCTION_NAME": "LlmStepFunction",
        "_X_AMZN_TRACE_ID": f"Root={TRACE_ID};Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_SERVICE_NAME": "carrier-test",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    ids = {"turn_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4())}
    done = subprocess.run(
        [sys.executable, "-c", LAMBDA_SCRIPT, json.dumps(ids)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stdout)
    library = next(line for line in lines if line.get("message") == "a library's line")
    assert library["level"] == "WARNING"
    assert library["function_name"] == "LlmStepFunction"
    assert library["turn_id"] == ids["turn_id"]
    assert library["message_id"] == ids["message_id"]

    received: list[dict[str, Any]] = []
    while not any(doc.get("name") == "## handler" for doc in received):
        packet = daemon.recv(65536).decode()
        # Each packet: a JSON header line, then the (sub)segment document.
        received.append(json.loads(packet.split("\n", 1)[1]))
    daemon.close()
    segment = next(doc for doc in received if doc.get("name") == "## handler")
    assert segment["trace_id"] == TRACE_ID
    assert segment["annotations"]["turn_id"] == ids["turn_id"]
    assert segment["annotations"]["message_id"] == ids["message_id"]
    # AWS calls are traced, though botocore is patched on the first session, not at import.
    calls = [doc for doc in walk_segments(received) if doc.get("namespace") == "aws"]
    assert [(c["name"], c["aws"]["operation"]) for c in calls] == [("sqs", "ListQueues")]


def walk_segments(documents: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for doc in documents:
        yield doc
        yield from walk_segments(doc.get("subsegments", []))
