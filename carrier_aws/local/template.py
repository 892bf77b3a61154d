"""Read the SAM template: functions, their SQS and HTTP events, queues, state machines,
and WebSocket APIs (their routes, and the function each route's integration calls).

Only what the emulator needs is read, and references (`!Ref`, `!GetAtt`, `!Sub`,
`!If`, ...) are kept in their long form (`{"Ref": ...}`, `{"Fn::GetAtt": [...]}`)
to be resolved later, once the emulated resources exist (`Template.resolve`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Pseudo parameters of the emulated account.
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
STACK = "carrier-local"


class TemplateError(ValueError):
    """The template lacks something the emulator needs, or cannot be read."""


class Unresolved(LookupError):
    """A reference the emulator has no value for (a secret, a VPC, ...)."""


# -- YAML with CloudFormation short tags ------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """A safe loader that reads `!Ref X` as `{"Ref": "X"}`, `!Sub s` as `{"Fn::Sub": s}`..."""


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        raise TemplateError(f"cannot read tag !{suffix}")
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _construct)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.load(path.read_text(), Loader=CfnLoader)  # a SafeLoader
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"cannot read {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise TemplateError(f"{path} is not a template (no mapping at the top)")
    return loaded


# -- what the emulator reads -----------------------------------------------------------


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    fifo: bool = False
    content_based_deduplication: bool = False
    visibility_timeout: int = 30
    #: Logical id of the dead-letter queue, and receives before a message goes there.
    dead_letter_queue: str | None = None
    max_receive_count: int | None = None
    #: Other queue properties (MessageRetentionPeriod, DelaySeconds, ...) as written.
    properties: Mapping[str, Any] = field(default_factory=dict)

    #: The QueueName property as written (often a `!Sub`), or None.
    name_value: Any = None

    @property
    def default_name(self) -> str:
        """The name when the template gives none: the logical id (FIFO names end in .fifo)."""
        return f"{self.logical_id}.fifo" if self.fifo else self.logical_id


@dataclass(frozen=True)
class SqsSource:
    """An SQS event source of a function."""

    queue: str  # logical id of the queue
    batch_size: int = 10
    report_batch_item_failures: bool = False
    enabled: bool = True


@dataclass(frozen=True)
class Schedule:
    """An EventBridge schedule of a function (`Type: Schedule`), as `rate(...)`."""

    rate_s: float
    enabled: bool = True


_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}


def _schedule(logical_id: str, props: Mapping[str, Any]) -> Schedule:
    expression = str(props.get("Schedule", ""))
    found = _RATE.match(expression)
    if found is None:
        raise TemplateError(
            f"{logical_id}: the emulator runs rate(...) schedules, not {expression!r}"
        )
    count, unit = int(found.group(1)), found.group(2).removesuffix("s")
    return Schedule(rate_s=count * _UNIT_S[unit], enabled=props.get("Enabled", True) is not False)


@dataclass(frozen=True)
class HttpRoute:
    method: str
    path: str


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_dir: Path
    handler: str
    memory_mb: int = 128
    timeout_s: int = 3
    #: Environment variables as written (values may be references).
    environment: Mapping[str, Any] = field(default_factory=dict)
    sqs_sources: tuple[SqsSource, ...] = ()
    http_routes: tuple[HttpRoute, ...] = ()
    schedules: tuple[Schedule, ...] = ()

    @property
    def module_path(self) -> Path:
        """The handler's file: `app.handler` in `functions/x/` is `functions/x/app.py`."""
        module, _, _ = self.handler.rpartition(".")
        return self.code_dir / (module.replace(".", "/") + ".py")

    @property
    def function_name(self) -> str:
        return self.handler.rpartition(".")[2]

    @property
    def arn(self) -> str:
        return function_arn(self.logical_id)


@dataclass(frozen=True)
class StateMachineSpec:
    logical_id: str
    definition_path: Path
    #: `${Name}` in the definition → a template value (often a reference).
    substitutions: Mapping[str, Any] = field(default_factory=dict)
    #: The Name property as written (often a `!Sub`), or None.
    name_value: Any = None


@dataclass(frozen=True)
class WebSocketApiSpec:
    """An `AWS::ApiGatewayV2::Api` of protocol WEBSOCKET, with its routes and stage."""

    logical_id: str
    #: Route key (`$connect`, `$disconnect`, `$default` or an action) → function logical id.
    routes: Mapping[str, str]
    #: The body field routes are chosen by (`$request.body.action` → "action").
    selection_field: str
    stage_id: str | None = None
    stage_name: str = "$default"

    @property
    def api_id(self) -> str:
        """The emulated API's id, stable across runs (connections stored name it)."""
        return hashlib.sha256(self.logical_id.encode()).hexdigest()[:10]


def function_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{logical_id}"


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _referenced(value: Any) -> list[str]:
    """Every logical id a value names: `!Ref`, `!GetAtt` and `${X}` / `${X.Attr}` in `!Sub`."""
    if isinstance(value, list):
        return [name for item in value for name in _referenced(item)]
    if not isinstance(value, dict):
        return []
    target = _ref_target(value)
    if target is not None:
        return [target]
    if "Fn::Sub" in value:
        arg = value["Fn::Sub"]
        text, names = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        found = [m.split(".")[0] for m in re.findall(r"\$\{([^}!][^}]*)\}", str(text))]
        return [n for n in found if n not in names] + _referenced(list(names.values()))
    return [name for item in value.values() for name in _referenced(item)]


def _ref_target(value: Any) -> str | None:
    """The logical id a `!Ref X` or `!GetAtt X.Attr` points at."""
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            return value["Ref"]
        got = value.get("Fn::GetAtt")
        if isinstance(got, list) and got:
            return str(got[0])
    return None


@dataclass(frozen=True)
class CustomResourceSpec:
    """A custom resource served by one of the template's functions (its ServiceToken)."""

    logical_id: str
    resource_type: str
    function: str
    #: Properties as written (values may be references), ServiceToken included.
    properties: Mapping[str, Any]


def _custom_resources(body: dict[str, Any]) -> dict[str, CustomResourceSpec]:
    found: dict[str, CustomResourceSpec] = {}
    resources = body.get("Resources") or {}
    for logical_id, resource in resources.items():
        kind = str((resource or {}).get("Type", ""))
        if kind != "AWS::CloudFormation::CustomResource" and not kind.startswith("Custom::"):
            continue
        props = resource.get("Properties") or {}
        function = _ref_target(props.get("ServiceToken"))
        if function is None or (resources.get(function) or {}).get("Type") != (
            "AWS::Serverless::Function"
        ):
            raise TemplateError(
                f"{logical_id}: its ServiceToken names no function of this template"
            )
        found[logical_id] = CustomResourceSpec(logical_id, kind, function, dict(props))
    return found


@dataclass
class Template:
    path: Path
    body: dict[str, Any]
    functions: dict[str, FunctionSpec]
    queues: dict[str, QueueSpec]
    state_machines: dict[str, StateMachineSpec]
    websocket_apis: dict[str, WebSocketApiSpec] = field(default_factory=dict)
    custom_resources: dict[str, CustomResourceSpec] = field(default_factory=dict)
    #: Parameter values given for this run (as `sam deploy --parameter-overrides`).
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def parameters(self) -> dict[str, Any]:
        """Parameter values: the overrides, else the defaults (None: no default)."""
        params = self.body.get("Parameters") or {}
        values = {name: (spec or {}).get("Default") for name, spec in params.items()}
        unknown = sorted(self.overrides.keys() - values.keys())
        if unknown:
            raise TemplateError(f"no parameter named {', '.join(unknown)} in {self.path.name}")
        return {**values, **self.overrides}

    def queues_in_creation_order(self) -> list[QueueSpec]:
        """Dead-letter queues before the queues that send to them."""
        ordered: list[QueueSpec] = []

        def visit(queue: QueueSpec, seen: tuple[str, ...]) -> None:
            if queue in ordered:
                return
            if queue.logical_id in seen:
                raise TemplateError(f"queues redrive to each other: {' → '.join(seen)}")
            if queue.dead_letter_queue:
                visit(self.queues[queue.dead_letter_queue], (*seen, queue.logical_id))
            ordered.append(queue)

        for queue in self.queues.values():
            visit(queue, ())
        return ordered

    # -- resolving references ----------------------------------------------------------

    def condition(self, name: str, refs: Callable[[str, str | None], Any]) -> bool:
        conditions = self.body.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"no condition named {name!r}")
        return bool(self._condition_value(conditions[name], refs))

    def _condition_value(self, value: Any, refs: Callable[[str, str | None], Any]) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Condition":
                return self.condition(arg, refs)
            if key == "Fn::Equals":
                left, right = (self.resolve(v, refs) for v in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self._condition_value(arg[0], refs)
            if key == "Fn::And":
                return all(self._condition_value(v, refs) for v in arg)
            if key == "Fn::Or":
                return any(self._condition_value(v, refs) for v in arg)
        return self.resolve(value, refs)

    def resolve(self, value: Any, refs: Callable[[str, str | None], Any]) -> Any:
        """The value with its references replaced.

        `refs(logical_id, attribute)` gives a resource's `!Ref` value (attribute None)
        or `!GetAtt` attribute, raising `Unresolved` when it has none. Parameters take
        their defaults; the pseudo parameters are those of the emulated account.
        """
        if isinstance(value, list):
            return [self.resolve(v, refs) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: self.resolve(v, refs) for k, v in value.items()}
        ((key, arg),) = value.items()
        if key == "Ref":
            return self._ref(arg, None, refs)
        if key == "Fn::GetAtt":
            target, attribute = (arg.split(".", 1) if isinstance(arg, str) else arg)[:2]
            return self._ref(str(target), str(attribute), refs)
        if key == "Fn::Sub":
            text, names = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            local = {n: self.resolve(v, refs) for n, v in names.items()}

            def one(match: re.Match[str]) -> str:
                name = match.group(1)
                if name.startswith("!"):
                    return "${" + name[1:] + "}"
                if name in local:
                    return str(local[name])
                target, _, attribute = name.partition(".")
                return str(self._ref(target, attribute or None, refs))

            return re.sub(r"\$\{([^}]+)\}", one, text)
        if key == "Fn::Join":
            separator, items = arg
            return str(separator).join(str(v) for v in self.resolve(items, refs))
        if key == "Fn::Select":
            index, items = arg
            return self.resolve(items, refs)[int(self.resolve(index, refs))]
        if key == "Fn::Split":
            separator, text = arg
            return str(self.resolve(text, refs)).split(separator)
        if key == "Fn::If":
            name, yes, no = arg
            return self.resolve(yes if self.condition(name, refs) else no, refs)
        if key == "Fn::FindInMap":
            table, first, second = (self.resolve(v, refs) for v in arg)
            return self.body["Mappings"][table][first][second]
        if key.startswith("Fn::") or key == "Condition":
            raise Unresolved(f"the emulator does not evaluate {key}")
        return {key: self.resolve(arg, refs)}

    def _ref(self, name: str, attribute: str | None, refs: Callable[[str, str | None], Any]) -> Any:
        if attribute is None:
            pseudo = {
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT_ID,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackName": STACK,
                "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK}/0",
                "AWS::NoValue": None,
            }
            if name in pseudo:
                return pseudo[name]
            if name in self.parameters:
                default = self.parameters[name]
                if default is None:
                    raise Unresolved(f"parameter {name} has no default")
                return default
        return refs(name, attribute)


def _functions(body: dict[str, Any], root: Path) -> dict[str, FunctionSpec]:
    resources = body.get("Resources") or {}
    defaults = ((body.get("Globals") or {}).get("Function")) or {}
    default_env = ((defaults.get("Environment") or {}).get("Variables")) or {}
    functions: dict[str, FunctionSpec] = {}
    sources: dict[str, list[SqsSource]] = {}
    for resource in resources.values():
        # Event source mappings written as resources of their own.
        if (resource or {}).get("Type") != "AWS::Lambda::EventSourceMapping":
            continue
        props = resource.get("Properties") or {}
        target = _ref_target(props.get("FunctionName"))
        queue = _ref_target(props.get("EventSourceArn"))
        if target and queue and (resources.get(queue) or {}).get("Type") == "AWS::SQS::Queue":
            sources.setdefault(target, []).append(_sqs_source(queue, props))
    for logical_id, resource in resources.items():
        if (resource or {}).get("Type") not in ("AWS::Serverless::Function",):
            continue
        props = {**defaults, **(resource.get("Properties") or {})}
        code_uri, handler = props.get("CodeUri"), props.get("Handler")
        if not isinstance(code_uri, str) or not isinstance(handler, str):
            raise TemplateError(f"function {logical_id} needs a CodeUri folder and a Handler")
        env = {**default_env, **(((props.get("Environment") or {}).get("Variables")) or {})}
        routes: list[HttpRoute] = []
        schedules: list[Schedule] = []
        for event in (props.get("Events") or {}).values():
            kind, event_props = event.get("Type"), event.get("Properties") or {}
            if kind == "SQS":
                queue = _ref_target(event_props.get("Queue"))
                if queue is None:
                    raise TemplateError(f"{logical_id}: SQS event names no queue of this template")
                sources.setdefault(logical_id, []).append(_sqs_source(queue, event_props))
            elif kind == "Schedule":
                schedules.append(_schedule(logical_id, event_props))
            elif kind in ("HttpApi", "Api"):
                routes.append(
                    HttpRoute(
                        str(event_props.get("Method", "ANY")).upper(),
                        str(event_props.get("Path", "$default")),
                    )
                )
        functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_dir=(root / code_uri).resolve(),
            handler=handler,
            memory_mb=_int(props.get("MemorySize"), 128),
            timeout_s=_int(props.get("Timeout"), 3),
            environment=env,
            http_routes=tuple(routes),
            schedules=tuple(schedules),
        )
    for logical_id, found in sources.items():
        if logical_id in functions:
            spec = functions[logical_id]
            functions[logical_id] = FunctionSpec(
                **{**spec.__dict__, "sqs_sources": (*spec.sqs_sources, *found)}
            )
    return functions


def _sqs_source(queue: str, props: Mapping[str, Any]) -> SqsSource:
    return SqsSource(
        queue=queue,
        batch_size=_int(props.get("BatchSize"), 10),
        report_batch_item_failures="ReportBatchItemFailures"
        in (props.get("FunctionResponseTypes") or []),
        enabled=props.get("Enabled", True) is not False,
    )


def _queues(body: dict[str, Any]) -> dict[str, QueueSpec]:
    queues: dict[str, QueueSpec] = {}
    resources = body.get("Resources") or {}
    for logical_id, resource in resources.items():
        if (resource or {}).get("Type") != "AWS::SQS::Queue":
            continue
        props = dict(resource.get("Properties") or {})
        redrive = props.pop("RedrivePolicy", None) or {}
        dead_letter = _ref_target(redrive.get("deadLetterTargetArn"))
        if redrive and dead_letter not in resources:
            raise TemplateError(f"queue {logical_id}: its dead-letter queue is not in the template")
        queues[logical_id] = QueueSpec(
            logical_id=logical_id,
            fifo=_bool(props.pop("FifoQueue", False)),
            content_based_deduplication=_bool(props.pop("ContentBasedDeduplication", False)),
            visibility_timeout=_int(props.pop("VisibilityTimeout", 30), 30),
            dead_letter_queue=dead_letter,
            max_receive_count=_int(redrive.get("maxReceiveCount"), 10) if redrive else None,
            name_value=props.pop("QueueName", None),
            properties=props,
        )
    return queues


def _state_machines(body: dict[str, Any], root: Path) -> dict[str, StateMachineSpec]:
    machines: dict[str, StateMachineSpec] = {}
    for logical_id, resource in (body.get("Resources") or {}).items():
        if (resource or {}).get("Type") != "AWS::Serverless::StateMachine":
            continue
        props = resource.get("Properties") or {}
        uri = props.get("DefinitionUri")
        if not isinstance(uri, str):
            raise TemplateError(
                f"state machine {logical_id}: the emulator reads the definition from a file "
                "(DefinitionUri), as statelint and SAM do"
            )
        machines[logical_id] = StateMachineSpec(
            logical_id=logical_id,
            definition_path=(root / uri).resolve(),
            substitutions=dict(props.get("DefinitionSubstitutions") or {}),
            name_value=props.get("Name"),
        )
    return machines


def _websocket_apis(body: dict[str, Any]) -> dict[str, WebSocketApiSpec]:
    resources = body.get("Resources") or {}

    def of_type(kind: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: (resource.get("Properties") or {})
            for logical_id, resource in resources.items()
            if (resource or {}).get("Type") == kind
        }

    def first(value: Any, kind: str) -> str | None:
        return next(
            (n for n in _referenced(value) if (resources.get(n) or {}).get("Type") == kind), None
        )

    integrations = {
        logical_id: first(props.get("IntegrationUri"), "AWS::Serverless::Function")
        for logical_id, props in of_type("AWS::ApiGatewayV2::Integration").items()
    }
    apis: dict[str, WebSocketApiSpec] = {}
    for logical_id, props in of_type("AWS::ApiGatewayV2::Api").items():
        if props.get("ProtocolType") != "WEBSOCKET":
            continue
        expression = str(props.get("RouteSelectionExpression", ""))
        if not expression.startswith("$request.body."):
            raise TemplateError(
                f"{logical_id}: the emulator routes on `$request.body.<field>` only, "
                f"not {expression!r}"
            )
        routes: dict[str, str] = {}
        for route_id, route in of_type("AWS::ApiGatewayV2::Route").items():
            if _ref_target(route.get("ApiId")) != logical_id:
                continue
            integration = first(route.get("Target"), "AWS::ApiGatewayV2::Integration")
            function = integrations.get(integration or "")
            if function is None:
                raise TemplateError(f"{route_id}: its Target names no Lambda integration")
            routes[str(route.get("RouteKey"))] = function
        stages = [
            (stage_id, str(stage.get("StageName", "$default")))
            for stage_id, stage in of_type("AWS::ApiGatewayV2::Stage").items()
            if _ref_target(stage.get("ApiId")) == logical_id
        ]
        stage_id, stage_name = stages[0] if stages else (None, "$default")
        apis[logical_id] = WebSocketApiSpec(
            logical_id=logical_id,
            routes=routes,
            selection_field=expression.removeprefix("$request.body."),
            stage_id=stage_id,
            stage_name=stage_name,
        )
    return apis


def read_template(path: Path) -> Template:
    """Read a SAM template; paths in it are relative to its folder."""
    path = path.resolve()
    body = load_yaml(path)
    template = Template(
        path=path,
        body=body,
        functions=_functions(body, path.parent),
        queues=_queues(body),
        state_machines=_state_machines(body, path.parent),
        websocket_apis=_websocket_apis(body),
        custom_resources=_custom_resources(body),
    )
    for function in template.functions.values():
        for source in function.sqs_sources:
            if source.queue not in template.queues:
                raise TemplateError(f"{function.logical_id}: no queue {source.queue} in template")
    return template
