"""The math-verify side of ``critique_rl.math_reward``: ``verify_answer`` and the worker process
that runs it, one ``[gold, prediction]`` JSON line in, one verdict line out.

Only a stated answer is paid for (``extraction``, config ``verifier.extraction``): with
'anchored' (the default) the answer is the last ``\\boxed{}``, else one after an explicit anchor
("the answer is", "Answer:", "final answer ... is", GSM8K's ``#### 42``); 'boxed' takes the last
``\\boxed{}`` only; 'any' also takes a bare number or expression anywhere in the text, which pays
garbage that merely contains the gold.

    >>> verify_answer("\\\\frac{1}{2}", "so the answer is $\\\\boxed{0.5}$")
    True
    >>> verify_answer("18", "3 + 4 = 7 ... \\\\boxed{19}")
    False
    >>> verify_answer("42", "6 * 7 = 42\\n#### 42"), verify_answer("42", "I have 42 apples")
    (True, False)
    >>> verify_answer("42", "I have 42 apples", extraction="any")
    True

math-verify's own timeouts are off here (they use SIGALRM, which raises outside the main
thread); the parent process kills this worker when an item runs past its deadline.

Protocol (``python -m critique_rl.math_verify_worker VERIFIER MEMORY_MB EXTRACTION``): the worker
writes ``ready`` (or ``!message`` and exits) once imports are done, then per request line ``1`` or
``0``, or ``!message`` when the verifier raised. A verifier with an ``extraction`` parameter gets
EXTRACTION.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import sys
import threading
import time
from functools import lru_cache, partial

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from critique_rl.datasets_io import last_boxed

# \boxed{} first, then math-verify's answer anchors; nothing without an anchor.
ANCHORED = (LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),
            ExprExtractionConfig(try_extract_without_anchor=False))
# The same, then any $...$ or plain number or expression, the last one first.
ANYWHERE = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
EXTRACTIONS = ("anchored", "boxed", "any")


def anchor_hashes(text: str) -> str:
    """GSM8K's answer line ``#### X`` (the last one) as an anchor math-verify knows.

    >>> anchor_hashes("2 + 3 = 5\\n#### 5")
    '2 + 3 = 5\\nThe final answer is 5'
    """
    head, hashes, tail = text.rpartition("####")
    return f"{head}The final answer is {tail.lstrip()}" if hashes else text


def extract_answer(prediction: str, extraction: str = "anchored") -> list:
    """The prediction's final answer parsed by math-verify under an extraction policy; [] when none.

    >>> extract_answer("x = 3, so \\\\boxed{4}"), extract_answer("x = 3"), extract_answer("Answer: 3", "boxed")
    ([4, '4'], [], [])
    """
    if extraction not in EXTRACTIONS:
        raise ValueError(f"extraction {extraction!r}: expected one of {', '.join(EXTRACTIONS)}")
    if extraction == "boxed":
        boxed = last_boxed(prediction)
        return [] if boxed is None else parse(f"\\boxed{{{boxed}}}", ANCHORED, parsing_timeout=None)
    return parse(anchor_hashes(prediction), ANCHORED if extraction == "anchored" else ANYWHERE, parsing_timeout=None)


@lru_cache(maxsize=8192)
def parse_gold(gold: str) -> list:
    """Parsed gold answer, cached: every sample of a group shares it. A bare answer is wrapped in
    \\boxed{} so that LaTeX such as \\frac{1}{2} parses without $ delimiters."""
    text = gold if "\\boxed" in gold else f"\\boxed{{{gold}}}"
    return parse(text, ANCHORED, parsing_timeout=None)


def verify_answer(gold: str, prediction: str, extraction: str = "anchored") -> bool:
    """True when the prediction's stated final answer equals the gold answer (gold parsed first)."""
    parsed_gold = parse_gold(gold)
    return verify(parsed_gold, extract_answer(prediction, extraction), timeout_seconds=None)


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


def main(dotted: str, memory_mb: int, extraction: str) -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the "timeout is disabled" notice is intended
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        if memory_mb > 0:
            import resource  # a huge power such as 9^{9^{9^9}} fails with MemoryError, not an OOM-killed machine
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        extract_answer("", extraction)  # an unknown policy fails here, at start-up, not once per item
        fn = load_verifier(dotted)
        if "extraction" in inspect.signature(fn).parameters:
            fn = partial(fn, extraction=extraction)
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
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
