"""The turn's steps and what may follow each: the one description of the turn flow.

The flow runs in two places: `run_steps` in one process (`carrier chat`, `run_turn`) and
the state machine in the cloud (`statemachine/turn.asl.json`, also run locally by the
emulator). Both are checked against this table: `run_steps` refuses a move the table does
not allow, and a test walks the ASL and requires its task states to be exactly these
steps, named the same, run by the function named here, and followed by the steps named
here. A step has one name everywhere: the table's, the ASL state's, the `op` its function
is invoked with, and the name under which the turn's history records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StepName(StrEnum):
    #: The room's runner takes its next turn (or gives up on a turn that kept stopping).
    NEXT = "next"
    #: Compose state, make the model call, settle the decision (`decide.py`).
    DECIDE = "decide"
    #: Run one chosen action (`act.py`); several run one after another.
    ACT = "act"
    #: Wait, holding no compute, for a person to approve the action act paused at.
    APPROVAL = "approval"
    #: Evaluators after the reply, such as reflection (`evaluate.py`).
    EVALUATE = "evaluate"
    #: Embed what the turn stored, off the critical path (`embed.py`, the embed queue).
    EMBED = "embed"
    #: Mark the turn done, or failed with its reason, and tell clients; then take the
    #: room's next turn as `next` does (one invocation for both).
    FINISH = "finish"


@dataclass(frozen=True)
class Step:
    name: StepName
    #: What runs it in the cloud: a template function (`…Function`, invoked with
    #: `op` = the step's name) or a queue (`…Queue`, sent the turn's ids).
    host: str
    #: The steps that may come next (a failure goes to `finish` from any step).
    then: tuple[StepName, ...]


S = StepName

STEPS: dict[StepName, Step] = {
    step.name: step
    for step in (
        Step(S.NEXT, "TurnFinishFunction", (S.DECIDE, S.FINISH)),
        Step(S.DECIDE, "LlmStepFunction", (S.ACT, S.DECIDE, S.EVALUATE)),
        Step(S.ACT, "ActionExecFunction", (S.ACT, S.APPROVAL, S.DECIDE, S.EVALUATE)),
        Step(S.APPROVAL, "ActionExecFunction", (S.ACT,)),
        Step(S.EVALUATE, "LlmStepFunction", (S.EMBED,)),
        Step(S.EMBED, "EmbedQueue", (S.FINISH,)),
        Step(S.FINISH, "TurnFinishFunction", (S.DECIDE, S.FINISH)),
    )
}


class FlowError(RuntimeError):
    """A move between steps that the table does not allow: the local loop and the table
    (and so the state machine) disagree."""


def check_move(here: StepName, there: StepName) -> StepName:
    """`there`, if the table lets it follow `here`; a failure may end any step."""
    if there is S.FINISH or there in STEPS[here].then:
        return there
    raise FlowError(f"step {str(here)!r} may not be followed by {str(there)!r}")
