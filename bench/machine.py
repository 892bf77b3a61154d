"""What the benchmarks share: the machine they ran on, what they say to the agent, and how
they sum up timings."""

from __future__ import annotations

import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

#: Messages the benchmarks send, in turn.
TEXTS = (
    "My name is Grace",
    "I like sailing",
    "I live in Lisbon",
    "I had a long day at work",
    "What do you remember about me?",
    "Tell me something about computing history",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def percentile(values: Sequence[float], pct: int) -> float:
    """The `pct`th percentile (inclusive method); nan for no values."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")
