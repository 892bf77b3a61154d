"""A plugin for the tests: an action that fails, providers that fail or hang, models that
fail or take their time."""

from __future__ import annotations

import threading
import time
from typing import Any

from carrier_core.decision import Decision, render_decision
from carrier_core.models import (
    Generation,
    HashEmbedding,
    ModelError,
    ModelRequest,
    ModelSet,
    OfflineModel,
)
from carrier_core.models import base as models_base
from carrier_core.models.base import Usage
from carrier_core.sdk import (
    Action,
    ActionResult,
    Evaluator,
    ModelProvider,
    Plugin,
    Provider,
    ProviderResult,
    TurnContext,
)


def _explode(ctx: TurnContext, decision: Decision) -> ActionResult:
    raise RuntimeError("the rocket exploded on the pad")


def _broken(ctx: TurnContext) -> ProviderResult:
    raise ConnectionError("weather service unreachable")


def _slow(ctx: TurnContext) -> ProviderResult:
    time.sleep(1.5)
    return ProviderResult("far too late")


def _shout(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(replies=[decision.text.upper()], data={"shouted": True})


plugin = Plugin(
    name="sample",
    actions=[
        Action("EXPLODE", "Launch a rocket.", _explode),
        Action(
            "SHOUT",
            "Say it loudly.",
            _shout,
            similes=("YELL",),
            examples=(("say hi loudly", "HI!"),),
        ),
    ],
    providers=[
        Provider("broken", "Always fails.", _broken),
        Provider("slow", "Never answers in time.", _slow),
    ],
)


def _hang(ctx: TurnContext) -> ProviderResult:
    threading.Event().wait(30)
    return ProviderResult("never")


hanging = Plugin(name="hanging", providers=[Provider("hang", "Hangs.", _hang)])


def _none(ctx: TurnContext) -> ProviderResult:
    return None  # type: ignore[return-value]


def _odd_values(ctx: TurnContext) -> ProviderResult:
    return ProviderResult("odd", {"when": ctx.started_at, "ids": [ctx.turn.id], "nested": {"a": 1}})


def _string_replies(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(replies="hi")  # type: ignore[arg-type]


def _no_result(ctx: TurnContext, decision: Decision) -> ActionResult:
    return None  # type: ignore[return-value]


def _no_detail(ctx: TurnContext) -> dict[str, object]:
    return None  # type: ignore[return-value]


def _junk(ctx: TurnContext) -> ProviderResult:
    return ProviderResult(42, ["not", "a", "dict"])  # type: ignore[arg-type]


def _validate_raises(ctx: TurnContext) -> bool:
    raise RuntimeError("validate blew up")


careless = Plugin(
    name="careless",
    providers=[
        Provider("none", "Returns None.", _none),
        Provider("odd", "Odd values.", _odd_values),
        Provider("junk", "A result of the wrong shape.", _junk),
    ],
    actions=[
        Action("STRINGY", "Replies with a string.", _string_replies),
        Action("VOID", "Returns nothing.", _no_result),
        Action("TOUCHY", "Its validate raises.", _string_replies, validate=_validate_raises),
    ],
    evaluators=[Evaluator("void", "Returns nothing.", _no_detail, always_run=True)],
)


# -- a model set whose text model fails, for retries across Lambdas (tests/test_emulated.py) --

#: Set by the test: the error class name raised (a name the state machine retries) and how
#: many calls fail before the model answers like the offline one. Handlers run in the test's
#: process, so they see what the test sets here.
FLAKY: dict[str, Any] = {"error": "ModelRateLimited", "failures": 0, "calls": 0}
_flaky_lock = threading.Lock()


def flaky_error(name: str) -> type[Exception]:
    """Carrier's model error of that name if there is one, else a `ModelError` so named:
    the class name is the error name Step Functions retries and catches on."""
    known = getattr(models_base, name, None)
    if isinstance(known, type) and issubclass(known, Exception):
        return known
    return type(name, (ModelError,), {})


class FlakyModel:
    name = "flaky"

    def __init__(self) -> None:
        self._offline = OfflineModel()

    def generate(self, request: ModelRequest) -> Generation:
        with _flaky_lock:
            FLAKY["calls"] += 1
            fail = FLAKY["calls"] <= FLAKY["failures"]
        if fail:
            raise flaky_error(FLAKY["error"])(f"flaky model: call {FLAKY['calls']} refused")
        return self._offline.generate(request)


def _flaky_models(character: object) -> ModelSet:
    return ModelSet(small=OfflineModel(), large=FlakyModel(), embedding=HashEmbedding())


flaky = Plugin(name="flaky", models=[ModelProvider("flaky", _flaky_models)])


# -- an evaluator that holds its turn's execution, for stopping it (tests/test_emulated.py) --

#: `entered` is set when the evaluator starts (the turn's reply is stored by then); the
#: evaluator returns once the test sets `release`, or after 10 s. The test clears both first.
STALL = {"entered": threading.Event(), "release": threading.Event()}


def _stall(ctx: TurnContext) -> dict[str, object]:
    STALL["entered"].set()
    return {"released": STALL["release"].wait(10)}


stalling = Plugin(
    name="stalling",
    evaluators=[Evaluator("stall", "Waits until the test releases it.", _stall)],
)


# -- a model set whose text model is slow, for faults while turns wait (tests/test_faults.py) --

#: How long the sluggish text model takes to answer (it then answers as the offline one).
SLUGGISH_S = 0.4


class SluggishModel:
    name = "sluggish"

    def __init__(self) -> None:
        self._offline = OfflineModel()

    def generate(self, request: ModelRequest) -> Generation:
        time.sleep(SLUGGISH_S)
        return self._offline.generate(request)


def _sluggish_models(character: object) -> ModelSet:
    return ModelSet(small=OfflineModel(), large=SluggishModel(), embedding=HashEmbedding())


sluggish = Plugin(name="sluggish", models=[ModelProvider("sluggish", _sluggish_models)])


# -- a plugin that reads the agent's settings and secrets in a turn (tests/test_secrets.py) --

#: The names the `keyed` plugin looks up with `get_setting`.
SETTING_NAMES = ("OPENAI_API_KEY", "X_TOKEN", "SHARED", "MODE", "FLAG", "ENV_ONLY", "NOWHERE")
#: What its provider (decide step) and its action (act step) found, by step. Handlers run in
#: the test's process, under the emulator too, so the test reads what they saw here.
SEEN: dict[str, dict[str, Any]] = {}


def _read_settings(ctx: TurnContext) -> dict[str, Any]:
    return {name: ctx.get_setting(name) for name in SETTING_NAMES}


def _keyed_provider(ctx: TurnContext) -> ProviderResult:
    SEEN["provider"] = _read_settings(ctx)
    return ProviderResult()


def _use_keys(ctx: TurnContext, decision: Decision) -> ActionResult:
    SEEN["action"] = _read_settings(ctx)
    return ActionResult(replies=["keys checked"])


class UseKeysModel:
    """Decides USE_KEYS at every decide step; any other task is the offline model's."""

    name = "use-keys"

    def __init__(self) -> None:
        self._offline = OfflineModel()

    def generate(self, request: ModelRequest) -> Generation:
        if request.task != "decide":
            return self._offline.generate(request)
        text = render_decision(Decision(actions=["USE_KEYS"]))
        return Generation(text=text, usage=Usage(0, 0), model=self.name)


def _keyed_models(character: object) -> ModelSet:
    return ModelSet(small=OfflineModel(), large=UseKeysModel(), embedding=HashEmbedding())


keyed = Plugin(
    name="keyed",
    providers=[Provider("keyed", "Reads the agent's settings.", _keyed_provider)],
    actions=[Action("USE_KEYS", "Use the agent's keys.", _use_keys)],
    models=[ModelProvider("keyed", _keyed_models)],
)


# -- an action that sends a file with its reply (tests/test_attachments.py) --

#: What SEND_CHART attaches to its reply (ElizaOS's Media shape).
CHART: dict[str, Any] = {
    "id": "chart-1",
    "url": "https://example.com/charts/sales.png",
    "title": "Sales by month",
    "source": "charts",
    "contentType": "image/png",
    "description": "A bar chart of sales by month.",
}


def _send_chart(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(replies=["Here is the chart."], attachments=[dict(CHART)])


class SendChartModel:
    """Decides SEND_CHART at every decide step; any other task is the offline model's."""

    name = "send-chart"

    def __init__(self) -> None:
        self._offline = OfflineModel()

    def generate(self, request: ModelRequest) -> Generation:
        if request.task != "decide":
            return self._offline.generate(request)
        text = render_decision(Decision(actions=["SEND_CHART"]))
        return Generation(text=text, usage=Usage(0, 0), model=self.name)


def _charting_models(character: object) -> ModelSet:
    return ModelSet(small=OfflineModel(), large=SendChartModel(), embedding=HashEmbedding())


def _chart_without_words(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(attachments=[dict(CHART)])


def _chart_with_a_numeric_url(ctx: TurnContext, decision: Decision) -> ActionResult:
    return ActionResult(replies=["Here."], attachments=[{**CHART, "url": 7}])


charting = Plugin(
    name="charting",
    actions=[
        Action("SEND_CHART", "Send a chart of the sales.", _send_chart),
        Action("SEND_CHART_SILENTLY", "Attaches without a reply.", _chart_without_words),
        Action("SEND_BAD_CHART", "Attaches a numeric url.", _chart_with_a_numeric_url),
    ],
    models=[ModelProvider("charting", _charting_models)],
)


# -- dynamic and private providers (tests/test_dynamic_providers.py, tests/test_emulated.py) --

FORECAST = "Rain from 3 pm, 14 degrees."


def _weather_now(ctx: TurnContext) -> ProviderResult:
    return ProviderResult(FORECAST, {"forecast": "rain"})


def _diary(ctx: TurnContext) -> ProviderResult:
    return ProviderResult("The owner's dentist appointment is at 4 pm.")


class ForecasterModel:
    """Asks for the weather_now provider until its prompt shows it, then answers from it:
    a model that needs a dynamic provider, with no state of its own (each decide step
    may run in another process)."""

    name = "forecaster"

    def generate(self, request: ModelRequest) -> Generation:
        if "# Weather now\n" in request.prompt:
            forecast = request.prompt.split("# Weather now\n", 1)[1].splitlines()[0]
            decision = Decision(actions=["REPLY"], text=f"Take an umbrella: {forecast}")
        else:
            decision = Decision(actions=["REPLY"], text="Let me look.", providers=["WEATHER_NOW"])
        text = render_decision(decision)
        return Generation(text=text, usage=Usage(1, 1), model=self.name)


def _forecaster_models(character: object) -> ModelSet:
    return ModelSet(small=OfflineModel(), large=ForecasterModel(), embedding=HashEmbedding())


forecaster = Plugin(
    name="forecaster",
    providers=[
        Provider(
            "weather_now",
            "The weather where the user is, now and today.",
            _weather_now,
            "Weather now",
            55,
            dynamic=True,
        ),
        Provider("diary", "The owner's diary.", _diary, "Diary", 56, private=True),
    ],
    models=[ModelProvider("forecaster", _forecaster_models)],
)
