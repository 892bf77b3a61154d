"""Cold start of each Lambda function: the import of its handler module on the layer's Python 3.12.

What Lambda's init phase runs for a function is the import of its handler module
(`functions/<name>/app.py`, `Handler: app.handler`) with the Carrier layer on `sys.path`.
This measures that import, function by function, and says where its time goes, with the
model SDKs (openai, anthropic, tiktoken) counted apart.

The layer: a host-platform (x86_64) copy of it, built like `layers/carrier/Makefile` builds
the real one: `pip install --no-deps --no-compile --target` of the exact `name==version`
pins of `layers/carrier/requirements.lock` (without their hashes, which are the arm64
wheels'), then carrier itself from a copy of the working tree (uncommitted changes
included), without `carrier_aws/local`. It is kept in `bench/.cache/cold_start/`, keyed by
the lock's sha256 (carrier is reinstalled when its sources change). Processes run the
interpreter of a bare venv made from the given python3.12, so nothing installed in that
interpreter's own site-packages (nor a `.pth` file there) runs at start.

Each function is measured in fresh processes whose cwd is its task root (a copy of
`functions/<name>` made at the start, as Lambda's /var/task is: the tree may change while
this runs), with `PYTHONPATH` the layer and an environment like Lambda's: the template's
Globals and the function's own variables (intrinsics: their parameter's default, or a
placeholder ARN/URL; no `DATABASE_URL`), the region, the function's name and memory size,
Lambda's log format and X-Ray variables, dummy credentials (as Lambda puts its role's in
the environment, so botocore never asks the instance metadata service), and
`AWS_CONFIG_FILE` pointing nowhere. In two modes:

- no .pyc: a layer without bytecode (as the Makefile built it until this bench showed the
  cost): Lambda's `/opt` is read-only, so each cold start compiles every module it imports
  from source. The processes run
  with `PYTHONDONTWRITEBYTECODE=1` (the standard library keeps its own `.pyc`, as Lambda's);
- with .pyc: the same, with bytecode cached in a `PYTHONPYCACHEPREFIX` folder (written by a
  warm-up run): what the layer costs now that the Makefile ships compiled bytecode.

Per function and mode, N rounds (default 7, round-robin over all processes, after one
untimed warm-up round) of:

- `python3.12 -X importtime -c "import app"`: the import's time is the cumulative time of
  the `app` line. Each module's own ("self") time is charged to a group (`GROUPS`, and
  `stdlib`): its package's if that package is in one, else that of the nearest import above
  it that is, so a dependency goes to what pulled it in (urllib3 and dateutil to botocore,
  cryptography to jwt, jiter to openai if only openai imports it). The groups add up to
  the import. `app.py` is the handler module's own code: the AWS clients it makes, the
  FastAPI app. A module that a function imports when called goes to the module that
  called it (pydantic's lazy imports would be Carrier's, were their packages not in its
  group);
- `python3.12 -c "import app"`, timed from start to exit, minus a bare
  `python3.12 -c pass` in the same environment: the process's extra time (the import plus
  the interpreter's teardown of what it loaded), without `-X importtime`'s own cost.

Reported: medians (ms) and ratios; the model SDKs a function imports at init (if any, a
finding: they could be imported on the first model call); what imports botocore and
aws_xray_sdk first. Once per function, an untimed run with an audit hook that blocks
sockets records what the import does besides importing: sockets (connects, name lookups,
sends), threads started, database connections or pools made, AWS clients created (and
their ms). The model SDKs are also imported alone in a fresh process, and after llm_step's
handler, which makes the decide and evaluate calls: what its first model call pays if they
are imported lazily.

Caveats:

- x86_64 host wheels of the same versions stand in for the arm64 ones Lambda runs; the
  compiled extensions (pydantic_core, psycopg_binary, cryptography, jiter, ...) and the CPU
  differ: read the ratios and shares more than the milliseconds.
- Lambda's init phase also starts the runtime (its bootstrap imports part of the standard
  library before the handler, so `stdlib` here is a little high) and runs the extensions'
  init: neither is measured. The init phase may take at most 10 s. Outside it, a function
  has CPU in proportion to its memory (one vCPU at 1,769 MB, so about 0.3 at 512 MB);
  whether init gets more is not documented: an import moved from init to the first call
  may cost more there than here.
- The disk cache is warm after the warm-up round: these are warm-cache imports. A
  function's first cold start in a fresh micro-VM reads the layer's files (their size is
  printed) from Lambda's storage as they are opened, so it is slower than this, by an
  amount not measured here; later cold starts on a host that has the layer cached are
  closer to these figures.
- Per group, the median of each group's times: the medians need not add up to the
  import's.

    python bench/cold_start.py [--runs 7] [--functions api,llm_step] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
LOCK = ROOT / "layers" / "carrier" / "requirements.lock"
FUNCTIONS = ROOT / "functions"
CACHE = Path(__file__).resolve().parent / ".cache" / "cold_start"
#: The functions' task roots (Lambda's /var/task): copies of their folders, so that a run
#: measures one state of the code even if the tree changes meanwhile.
TASKS = CACHE / "task"
#: What is installed as carrier (the Makefile's `pip install .`), hashed to know when to
#: reinstall it.
CARRIER_SOURCES = ("pyproject.toml", "README.md", "carrier_core", "carrier_aws")

STACK = "carrier"
REGION = "us-east-1"
ACCOUNT = "123456789012"

#: Groups of top-level modules. A module of any other package (but the standard
#: library's) is charged to the nearest import above it that is in a group.
GROUPS: dict[str, tuple[str, ...]] = {
    # annotated_types: pydantic imports it lazily, while a model is built (in Carrier's code).
    "pydantic": (
        "pydantic",
        "pydantic_core",
        "annotated_types",
        "typing_inspection",
    ),
    "fastapi": ("fastapi", "starlette", "mangum"),
    "botocore": ("boto3", "botocore", "s3transfer"),
    "powertools": ("aws_lambda_powertools",),
    "xray": ("aws_xray_sdk",),
    "psycopg": ("psycopg", "psycopg_binary", "psycopg_pool", "pgvector"),
    "jwt": ("jwt",),
    # The model SDKs' HTTP client (httpx2 and httpcore2 in the lock; httpx if it comes back).
    "httpx": ("httpx", "httpx2", "httpcore", "httpcore2"),
    "openai": ("openai",),
    "anthropic": ("anthropic",),
    "tiktoken": ("tiktoken", "tiktoken_ext"),
    "carrier_core": ("carrier_core",),
    "carrier_aws": ("carrier_aws",),
    "handler": ("app",),
}
STDLIB = "stdlib"
CARRIER_GROUPS = ("carrier_core", "carrier_aws", "handler")
OTHER = "other"
MODEL_SDKS = ("openai", "anthropic", "tiktoken")
#: Columns of the breakdown tables, in order, and their headers.
COLUMNS = (*GROUPS, STDLIB)
HEADERS = {"powertools": "powertls", "anthropic": "anthropc", "carrier_core": "c_core"}
HEADERS |= {"carrier_aws": "c_aws", "handler": "app.py"}
#: The function whose model calls the SDKs serve (decide, evaluate): their import is
#: measured after its handler's too.
MODEL_CALLER = "llm_step"

#: Variables whose template value is an intrinsic that is not a parameter's default.
PLACEHOLDERS = {
    "CARRIER_DB_SECRET_ARN": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{STACK}-app-AbCdEf",
    "CARRIER_DB_OWNER_SECRET_ARN": (
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{STACK}-owner-AbCdEf"
    ),
    "CARRIER_DB_HOST": f"{STACK}.proxy-abcdefghijkl.{REGION}.rds.amazonaws.com",
    "TURN_STATE_MACHINE_ARN": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{STACK}-turn",
    "WEBSOCKET_ENDPOINT": f"https://abcdefghij.execute-api.{REGION}.amazonaws.com/live",
    "WEBHOOK_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{STACK}-webhooks",
}
#: Not set, whatever the template says: the functions' database comes from the secret.
UNSET = ("DATABASE_URL",)

#: What a process runs once per function, untimed, to see what the import does besides
#: importing. Sockets are blocked (the audit hook raises), so nothing reaches a network.
SIDE_EFFECTS = r"""
import gc, json, sys, threading, time
found = {"sockets": [], "threads": [], "database": [], "aws_clients": [], "error": None}
NETWORK = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
           "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.sendto",
           "socket.sendmsg"}

def hook(event, args):
    if event in NETWORK:
        target = args[1] if event in ("socket.connect", "socket.sendto") else args[0]
        found["sockets"].append(f"{event} {target!r}")
        raise OSError("bench/cold_start.py: no network at import")

import botocore.session
_client = botocore.session.Session.create_client

def client(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return _client(self, *args, **kwargs)
    finally:
        name = args[0] if args else kwargs.get("service_name")
        found["aws_clients"].append([name, (time.perf_counter() - start) * 1000])

botocore.session.Session.create_client = client
before = set(threading.enumerate())
sys.addaudithook(hook)
try:
    import MODULE
except BaseException as exc:
    found["error"] = f"{type(exc).__name__}: {exc}"
found["threads"] = [t.name for t in threading.enumerate() if t not in before]
kinds = []
for name, cls in (("psycopg", "Connection"), ("psycopg", "AsyncConnection"),
                  ("psycopg_pool", "ConnectionPool"), ("psycopg_pool", "AsyncConnectionPool")):
    module = sys.modules.get(name)
    if module is not None:
        kinds.append(getattr(module, cls))
if kinds:
    kinds = tuple(kinds)
    found["database"] = [type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds)]
print(json.dumps(found))
"""


# -- the layer ----------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_pins(lock: Path) -> list[str]:
    """`name==version` of every line of the lock, without its hashes."""
    pins = []
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("--"):
            pins.append(line.split()[0].rstrip("\\"))
    return pins


def carrier_files() -> Iterator[Path]:
    for name in CARRIER_SOURCES:
        path = ROOT / name
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            if found.is_file() and "__pycache__" not in found.parts and found.suffix != ".pyc":
                yield found


def carrier_digest() -> str:
    digest = hashlib.sha256()
    for path in carrier_files():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def pip(base_python: str, *args: str) -> None:
    command = [base_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*command, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"pip install failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def remove_bytecode(folder: Path) -> None:
    for cache in folder.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    for compiled in folder.rglob("*.pyc"):
        compiled.unlink()


def install_carrier(base_python: str, layer: Path, tree: Path = ROOT) -> None:
    """carrier from a copy of `tree` (the working tree; so no build/ is left in it), as the
    Makefile installs it: its dist-info carries the plugins' entry points; no
    carrier_aws/local."""
    for old in [*layer.glob("carrier-*.dist-info"), layer / "carrier_core", layer / "carrier_aws"]:
        shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="carrier-src-") as tmp:
        source, target = Path(tmp) / "src", Path(tmp) / "target"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in CARRIER_SOURCES:
            if (tree / name).is_dir():
                shutil.copytree(tree / name, source / name, ignore=ignore)
            else:
                source.mkdir(parents=True, exist_ok=True)
                shutil.copy2(tree / name, source / name)
        pip(base_python, "--no-deps", "--no-compile", "--target", str(target), str(source))
        shutil.rmtree(target / "carrier_aws" / "local", ignore_errors=True)
        for item in target.iterdir():
            if item.name.startswith(("carrier_core", "carrier_aws", "carrier-")):
                shutil.move(str(item), layer / item.name)


@dataclass
class Layer:
    path: Path  # on PYTHONPATH, as /opt/python in Lambda
    pycache: Path  # PYTHONPYCACHEPREFIX of the "with .pyc" runs
    lock_sha256: str
    pins: int
    built_now: bool
    size_mb: float


def ensure_layer(base_python: str) -> Layer:
    """The layer's copy for this lock, built if missing; carrier reinstalled if changed."""
    lock_sha = sha256_file(LOCK)
    home = CACHE / f"layer-{lock_sha[:16]}"
    layer = home / "python"
    pins = lock_pins(LOCK)
    built_now = not layer.is_dir()
    if built_now:
        print(f"building the layer's host copy in {home} ...", file=sys.stderr)
        for stale in CACHE.glob("layer-*"):  # other locks' copies
            shutil.rmtree(stale, ignore_errors=True)
        building = home / "python.partial"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
            requirements.write("\n".join(pins) + "\n")
            requirements.flush()
            pip(
                base_python,
                "--no-deps",
                "--no-compile",
                "--only-binary=:all:",
                "--target",
                str(building),
                "-r",
                requirements.name,
            )
        building.rename(layer)
    digest = carrier_digest()
    stamp = home / "carrier.sha256"
    if not stamp.is_file() or stamp.read_text() != digest:
        install_carrier(base_python, layer)
        stamp.write_text(digest)
    remove_bytecode(layer)  # as the Makefile leaves it (and in case anything wrote some)
    size = sum(p.stat().st_size for p in layer.rglob("*") if p.is_file())
    return Layer(layer, home / "pycache", lock_sha, len(pins), built_now, size / 1e6)


def find_python(given: str | None) -> tuple[str, str]:
    """The Python 3.12 to measure: `given`, else python3.12 on PATH, else pyenv's 3.12.
    (Its real executable and version.)"""
    candidates = [given] if given else ["python3.12"]
    if not given and shutil.which("pyenv"):
        prefix = subprocess.run(["pyenv", "prefix", "3.12"], capture_output=True, text=True)
        candidates += [f"{p.strip()}/bin/python3.12" for p in prefix.stdout.split(":") if p.strip()]
    probe = "import sys; print(sys.executable); print(sys.version.split()[0])"
    for candidate in candidates:
        try:
            done = subprocess.run([candidate.strip(), "-c", probe], capture_output=True, text=True)
        except OSError:
            continue
        if done.returncode == 0:
            executable, version = done.stdout.split()
            if version.startswith("3.12."):
                return executable, version
    raise SystemExit(f"no Python 3.12 found (tried {', '.join(candidates)}): give --python")


def ensure_interpreter(given: str | None) -> tuple[str, str, str]:
    """A bare venv of the Python 3.12: (its interpreter, the base interpreter, version)."""
    base, version = find_python(given)
    venv = CACHE / f"venv-{version}"
    interpreter = venv / "bin" / "python3.12"
    if not interpreter.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(interpreter), base, version


# -- the template -------------------------------------------------------------------------


@dataclass(frozen=True)
class Intrinsic:
    tag: str
    value: Any


class TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form intrinsics (!Ref, !Sub, !If ...) as `Intrinsic`."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Intrinsic:
    if isinstance(node, yaml.ScalarNode):
        return Intrinsic(suffix, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return Intrinsic(suffix, loader.construct_sequence(node, deep=True))
    return Intrinsic(suffix, loader.construct_mapping(node, deep=True))  # type: ignore[arg-type]


TemplateLoader.add_multi_constructor("!", _intrinsic)


@dataclass
class Function:
    name: str  # its folder in functions/
    resource: str
    source: Path  # its CodeUri folder
    folder: Path  # its task root: a copy of `source` made at the start of a run
    module: str  # the handler's module
    memory_mb: int
    variables: dict[str, str]


def resolve(name: str, value: Any, parameters: dict[str, Any]) -> str | None:
    """The value a variable has with the template's defaults (None: not set)."""
    if name in UNSET:
        return None
    if not isinstance(value, Intrinsic):
        return str(value)
    if value.tag == "Ref" and value.value == "AWS::StackName":
        return STACK
    if value.tag == "Ref" and value.value in parameters:
        return str(parameters[value.value].get("Default", ""))
    return PLACEHOLDERS.get(name, f"placeholder-{name.lower()}")


def read_functions() -> list[Function]:
    template = yaml.load(TEMPLATE.read_text(), Loader=TemplateLoader)
    parameters = template.get("Parameters", {})
    globals_ = template.get("Globals", {}).get("Function", {})
    global_vars = globals_.get("Environment", {}).get("Variables", {})
    functions = []
    for resource, body in template["Resources"].items():
        if body.get("Type") != "AWS::Serverless::Function":
            continue
        props = body.get("Properties", {})
        source = ROOT / str(props["CodeUri"]).rstrip("/")
        handler = props.get("Handler", globals_.get("Handler", "app.handler"))
        raw = {**global_vars, **props.get("Environment", {}).get("Variables", {})}
        variables = {}
        for key, value in raw.items():
            resolved = resolve(key, value, parameters)
            if resolved is not None:
                variables[key] = resolved
        memory = props.get("MemorySize", globals_.get("MemorySize", 128))
        functions.append(
            Function(
                source.name,
                resource,
                source,
                TASKS / source.name,
                handler.rsplit(".", 1)[0],
                int(memory),
                variables,
            )
        )
    listed = {f.source for f in functions}
    for folder in sorted(FUNCTIONS.iterdir()):
        if (folder / "app.py").is_file() and folder not in listed:
            print(f"note: {folder.relative_to(ROOT)} is not in template.yaml", file=sys.stderr)
    return sorted(functions, key=lambda f: f.name)


def copy_tasks(functions: Sequence[Function]) -> None:
    shutil.rmtree(TASKS, ignore_errors=True)
    for function in functions:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(function.source, function.folder, ignore=ignore)


def code_version() -> str:
    """The commit measured, and how many of the files that make the functions differ."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    paths = ["carrier_core", "carrier_aws", "functions", "pyproject.toml", "layers"]
    status = subprocess.run(
        [*git, "status", "--porcelain", "--", *paths], capture_output=True, text=True
    )
    if head.returncode or status.returncode:
        return "not a git checkout"
    changed = len(status.stdout.splitlines())
    extra = f" + {changed} uncommitted file(s) in carrier_*, functions, layers" if changed else ""
    return f"commit {head.stdout.strip()}{extra}"


def lambda_env(layer: Layer, function: Function | None) -> dict[str, str]:
    """The environment of a Lambda process of `function` (None: of no function)."""
    name = f"{STACK}-{function.resource if function else 'Function'}"
    folder = function.folder if function else CACHE
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": str(layer.path),
        "LAMBDA_TASK_ROOT": str(folder),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": f"{function.module if function else 'app'}.handler",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb if function else 512),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0123456789abcdef0123456789abcdef",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "INFO",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        "_AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129",
        "_AWS_XRAY_DAEMON_PORT": "2000",
        # Lambda puts its role's credentials here: botocore never looks further.
        "AWS_ACCESS_KEY_ID": "ASIAXXXXXXXXXXXXXXXX",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-access-key",
        "AWS_SESSION_TOKEN": "bench-session-token",
        # This machine's ~/.aws is not Lambda's.
        "AWS_CONFIG_FILE": str(CACHE / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(CACHE / "no-aws-credentials"),
        "POWERTOOLS_SERVICE_NAME": STACK,
        "POWERTOOLS_METRICS_NAMESPACE": "Carrier",
        "CARRIER_MIGRATE_ON_START": "false",
        "CARRIER_DB_SECRET_ARN": PLACEHOLDERS["CARRIER_DB_SECRET_ARN"],
    }
    if function:
        env.update(function.variables)
    return env


MODES = {
    "no_pyc": "no .pyc",
    "pyc": "with .pyc",
}


def mode_env(env: dict[str, str], mode: str, layer: Layer) -> dict[str, str]:
    if mode == "no_pyc":
        return {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    return {**env, "PYTHONPYCACHEPREFIX": str(layer.pycache)}


# -- -X importtime ------------------------------------------------------------------------

LINE = re.compile(r"^import time:\s*(\d+) \|\s*(\d+) \| ( *)(\S+)\s*$")


@dataclass
class Module:
    name: str
    self_us: int
    cumulative_us: int
    children: list[Module] = field(default_factory=list)

    @property
    def top(self) -> str:
        return self.name.split(".", 1)[0]


def parse_importtime(stderr: str) -> list[Module]:
    """The import tree -X importtime printed (children before their parent): its roots."""
    pending: dict[int, list[Module]] = {}
    for line in stderr.splitlines():
        found = LINE.match(line)
        if not found:
            continue
        depth = len(found.group(3)) // 2
        module = Module(found.group(4), int(found.group(1)), int(found.group(2)))
        module.children = pending.pop(depth + 1, [])
        pending.setdefault(depth, []).append(module)
    return pending.get(0, [])


def find_root(roots: list[Module], name: str) -> Module:
    for module in reversed(roots):
        if module.name == name:
            return module
    raise LookupError(name)


GROUP_OF = {top: group for group, tops in GROUPS.items() for top in tops}


class Attribution:
    def __init__(self, stdlib_names: frozenset[str]) -> None:
        self.stdlib = stdlib_names

    def group(self, top: str) -> str | None:
        if top in GROUP_OF:
            return GROUP_OF[top]
        if top in self.stdlib:
            return STDLIB
        return None

    def charged(self, root: Module) -> Iterator[tuple[Module, str, str]]:
        """Each module of the import `root`, the group it is charged to, and the module
        outside that group whose import brought it in."""
        stack = [(root, OTHER, "", "", "")]
        while stack:
            module, owner, parent, parent_group, parent_via = stack.pop()
            own = self.group(module.top)
            group = own or owner
            via = parent_via if group == parent_group else parent
            yield module, group, via
            inherited = own if own not in (None, STDLIB) else owner
            stack.extend((child, inherited, module.name, group, via) for child in module.children)

    def split(self, root: Module) -> Counter[str]:
        """µs per group of the import `root` (the groups add up to its cumulative time)."""
        totals: Counter[str] = Counter()
        for module, group, _ in self.charged(root):
            totals[group] += module.self_us
        return totals

    def direct(self, root: Module) -> Counter[str]:
        """µs by package of the third-party packages in no group that Carrier's own code
        (carrier_core, carrier_aws, app.py) imports: hidden in its groups otherwise."""
        totals: Counter[str] = Counter()
        for module, group, _ in self.charged(root):
            if group in CARRIER_GROUPS and self.group(module.top) is None:
                totals[module.top] += module.self_us
        return totals

    def via(self, root: Module, group: str) -> Counter[str]:
        """µs of `group` in the import `root`, by the module outside it that imported it."""
        totals: Counter[str] = Counter()
        for module, charged, via in self.charged(root):
            if charged == group:
                totals[via] += module.self_us
        return totals

    def first_import(self, root: Module, group: str) -> list[str] | None:
        """The import chain from `root` to the first module of `group` imported."""

        def walk(module: Module, path: list[str]) -> list[str] | None:
            path = [*path, module.name]
            if GROUP_OF.get(module.top) == group:
                return path
            for child in module.children:
                found = walk(child, path)
                if found:
                    return found
            return None

        return walk(root, [])


# -- running ------------------------------------------------------------------------------


@dataclass
class Job:
    """One kind of process, run once per round."""

    label: str
    code: str
    cwd: Path
    env: dict[str, str]
    root: str | None  # -X importtime, the module whose import is timed; None: wall time
    samples_ms: list[float] = field(default_factory=list)
    trees: list[Module] = field(default_factory=list)


def run_once(python: str, job: Job, record: bool) -> None:
    args = [python, "-X", "importtime", "-c", job.code] if job.root else [python, "-c", job.code]
    start = time.perf_counter()
    done = subprocess.run(
        args,
        cwd=job.cwd,
        env=job.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
    )
    wall_ms = (time.perf_counter() - start) * 1000
    if done.returncode:
        raise SystemExit(f"{job.label} failed ({job.cwd}):\n{done.stderr[-4000:]}")
    if not record:
        return
    if job.root is None:
        job.samples_ms.append(wall_ms)
        return
    root = find_root(parse_importtime(done.stderr), job.root)
    job.samples_ms.append(root.cumulative_us / 1000)
    job.trees.append(root)


def side_effects(python: str, function: Function, layer: Layer) -> dict[str, Any]:
    code = SIDE_EFFECTS.replace("MODULE", function.module)
    env = mode_env(lambda_env(layer, function), "pyc", layer)
    done = subprocess.run(
        [python, "-c", code], cwd=function.folder, env=env, capture_output=True, text=True
    )
    if done.returncode or not done.stdout.strip():
        return {"error": f"the check itself failed: {done.stderr[-2000:]}"}
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": round(median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "samples": [round(v, 2) for v in values],
    }


def machine(python: str, version: str, layer: Layer) -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu": cpu_model(),
        "load_average_start": load,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": version,
        "interpreter": python,
        "layer": {
            "path": str(layer.path),
            "lock_sha256": layer.lock_sha256,
            "pins": layer.pins,
            "built_now": layer.built_now,
            "size_mb": round(layer.size_mb, 1),
        },
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    python, base, version = ensure_interpreter(args.python)
    layer = ensure_layer(base)
    stdlib_probe = "import json, sys; print(json.dumps(sorted(sys.stdlib_module_names)))"
    names = subprocess.run([python, "-c", stdlib_probe], capture_output=True, text=True)
    attribution = Attribution(frozenset(json.loads(names.stdout)))
    measured_code = code_version()
    functions = read_functions()
    copy_tasks(functions)
    if args.functions:
        wanted = set(args.functions.split(","))
        unknown = wanted - {f.name for f in functions}
        if unknown:
            raise SystemExit(f"unknown function(s): {', '.join(sorted(unknown))}")
        functions = [f for f in functions if f.name in wanted]
    caller = next((f for f in read_functions() if f.name == MODEL_CALLER), None)
    result: dict[str, Any] = {
        "machine": machine(python, version, layer),
        "code": measured_code,
        "runs": args.runs,
        "modes": MODES,
    }

    jobs: dict[tuple[str, ...], Job] = {}
    for mode in MODES:
        env = mode_env(lambda_env(layer, None), mode, layer)
        jobs["bare", mode] = Job(f"bare python ({mode})", "pass", CACHE, env, None)
    for function in functions:
        for mode in MODES:
            env = mode_env(lambda_env(layer, function), mode, layer)
            code = f"import {function.module}"
            label = f"{function.name} ({mode})"
            jobs[function.name, mode, "import"] = Job(
                label, code, function.folder, env, function.module
            )
            jobs[function.name, mode, "wall"] = Job(label, code, function.folder, env, None)
    for sdk in MODEL_SDKS:
        for mode in MODES:
            env = mode_env(lambda_env(layer, None), mode, layer)
            jobs[sdk, mode, "alone"] = Job(
                f"import {sdk} ({mode})", f"import {sdk}", CACHE, env, sdk
            )
            if caller:
                env = mode_env(lambda_env(layer, caller), mode, layer)
                code = f"import {caller.module}; import {sdk}"
                label = f"{sdk} after {caller.name} ({mode})"
                jobs[sdk, mode, "after"] = Job(label, code, caller.folder, env, sdk)

    started = time.monotonic()
    for round_ in range(args.runs + 1):  # round 0: the warm-up (caches, .pyc), not recorded
        for job in jobs.values():
            run_once(python, job, record=round_ > 0)
        what = "warm-up" if round_ == 0 else f"run {round_}/{args.runs}"
        print(f"  {what} done, {time.monotonic() - started:.0f} s", file=sys.stderr)
    effects = {f.name: side_effects(python, f, layer) for f in functions}
    load_end = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []
    result["machine"]["load_average_end"] = load_end

    result["bare_ms"] = {mode: summary(jobs["bare", mode].samples_ms) for mode in MODES}
    result["functions"] = {}
    for function in functions:
        entry: dict[str, Any] = {"resource": function.resource, "memory_mb": function.memory_mb}
        for mode in MODES:
            timed = jobs[function.name, mode, "import"]
            walls = jobs[function.name, mode, "wall"].samples_ms
            bare = median(jobs["bare", mode].samples_ms)
            splits = [attribution.split(tree) for tree in timed.trees]
            groups = sorted({g for split in splits for g in split})
            entry[mode] = {
                "import_ms": summary(timed.samples_ms),
                "process_minus_bare_ms": summary([w - bare for w in walls]),
                "groups_ms": {
                    g: round(median([split.get(g, 0) / 1000 for split in splits]), 2)
                    for g in groups
                },
            }
        timed_trees = jobs[function.name, "no_pyc", "import"].trees
        tree = timed_trees[0]
        entry["model_sdks_at_init"] = [
            sdk for sdk in MODEL_SDKS if attribution.first_import(tree, sdk) is not None
        ]
        directs = [attribution.direct(tree) for tree in timed_trees]
        entry["carrier_imports_ms"] = {
            name: round(median([d.get(name, 0) / 1000 for d in directs]), 2)
            for name in sorted({n for d in directs for n in d})
        }
        entry["imported_by_ms"] = {}
        for group in ("botocore", "xray", "powertools", *MODEL_SDKS):
            vias = [attribution.via(tree, group) for tree in timed_trees]
            importers = sorted({name for via in vias for name in via})
            medians = {n: median([via.get(n, 0) / 1000 for via in vias]) for n in importers}
            if medians:
                entry["imported_by_ms"][group] = {
                    n: round(v, 2) for n, v in sorted(medians.items(), key=lambda x: -x[1])
                }
        entry["first_import"] = {}
        for group in GROUPS:
            chain = attribution.first_import(tree, group)
            if chain and group != "handler":
                entry["first_import"][group] = " > ".join(chain)
        entry["at_import"] = effects[function.name]
        result["functions"][function.name] = entry

    result["model_sdks"] = {}
    for sdk in MODEL_SDKS:
        entry = {}
        for kind in ("alone", "after"):
            if (sdk, "no_pyc", kind) not in jobs:
                continue
            key = "alone" if kind == "alone" else f"after_{MODEL_CALLER}"
            entry[key] = {mode: summary(jobs[sdk, mode, kind].samples_ms) for mode in MODES}
            splits = [attribution.split(tree) for tree in jobs[sdk, "no_pyc", kind].trees]
            entry[key]["no_pyc_groups_ms"] = {
                g: round(median([s.get(g, 0) / 1000 for s in splits]), 2)
                for g in sorted({g for s in splits for g in s})
            }
        result["model_sdks"][sdk] = entry
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


# -- the report ---------------------------------------------------------------------------


def print_machine(result: dict[str, Any]) -> None:
    m = result["machine"]
    layer = m["layer"]
    print("Machine")
    print(f"  cores: {m['cores']} (usable by this process: {m['usable_cores']}); CPU: {m['cpu']}")
    print(
        f"  load average at start: {', '.join(map(str, m['load_average_start']))};"
        f" at end: {', '.join(map(str, m['load_average_end']))}"
    )
    print(f"  {m['os']}; Python {m['python']} ({m['interpreter']}, a bare venv)")
    print(f"  code: {result['code']}, copied at the start")
    print(
        f"  layer: host (x86_64) wheels of the {layer['pins']} pins of requirements.lock"
        f" (sha256 {layer['lock_sha256'][:12]}...) + carrier from the working tree,"
        f" {layer['size_mb']:.0f} MB; Lambda runs the arm64 wheels"
    )
    print(
        f"  {result['runs']} runs of each process (round-robin, after a warm-up round);"
        f" medians; took {result['elapsed_s']:.0f} s\n"
    )


def fmt(value: float | None, width: int = 7) -> str:
    if value is None:
        return " " * (width - 1) + "-"
    return f"{value:{width}.0f}"


def report(result: dict[str, Any]) -> None:
    print_machine(result)
    bare = result["bare_ms"]
    print(
        f"Python start (bare `python3.12 -c pass`, whole process): {bare['no_pyc']['median']:.1f}"
        f" ms; the same with the .pyc prefix: {bare['pyc']['median']:.1f} ms\n"
    )
    functions = result["functions"]

    print("Handler import (Lambda's init, less the runtime's start), ms, median")
    print(f"  {'':<16}{'':>6}  {'no .pyc':^17}  {'with .pyc':^17}  {'no .pyc /':>9}  model SDKs")
    print(
        f"  {'function':<16}{'MB':>6}  {'import':>8} {'process':>8}  {'import':>8} {'process':>8}"
        f"  {'.pyc':>9}  at init"
    )
    for name, f in functions.items():
        a, b = f["no_pyc"], f["pyc"]
        ratio = a["import_ms"]["median"] / b["import_ms"]["median"]
        sdks = ", ".join(f["model_sdks_at_init"]) or "none"
        print(
            f"  {name:<16}{f['memory_mb']:>6}  {fmt(a['import_ms']['median'], 8)}"
            f" {fmt(a['process_minus_bare_ms']['median'], 8)}"
            f"  {fmt(b['import_ms']['median'], 8)} {fmt(b['process_minus_bare_ms']['median'], 8)}"
            f"  {ratio:>8.2f}x  {sdks}"
        )
    print(
        "  import: cumulative time of `import app` (-X importtime); process: the whole process"
        " minus a bare one\n  (import plus teardown, without -X importtime)."
    )
    fastest = min(functions, key=lambda n: functions[n]["no_pyc"]["import_ms"]["median"])
    slowest = max(functions, key=lambda n: functions[n]["no_pyc"]["import_ms"]["median"])
    lo = functions[fastest]["no_pyc"]["import_ms"]["median"]
    hi = functions[slowest]["no_pyc"]["import_ms"]["median"]
    print(f"  slowest / fastest (no .pyc): {slowest} / {fastest} = {hi / lo:.2f}x\n")

    used = [
        c
        for c in COLUMNS
        if any(f[m]["groups_ms"].get(c) for f in functions.values() for m in MODES)
    ]
    unused = [c for c in COLUMNS if c not in used]
    for mode in MODES:
        print(f"Where the import goes, {MODES[mode]}: ms, median per group")
        header = "".join(f"{HEADERS.get(c, c):>9}" for c in used)
        print(f"  {'function':<16}{header}{'import':>9}")
        for name, f in functions.items():
            groups = f[mode]["groups_ms"]
            row = "".join(fmt(groups[c], 9) if groups.get(c) else f"{'-':>9}" for c in used)
            print(f"  {name:<16}{row}{fmt(f[mode]['import_ms']['median'], 9)}")
        print()
    print("  A group: its packages' own time, plus the packages outside any group that it pulled")
    print(
        "  in (botocore: urllib3, dateutil, jmespath; jwt: cryptography; fastapi: opentelemetry)."
    )
    print("  app.py: the handler module's own code (AWS clients it makes, the FastAPI app).")
    if unused:
        print(f"  Not imported at init by any of these functions: {', '.join(unused)}.")
    print("  c_core, c_aws, app.py: Carrier's modules (building their pydantic models included),")
    print("  and the packages in no group that they import (no .pyc, ms, at least 2):", end="")
    direct = False
    for name, f in functions.items():
        packages = sorted(f["carrier_imports_ms"].items(), key=lambda x: -x[1])
        listed = ", ".join(f"{n} {v:.0f}" for n, v in packages if v >= 2)
        if listed:
            print(f"\n    {name:<16}{listed}", end="")
            direct = True
    print("" if direct else " none")
    for group in ("botocore", "xray", "powertools", "pydantic"):
        for mode in MODES:
            shares = [
                f[mode]["groups_ms"].get(group, 0) / f[mode]["import_ms"]["median"]
                for f in functions.values()
            ]
            print(
                f"  {group} share of the import ({MODES[mode]}): median {median(shares):.0%},"
                f" {min(shares):.0%} to {max(shares):.0%} across functions"
            )
    print()

    print("Who imports botocore and aws_xray_sdk: the group's ms (no .pyc), by the module")
    print("outside it that imported each part (at least 1 ms)")
    for name, f in functions.items():
        parts = []
        for group in ("botocore", "xray"):
            importers = f["imported_by_ms"].get(group, {})
            listed = ", ".join(f"{n} {v:.0f}" for n, v in importers.items() if v >= 1)
            if listed:
                parts.append(f"{group}: {listed}")
        print(f"  {name:<16}{'; '.join(parts) or '-'}")
    chains: dict[str, list[str]] = {}
    for name, f in functions.items():
        chain = f["first_import"].get("botocore")
        if chain:
            chains.setdefault(chain, []).append(name)
    print("  The first import of botocore:")
    for chain, names in chains.items():
        print(f"    {', '.join(names)}: {chain}")
    print()

    print("At import, besides importing (one more run per function; sockets blocked)")
    for name, f in functions.items():
        seen = f["at_import"]
        clients = ", ".join(f"{c[0]} ({c[1]:.0f} ms)" for c in seen.get("aws_clients", []))
        notes = [
            f"sockets: {'; '.join(seen['sockets'])}" if seen.get("sockets") else "no socket",
            f"threads: {', '.join(seen['threads'])}" if seen.get("threads") else "no thread",
            f"database: {', '.join(seen['database'])}" if seen.get("database") else "no database",
        ]
        if clients:
            notes.insert(0, f"AWS clients: {clients}")
        if seen.get("error"):
            notes.append(f"ERROR: {seen['error']}")
        print(f"  {name:<16}{'; '.join(notes)}")
    print()

    sdks = result["model_sdks"]
    after = f"after_{MODEL_CALLER}"
    print("Model SDKs imported on their own, ms, median (what a lazy import on the first model")
    print(f"call costs: alone in a fresh process, and after {MODEL_CALLER}'s handler is imported)")
    print(f"  {'':<12}{'alone':^18}  {'after ' + MODEL_CALLER:^18}")
    print(f"  {'sdk':<12}{'no .pyc':>9}{'.pyc':>9}  {'no .pyc':>9}{'.pyc':>9}  pulled in (no .pyc)")
    for sdk, entry in sdks.items():
        alone = entry["alone"]
        late = entry.get(after)
        own = entry["alone"]["no_pyc_groups_ms"]
        extras = {g: v for g, v in own.items() if g not in (sdk, STDLIB) and v >= 1}
        pulled = ", ".join(f"{g} {v:.0f}" for g, v in sorted(extras.items(), key=lambda x: -x[1]))
        print(
            f"  {sdk:<12}{fmt(alone['no_pyc']['median'], 9)}{fmt(alone['pyc']['median'], 9)}"
            f"  {fmt(late['no_pyc']['median'] if late else None, 9)}"
            f"{fmt(late['pyc']['median'] if late else None, 9)}"
            f"  stdlib {own.get(STDLIB, 0):.0f}{', ' + pulled if pulled else ''}"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed rounds (7)")
    parser.add_argument("--functions", help="comma-separated function folders (all)")
    parser.add_argument(
        "--python", help="the Python 3.12 to measure (python3.12 on PATH, else pyenv's 3.12)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
