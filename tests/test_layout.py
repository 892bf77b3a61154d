"""The runtime core imports no AWS SDK: any step must run anywhere, Lambda or not."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

AWS_MODULES = {"boto3", "botocore", "aws_lambda_powertools", "mangum", "moto", "carrier_aws"}


def test_carrier_core_imports_no_aws_module() -> None:
    offenders = []
    for path in sorted((ROOT / "carrier_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if name.split(".")[0] in AWS_MODULES
            ]
    assert offenders == []


def test_every_function_folder_has_a_handler() -> None:
    folders = [p for p in (ROOT / "functions").iterdir() if p.is_dir()]
    assert {p.name for p in folders} >= {
        "api",
        "ingest",
        "llm_step",
        "action_exec",
        "turn_finish",
        "memory_embed",
    }
    for folder in folders:
        source = (folder / "app.py").read_text()
        assert "def handler(" in source, folder
        assert not Path(folder, "__init__.py").exists()


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == name
    ]


def test_nothing_polls_describe_execution() -> None:
    """DescribeExecution is throttled per account: no code path may wait for a turn by
    polling it. The sweep asks once per stalled room, in a function with no loop of its own
    and no sleep; nothing calls that function from a `while` loop."""
    paths = [
        *(ROOT / "functions").rglob("*.py"),
        *(ROOT / "carrier_aws").rglob("*.py"),
        *(ROOT / "carrier_core").rglob("*.py"),
    ]
    # carrier_aws/local is the emulator, never deployed.
    trees = {
        str(p.relative_to(ROOT)): ast.parse(p.read_text())
        for p in sorted(paths)
        if "local" not in p.relative_to(ROOT).parts
    }
    callers: list[str] = []
    for where, tree in trees.items():
        for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            if not _calls(function, "describe_execution"):
                continue
            callers.append(f"{where}:{function.name}")
            loops = [n for n in ast.walk(function) if isinstance(n, ast.While | ast.For)]
            assert loops == [], f"{function.name} calls describe_execution in a loop"
            assert _calls(function, "sleep") == [], f"{function.name} sleeps"
    assert callers == ["carrier_aws/runners.py:_running"]
    for where, tree in trees.items():
        for loop in [n for n in ast.walk(tree) if isinstance(n, ast.While)]:
            called = {
                c.func.id
                for c in ast.walk(loop)
                if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
            }
            assert "_running" not in called, f"{where}: a while loop asks for executions"


def test_every_lambda_task_retries_lambda_s_own_transient_errors() -> None:
    """Lambda's service errors, throttling and client-side timeouts are retried wherever the
    state machine invokes a function; the execution as a whole has a deadline."""
    import json

    machine = json.loads((ROOT / "statemachine" / "turn.asl.json").read_text())
    assert machine["TimeoutSeconds"] > 0
    transient = {
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "Lambda.ClientExecutionTimeoutException",
    }

    def tasks(states: dict[str, dict[str, object]]) -> list[tuple[str, dict[str, object]]]:
        found = []
        for name, state in states.items():
            if state.get("Resource") == "arn:aws:states:::lambda:invoke":
                found.append((name, state))
            processor = state.get("ItemProcessor")
            if isinstance(processor, dict):
                found += tasks(processor["States"])
        return found

    found = tasks(machine["States"])
    assert len(found) >= 5
    for name, state in found:
        retried = {e for rule in state["Retry"] for e in rule["ErrorEquals"]}  # type: ignore[attr-defined]
        assert transient <= retried, f"{name} does not retry {sorted(transient - retried)}"
        assert "DatabaseUnavailable" in retried, f"{name} does not retry DatabaseUnavailable"
