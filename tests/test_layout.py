"""The runtime core imports no AWS SDK: any step must run anywhere, Lambda or not."""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, modules: set[str]) -> list[str]:
    """The carrier_core modules an import statement runs: the module named, or the
    submodule (`from carrier_core.turn import context`), with the packages above it but
    `carrier_core` itself, whose `__init__` every import runs and nothing can be below."""
    if isinstance(node, ast.Import):
        named = [alias.name for alias in node.names]
    else:
        assert node.level == 0, "carrier_core imports by absolute names"
        module = node.module or ""
        named = [
            f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names
        ]
    found = []
    for name in named:
        if not name.startswith("carrier_core."):
            continue
        while name not in modules:
            name = name.rpartition(".")[0]
        parts = name.split(".")
        found += [".".join(parts[:end]) for end in range(2, len(parts) + 1)]
    return found


def _import_graph() -> dict[str, set[str]]:
    """carrier_core's modules, each with those it imports at its top level or in a function:
    an import inside a function that dodges a cycle is still one. Imports under
    `if TYPE_CHECKING:` are left out: only the type checker runs them, for annotations
    (the plugin API's types name the runtime that hands plugins their work)."""
    paths = sorted((ROOT / "carrier_core").rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        module = _module_name(path)
        typing_only = set()
        imports = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
                typing_only |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
            elif isinstance(node, ast.Import | ast.ImportFrom):
                imports.append(node)
        graph[module] = {
            name
            for node in imports
            if id(node) not in typing_only
            for name in _imported(node, modules)
            if name != module and not module.startswith(name + ".")
        }
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return components


def test_carrier_core_has_no_import_cycle() -> None:
    """Layers, each importing only those below: the character, store, models and plugin
    declarations at the bottom, then knowledge and embedding, the runtime, the turn's steps
    and tasks, bootstrap, the API and the command line on top. A lower layer takes what it needs
    of a higher one as an argument (`AgentModels`, a store, a callable), never by importing
    it, not even inside a function."""
    graph = _import_graph()
    assert "carrier_core.turn.context" in graph["carrier_core.sdk"]
    cycles = [
        "a cycle among "
        + ", ".join(component)
        + ":\n  "
        + "\n  ".join(
            f"{m} imports {', '.join(sorted(graph[m] & set(component)))}" for m in component
        )
        for component in _cycles(graph)
    ]
    assert cycles == [], "import cycles in carrier_core:\n" + "\n".join(cycles)


def test_the_import_graph_sees_cycles_through_functions_and_packages() -> None:
    """What the check above counts: an import inside a function and the package `__init__`
    an import runs are edges; a TYPE_CHECKING import is not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    imports = _import_graph()
    # A function-level import (the command line's lazy `carrier reembed`).
    assert "carrier_core.reembed" in imports["carrier_core.cli"]
    # Importing carrier_core.turn.context runs carrier_core.turn's __init__.
    assert "carrier_core.turn" in imports["carrier_core.sdk"]
    # plugin.py names the runtime only for the type checker.
    assert "carrier_core.runtime" not in imports["carrier_core.plugin"]


def _is_sql_text(node: ast.expr) -> bool:
    """A string literal, an f-string, a concatenation of them, or one of them `.encode()`d."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (str, bytes))
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return _is_sql_text(node.left) or _is_sql_text(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "encode" and _is_sql_text(node.func.value)
    return False


def test_only_the_store_runs_sql() -> None:
    """Every statement lives in `carrier_core/store/`, one module per data area: code
    elsewhere asks the store, it does not write SQL of its own."""
    offenders = []
    for folder in ("carrier_core", "carrier_aws", "functions"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.is_relative_to(ROOT / "carrier_core" / "store"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("execute", "executemany", "copy")
                    and node.args
                    and _is_sql_text(node.args[0])
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def _modules_after(statement: str, prefix: str = "carrier_") -> set[str]:
    """The modules (of names starting with `prefix`) a fresh interpreter holds after
    running `statement`."""
    listing = f"print(*sorted(m for m in sys.modules if m.startswith({prefix!r})))"
    code = f"import sys\n{statement}\n{listing}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def test_a_function_imports_the_modules_it_runs_and_not_the_whole_runtime() -> None:
    """Packages import none of their modules (`carrier_core` finds its names on first use):
    each import of a Lambda function's cold start is one that function runs."""
    migrate = _modules_after("import carrier_core.store.migrate, carrier_aws.database")
    assert "carrier_core.runtime" not in migrate
    assert "carrier_core.store.store" not in migrate
    # Migrations need no model: the store's text conversion keeps pydantic out of it.
    assert "pydantic" not in _modules_after(
        "import carrier_core.store.migrate, carrier_aws.database", prefix="pydantic"
    )
    # The ingest function's imports: the runtime, and of the turn's steps only ingest.
    ingest = _modules_after("import carrier_aws.runtime, carrier_core.turn.ingest")
    assert "carrier_core.runtime" in ingest
    others = {"carrier_core.turn.decide", "carrier_core.turn.act", "carrier_core.knowledge"}
    assert not others & ingest
    # The API hands turns to runners: it stores messages and answers approvals, and runs
    # no step but ingest (in one process its approval answer imports the runner on use).
    api = _modules_after("import carrier_core.api.app")
    steps = {"carrier_core.turn.run", "carrier_core.turn.decide", "carrier_core.turn.act"}
    assert not steps & api
    assert "carrier_core.tasks.run" not in api
    assert _modules_after("import carrier_core") == {"carrier_core"}


def test_carrier_core_s_names_are_found_on_first_use() -> None:
    import carrier_core
    from carrier_core.runtime import Runtime
    from carrier_core.turn.run import run_turn

    assert carrier_core.Runtime is Runtime
    assert carrier_core.run_turn is run_turn
    for name in carrier_core.__all__:
        assert getattr(carrier_core, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = carrier_core.Nothing  # type: ignore[attr-defined]
