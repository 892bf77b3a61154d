"""The runtime core imports no AWS SDK: any step must run anywhere, Lambda or not."""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import re
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
        # Logs with the Lambda context, and a trace (carrier_aws/observability.py).
        handler = next(
            node
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef) and node.name == "handler"
        )
        decorators = [ast.unparse(d) for d in handler.decorator_list]
        assert decorators == ["function_handler"], (folder.name, decorators)


def test_every_function_logs_to_a_log_group_of_its_own_kept_for_the_retention() -> None:
    from carrier_aws.local.template import load_yaml

    resources = load_yaml(ROOT / "template.yaml")["Resources"]
    globals_ = load_yaml(ROOT / "template.yaml")["Globals"]["Function"]
    assert globals_["Tracing"] == "Active"
    assert globals_["LoggingConfig"]["LogFormat"] == "JSON"
    groups = []
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        group = resource["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources[group]["Type"] == "AWS::Logs::LogGroup", name
        groups.append(group)
    assert len(set(groups)) == len(groups), "two functions share a log group"
    for name, resource in resources.items():
        if resource["Type"] == "AWS::Logs::LogGroup":
            assert resource["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            # Every alarm notifies the optional topic.
            assert "HasAlarmTopic" in str(resource["Properties"]["AlarmActions"]), name


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


def _distribution_name(requirement: str) -> str:
    """A requirement's distribution name, PEP 503 normalized: `PyJWT[crypto]>=2` is `pyjwt`."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def test_the_layer_lock_pins_every_requirement_with_a_hash() -> None:
    """The layer installs requirements.lock with --require-hashes: it must pin every package of
    requirements.txt to one version, with the sha256 of its wheel, and be made again
    (layers/carrier/lock) whenever requirements.txt's requirements change."""
    layer = ROOT / "layers" / "carrier"
    # The lock script, imported as a module (its file name has no .py).
    loader = importlib.machinery.SourceFileLoader("carrier_layer_lock", str(layer / "lock"))
    spec = importlib.util.spec_from_file_location(loader.name, loader.path, loader=loader)
    assert spec is not None
    lock_script = importlib.util.module_from_spec(spec)
    loader.exec_module(lock_script)

    requirements = (layer / "requirements.txt").read_text()
    lock = (layer / "requirements.lock").read_text()
    recorded = re.search(r"^# requirements\.txt: sha256:([0-9a-f]{64})$", lock, re.MULTILINE)
    assert recorded, "requirements.lock does not say which requirements it was made from"
    assert recorded.group(1) == lock_script.input_digest(requirements), (
        "requirements.txt changed since requirements.lock was made: run layers/carrier/lock"
    )
    pinned: dict[str, str] = {}
    for line in lock_script.requirement_lines(lock):
        pin = re.fullmatch(r"([a-z0-9][a-z0-9-]*)==(\S+)( --hash=sha256:[0-9a-f]{64})+", line)
        assert pin, f"requirements.lock: not `name==version --hash=sha256:<hex>`: {line}"
        assert pin.group(1) not in pinned, f"requirements.lock pins {pin.group(1)} twice"
        pinned[pin.group(1)] = pin.group(2)
    wanted = {_distribution_name(line) for line in lock_script.requirement_lines(requirements)}
    assert wanted - pinned.keys() == set(), "requirements.lock lacks these: run layers/carrier/lock"

    # The Makefile installs the lock, hash-checked, for the target the lock was resolved for.
    makefile = (layer / "Makefile").read_text()
    assert '--require-hashes --target "$(TARGET)" -r "$(HERE)requirements.lock"' in makefile
    assert 'requirements.txt"' not in makefile
    target = lock_script.TARGET
    flags = [" ".join(target[i : i + 2]) for i in range(0, len(target) - 1, 2)]
    for flag in [*flags, target[-1]]:
        assert flag in makefile, f"the Makefile and layers/carrier/lock differ on {flag}"
