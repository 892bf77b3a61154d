"""Token counts and context windows, for composing prompts within a model's budget.
Context windows are declared by the plugins' model providers (`carrier_core.plugin`).

OpenAI models are counted with tiktoken when its encoding can be loaded. tiktoken
downloads encodings on first use (cached under TIKTOKEN_CACHE_DIR); where that fails,
as on a machine without internet, and for every other provider, the count is the
provider-neutral estimate of about four characters a token, rounded up by a margin.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import cache
from typing import Any

from carrier_core.models.base import estimate_tokens
from carrier_core.plugin import model_providers

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_WINDOW = 8_000


def context_window(model: str) -> int:
    """The model's context window as its model provider declares it (by longest name
    prefix), else `DEFAULT_CONTEXT_WINDOW`."""
    windows = {n: w for p in model_providers() for n, w in p.context_windows.items()}
    best = max((name for name in windows if model.startswith(name)), key=len, default="")
    return windows[best] if best else DEFAULT_CONTEXT_WINDOW


#: How long to wait for tiktoken to load an encoding (it may try to download one; a
#: Lambda in a VPC without internet would otherwise hang on the connection).
TIKTOKEN_LOAD_TIMEOUT_S = 3.0


@cache
def _tiktoken_counter(model: str) -> Callable[[str], int] | None:
    try:
        import tiktoken
    except ImportError:
        return None
    loaded: list[Any] = []

    def load() -> None:
        try:
            try:
                loaded.append(tiktoken.encoding_for_model(model))
            except KeyError:
                loaded.append(tiktoken.get_encoding("o200k_base"))
        except Exception as exc:  # no network, no cached encoding file
            log.info("tiktoken encoding unavailable (%s); estimating tokens", type(exc).__name__)

    thread = threading.Thread(target=load, name="carrier-tiktoken", daemon=True)
    thread.start()
    thread.join(TIKTOKEN_LOAD_TIMEOUT_S)
    if not loaded:
        return None
    encoding = loaded[0]
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def is_openai_model(model: str) -> bool:
    return model.startswith(("gpt-", "o1", "o3", "o4", "text-embedding-", "chatgpt-"))


def count_tokens(model: str, text: str) -> int:
    """Tokens in `text` for `model`: exact with tiktoken for OpenAI models when it loads,
    else an estimate that errs high (a prompt must fit, not just nearly)."""
    if not text:
        return 0
    if is_openai_model(model):
        counter = _tiktoken_counter(model)
        if counter is not None:
            return counter(text)
    return estimate_tokens(text) * 5 // 4 + 1
