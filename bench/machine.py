"""What the benchmarks share: the machine they ran on, and what they say to the agent."""

from __future__ import annotations

import platform
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
