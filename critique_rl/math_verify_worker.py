"""The math-verify side of ``critique_rl.math_reward``: ``verify_answer`` and the worker process
that runs it, one ``[gold, prediction]`` JSON line in, one verdict line out.

math-verify's own timeouts are off here (they use SIGALRM, which raises outside the main
thread); the parent process kills this worker when an item runs past its deadline.

    >>> verify_answer("\\\\frac{1}{2}", "so the answer is $\\\\boxed{0.5}$")
    True
    >>> verify_answer("18", "3 + 4 = 7 ... \\\\boxed{19}")
    False

Protocol (``python -m critique_rl.math_verify_worker VERIFIER MEMORY_MB``): the worker writes
``ready`` (or ``!message`` and exits) once imports are done, then per request line ``1`` or
``0``, or ``!message`` when the verifier raised.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import time
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

# \boxed{} first, then math-verify's other anchors ("answer is", last $...$, plain expressions).
EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


@lru_cache(maxsize=8192)
def parse_gold(gold: str) -> list:
    """Parsed gold answer, cached: every sample of a group shares it. A bare answer is wrapped in
    \\boxed{} so that LaTeX such as \\frac{1}{2} parses without $ delimiters."""
    text = gold if "\\boxed" in gold else f"\\boxed{{{gold}}}"
    return parse(text, EXTRACTION, parsing_timeout=None)


def verify_answer(gold: str, prediction: str) -> bool:
    """True when the prediction's final answer equals the gold answer (gold parsed first)."""
    parsed_gold = parse_gold(gold)
    return verify(parsed_gold, parse(prediction, EXTRACTION, parsing_timeout=None), timeout_seconds=None)


def load_verifier(dotted: str):
    """The function named by ``module:function``."""
    module, _, name = dotted.partition(":")
    if not name:
        raise ValueError(f"verifier {dotted!r}: expected 'module:function'")
    return getattr(importlib.import_module(module), name)


def _exit_with_parent(parent: int) -> None:
    """End this worker when its parent is gone, even while it is stuck in sympy."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def main(dotted: str, memory_mb: int) -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the "timeout is disabled" notice is intended
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        if memory_mb > 0:
            import resource  # a huge power such as 9^{9^{9^9}} fails with MemoryError, not an OOM-killed machine
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        fn = load_verifier(dotted)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which raises it
        print(f"!{type(err).__name__}: {err}", flush=True)
        return
    print("ready", flush=True)
    for line in sys.stdin:
        gold, prediction = json.loads(line)
        try:
            reply = "1" if fn(gold, prediction) else "0"
        except Exception as err:  # noqa: BLE001 - one bad item must not end the worker
            reply = f"!{type(err).__name__}: {err}".replace("\n", " ")
        print(reply, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
