"""A plugin for the tests: an action that fails, providers that fail or hang."""

from __future__ import annotations

import time

from carrier_core.decision import Decision
from carrier_core.plugin import Action, ActionResult, Plugin, Provider, ProviderResult
from carrier_core.turn.context import TurnContext


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
        Action("SHOUT", "Say it loudly.", _shout, similes=("YELL",)),
    ],
    providers=[
        Provider("broken", "Always fails.", _broken),
        Provider("slow", "Never answers in time.", _slow),
    ],
)
