"""What Carrier stores without a client to answer (a model's output, a plugin's result, an
exception's message) may hold NUL characters or unpaired surrogates, which Postgres refuses,
or NaN, which JSON cannot write: the store writes U+FFFD and null in their place, so the
turn ends as it would have, not stuck or failed."""

from __future__ import annotations

from typing import Any

import pytest

from carrier_core import Character, Runtime
from carrier_core.decision import Decision
from carrier_core.models import HashEmbedding, ModelBadRequest, ModelSet
from carrier_core.models.scripted import ScriptedModel
from carrier_core.plugin import Action, ActionResult, Evaluator, Plugin
from carrier_core.store.store import Store
from carrier_core.turn.context import TurnContext
from carrier_core.turn.run import run_turn
from tests.conftest import make_runtime
from tests.test_turn import message, xml

UNSTORABLE = "a\x00b\ud800c"
STORED = "a\ufffdb\ufffdc"


def _say(ctx: TurnContext, decision: Decision) -> ActionResult:
    data = {UNSTORABLE: 1, "ratio": float("nan")}  # JSON has no NaN: stored as null
    return ActionResult(replies=[UNSTORABLE], text=UNSTORABLE, values={"v": UNSTORABLE}, data=data)


def _raise(ctx: TurnContext, decision: Decision) -> ActionResult:
    raise RuntimeError(f"the service said {UNSTORABLE}")


def _learn(ctx: TurnContext) -> dict[str, Any]:
    return {"learned": UNSTORABLE}


plugin = Plugin(
    name="unstorable",
    actions=[
        Action("SAY_ODD", "Say something odd.", _say),
        Action("BREAK", "Fail with an odd message.", _raise),
    ],
    evaluators=[Evaluator("odd", "Learn something odd.", _learn)],
)


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def runtime(store: Store, model: ScriptedModel) -> Runtime:
    models = ModelSet(small=model, large=model, embedding=HashEmbedding())
    return make_runtime(store, models, reflection_interval=1000)


def _agent(runtime: Runtime) -> Any:
    plugins = ["tests.test_storable_output:plugin"]
    return runtime.register_agent(Character(name="Odd", plugins=plugins))


def test_a_model_error_quoting_a_nul_fails_the_turn_and_the_room_answers_on(
    runtime: Runtime, model: ScriptedModel
) -> None:
    agent = _agent(runtime)
    model.add(ModelBadRequest(f"400 - invalid input {UNSTORABLE!s}"))
    failed = run_turn(runtime, message(agent, "hello"))
    assert failed.status == "failed"
    assert failed.error is not None and STORED in failed.error

    model.add(xml("REPLY", text="back again"))
    after = run_turn(runtime, message(agent, "anyone there?"))
    assert (after.status, after.reply_texts) == ("done", ["back again"])


def test_a_model_reply_with_a_nul_and_a_lone_surrogate_is_said(
    runtime: Runtime, model: ScriptedModel
) -> None:
    agent = _agent(runtime)
    model.add(xml("REPLY", text=UNSTORABLE))
    result = run_turn(runtime, message(agent, "hello"))
    assert (result.status, result.reply_texts) == ("done", [STORED])
    decision = runtime.store.turn(result.turn_id).decision
    assert decision is not None and decision["text"] == STORED


def test_an_action_s_odd_result_and_an_odd_failure_are_kept(
    runtime: Runtime, model: ScriptedModel
) -> None:
    agent = _agent(runtime)
    model.add(xml("SAY_ODD", "BREAK"))
    result = run_turn(runtime, message(agent, "do odd things"))
    assert result.status == "done"
    assert result.reply_texts[0] == STORED
    steps = {s.step: s for s in runtime.store.turn_steps(result.turn_id)}
    said = steps["act:SAY_ODD"]
    assert (said.status, said.detail["text"]) == ("ok", STORED)
    assert said.detail["data"] == {STORED: 1, "ratio": None}
    broke = steps["act:BREAK"]
    assert broke.status == "error" and STORED in broke.detail["error"]
    assert steps["evaluate:odd"].detail["result"] == {"learned": STORED}
