"""Decide: compose state, make the one model call of the turn, and settle the decision.

In a group room the should-respond choice is part of this same call (the
model may pick IGNORE); in a direct conversation, or a group room the agent
follows, it always answers. A message the room participation rules leave
unanswered (`participation.py`: a muted room, a message for someone else) makes
no model call at all.
Output that cannot be parsed at all is answered with a safe reply and the
error is recorded, so a confused model never silently drops a message.

A decision that names dynamic (or private) providers this step's state did not have
takes another decide step whose state has them (`Decided.again`), its own actions held
back: what it would say was written without that context. Which providers the next
step adds is kept in the turn's stored state (`ASKED_PROVIDERS`), so the next step may
run in another process. The last step allowed (`max_steps`) never asks again: its
decision stands.

With inline reflection due, the first step's answer also carries what to remember
(`inline_reflection.py`); the decision keeps it, through later steps, for the reflection
evaluator to store after the reply.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from carrier_core.decision import Decision, parse_decision
from carrier_core.events import EventType, emit
from carrier_core.model_output import UnparsableOutput
from carrier_core.models import ModelRateLimited, ModelRequest, ModelRole, ModelUnavailable
from carrier_core.turn import templates
from carrier_core.turn.act import (
    Acted,
    act_key,
    completed,
    recorded_acted,
    run_action,
    step_record,
)
from carrier_core.turn.context import TurnContext, json_safe
from carrier_core.turn.describe import describe_images
from carrier_core.turn.inline_reflection import inline_ask
from carrier_core.turn.participation import always_answers, unanswered_by_rule
from carrier_core.turn.prompt import decide_request, template_values
from carrier_core.turn.state import compose_state
from carrier_core.world import RoomKind

if TYPE_CHECKING:
    from carrier_core.plugin import Action, Plugins
    from carrier_core.runtime import Runtime
    from carrier_core.turn.templates import ShouldRespond

SAFE_REPLY = "Sorry, I lost my train of thought there. Could you say that again?"

#: The most actions one decision runs (the first ones chosen): each is an act step, and in
#: the cloud an iteration of the state machine, whose execution state and history are
#: bounded (256 KiB, 25,000 events). No real answer comes near it.
MAX_ACTIONS = 16

log = logging.getLogger(__name__)

#: The turn state's value recording the dynamic providers the model asked for: `next`,
#: the names the next decide step adds to the default state; `again`, whether this step
#: asked for providers it did not have.
ASKED_PROVIDERS = "asked_providers"


@dataclass(frozen=True)
class Decided:
    decision: Decision
    respond: bool
    #: Which decide step of the turn this was (1 for the first).
    step: int
    #: The model asked for dynamic providers this step did not have: the turn decides
    #: again with them, and this step's actions do not run.
    again: bool = False
    #: The simple reply this step ran itself (`Action.simple`): no act step follows.
    acted: Acted | None = None

    @property
    def chosen(self) -> list[str]:
        """The actions chosen to run: none when the step is silent or decides again."""
        return self.decision.actions if self.respond and not self.again else []

    @property
    def to_run(self) -> list[str]:
        """The actions left for act steps: the chosen ones, unless this step ran its
        simple reply itself."""
        return [] if self.acted is not None else self.chosen


def simple_reply(ctx: TurnContext, decision: Decision, chosen: list[str]) -> Action | None:
    """The action of a simple reply, which the decide step runs itself: the only action
    chosen, flagged `simple` (REPLY), with a decided text to say, needing no approval, and
    valid here. None otherwise: the act steps run what was chosen."""
    if len(chosen) != 1 or not decision.text.strip():
        return None
    action = ctx.plugins.action(chosen[0])
    if action is None or not action.simple or action.needs_approval:
        return None
    # A validate that raises leaves the action to its act step, which records why.
    return action if action.fits(ctx) else None


def asked_providers(decision: Decision, plugins: Plugins) -> tuple[set[str], list[str]]:
    """The dynamic and private providers the decision names (by their own names), and the
    names that are no provider at all. Default providers named are already in the state."""
    wanted: set[str] = set()
    unknown: list[str] = []
    for name in decision.providers:
        provider = plugins.provider(name)
        if provider is None:
            unknown.append(name)
        elif provider.dynamic or provider.private:
            wanted.add(provider.name)
    return wanted, unknown


def settle(decision: Decision, always_answer: bool, plugins: Plugins) -> Decision:
    """Apply the runtime's rules to what the model chose.

    Names and similes become the actions' own names, each once. Text with no
    REPLY is still said (REPLY goes first). Where the agent may stay silent (a group
    room it does not follow), IGNORE wins. Where it always answers (a direct
    conversation, a followed room) IGNORE is overruled, and unless a known action that is
    not silent (NONE, CONTINUE: `Action.silent`) will act, REPLY is added.
    """
    actions: list[str] = []
    for name in decision.actions:
        action = plugins.action(name)
        canonical = action.name if action else name.strip().upper()
        if canonical and canonical not in actions:
            actions.append(canonical)
    if len(actions) > MAX_ACTIONS:
        log.warning("a decision chose %d actions; the first %d run", len(actions), MAX_ACTIONS)
        actions = actions[:MAX_ACTIONS]
    if not always_answer and "IGNORE" in actions:
        return decision.model_copy(update={"actions": ["IGNORE"], "text": ""})
    actions = [a for a in actions if a != "IGNORE"]
    acting = [a for a in actions if (known := plugins.action(a)) and not known.silent]
    if "REPLY" not in actions and (decision.text.strip() or (always_answer and not acting)):
        actions.insert(0, "REPLY")
    if not actions:
        actions = ["IGNORE"]
    return decision.model_copy(update={"actions": actions})


def should_respond(ctx: TurnContext, decide: ModelRequest) -> ShouldRespond | None:
    """In a group room whose character has a `shouldRespondTemplate`: ask the small model
    first whether to answer at all (ElizaOS's separate call). None where there is no
    such template, or not in a group (a direct message is always answered). A misread
    answer answers the message: the decide step may still choose IGNORE."""
    template = ctx.character.templates.get(templates.SHOULD_RESPOND)
    if not template or ctx.room.kind is not RoomKind.GROUP:
        return None
    rendered = templates.render(template, {**template_values(ctx), "providers": decide.prompt})
    templates.report_unknown(ctx.agent_name, templates.SHOULD_RESPOND, rendered.unknown)
    generation = ctx.generate(
        ModelRequest(
            role=ModelRole.SMALL,
            task="should_respond",
            system=decide.system,
            prompt=rendered.text,
            hints=decide.hints,
        )
    )
    try:
        return templates.read_should_respond(generation.text)
    except UnparsableOutput:
        return templates.ShouldRespond(True, "RESPOND", "(unparsable answer: responding)")


def decide(runtime: Runtime, turn_id: uuid.UUID, step: int | None = None) -> Decided:
    """Run decide step number `step` (default: the next one) of a turn.

    Running a step that already has a stored decision returns that decision, so
    a retried invocation neither calls the model again nor counts another step.
    """
    if step is not None and not 1 <= step <= runtime.settings.max_steps:
        raise ValueError(
            f"decide step {step}: a turn's steps are 1 to max_steps, here 1 to"
            f" {runtime.settings.max_steps}"
        )
    ctx = TurnContext.load(runtime, turn_id, "decide", conversation=True)
    number = step or ctx.turn.steps_taken + 1
    asked = ctx.state.values.get(ASKED_PROVIDERS) or {}
    if ctx.turn.decision is not None and ctx.turn.steps_taken >= number:
        stored = Decision.model_validate(ctx.turn.decision)
        respond = stored.actions != ["IGNORE"]
        decided = Decided(stored, respond, ctx.turn.steps_taken, bool(asked.get("again")))
        if simple_reply(ctx, stored, decided.chosen) is not None:
            # Its simple reply was stored with the decision: the same run's result.
            done = runtime.store.turn_step(turn_id, act_key(decided.step, 0))
            decided = replace(decided, acted=recorded_acted(done) if done else None)
        return decided
    if number == 1:
        emit(runtime, ctx.plugins, ctx.turn, EventType.RUN_STARTED)
    names = {ctx.agent_name, ctx.character.username or "", ctx.character.handle}
    skipped = unanswered_by_rule(ctx.room, ctx.message.content.text, names)
    if skipped is not None:
        return _unanswered(ctx, number, skipped)
    ctx.query_embedding()
    describe_images(ctx)  # before the providers, which show the descriptions
    included = frozenset(asked.get("next", ()))
    ctx.state = compose_state(ctx, included)
    ask = inline_ask(ctx, number)
    request, composed = decide_request(ctx, ask)
    status, detail = "ok", {}
    answered = False  # the model answered this step's prompt (no gate kept it silent)
    try:
        gate = should_respond(ctx, request)
        if gate is not None:
            detail["should_respond"] = gate.action
        if gate is not None and not gate.respond:
            decision, model = Decision(thought=gate.reasoning, actions=["IGNORE"]), "(none)"
        else:
            generation = ctx.generate(request)
            model, answered = generation.model, True
            try:
                decision = parse_decision(generation.text)
            except UnparsableOutput as exc:
                decision = Decision(
                    thought="(unparsable model output)", actions=["REPLY"], text=SAFE_REPLY
                )
                status, detail = "error", {**detail, "error": str(exc)}
    except (ModelRateLimited, ModelUnavailable) as exc:
        # The step fails and is tried again (the state machine's Retry): the turn says so.
        runtime.store.mark_retrying(turn_id, f"{type(exc).__name__}: {exc}")
        raise
    decision = settle(decision, always_answers(ctx.room), ctx.plugins)
    decision.reflection = _reflection(ctx, decision, asked=ask is not None and answered)
    respond = decision.actions != ["IGNORE"]
    wanted, unknown = asked_providers(decision, ctx.plugins)
    new = sorted(wanted - included)
    again = bool(new) and respond and number < runtime.settings.max_steps
    ctx.state.values[ASKED_PROVIDERS] = {"next": sorted(included | wanted), "again": again}
    ctx.query_embedding()  # made before the providers ran; stored with the decision
    decided = Decided(decision=decision, respond=respond, step=number, again=again)
    simple = simple_reply(ctx, decision, decided.chosen)
    replied = None  # the simple reply's step, run here: its context and outcome
    said = None
    if simple is not None:
        key, replying = act_key(number, 0), ctx.for_step("act")
        outcome = run_action(replying, key, simple, decision)
        record = step_record(replying, key, outcome.status, outcome.acted, **outcome.detail)
        replied, said = (replying, outcome), (record, outcome.said)
    runtime.store.save_decision(
        turn_id,
        message=ctx.message,
        status="running",
        decision=decision.model_dump(),
        state=json_safe(ctx.state.values),
        steps_taken=number,
        record=ctx.step_record(
            "decide",
            status,
            key=f"decide:{number}",
            actions=decision.actions,
            model=model,
            prompt_chars=len(request.system) + len(request.prompt),
            # The prompt as sent (and how many images went with it), for the turn's
            # history: the console's turn inspector shows it.
            prompt={
                "system": request.system,
                "text": request.prompt,
                **({"images": len(request.images)} if request.images else {}),
            },
            **composed.record(),
            provider_errors=ctx.state.errors,
            **({"providers_asked": new, "decides_again": again} if new else {}),
            **({"unknown_providers": unknown} if unknown else {}),
            **({"reflection_asked": ask.count} if ask else {}),
            **detail,
        ),
        acted=said,
    )
    if replied is None:
        return decided
    replying, outcome = replied
    return replace(decided, acted=completed(replying, outcome.acted))


def _reflection(ctx: TurnContext, decision: Decision, *, asked: bool) -> dict[str, Any] | None:
    """What the decision carries to remember: this step's answer if it was asked ({} if it
    answered none: even an unparsable answer was asked, and is not asked again), else
    what an earlier step of the turn answered, else None."""
    if asked:
        return decision.reflection or {}
    earlier = Decision.model_validate(ctx.turn.decision) if ctx.turn.decision else None
    return earlier.reflection if earlier else None


def _unanswered(ctx: TurnContext, number: int, why: str) -> Decided:
    """Leave the message unanswered by rule: no providers, no model call (its embedding is
    made by the embed step, after the turn)."""
    decision = Decision(thought=f"(not answered: {why})", actions=["IGNORE"])
    ctx.runtime.store.save_decision(
        ctx.turn.id,
        message=ctx.message,
        status="running",
        decision=decision.model_dump(),
        state={},
        steps_taken=number,
        record=ctx.step_record(
            "decide", "ok", key=f"decide:{number}", actions=["IGNORE"], unanswered=why
        ),
    )
    return Decided(decision=decision, respond=False, step=number)
