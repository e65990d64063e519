"""Math reward on math-verify, in TRL's reward shape, with a timeout that works anywhere.

math-verify bounds its own work with SIGALRM, which only works in the main thread: called
from a trainer's worker thread it raises, and a caller that swallows errors scores every
sample 0. Here its timeouts are off and verification runs in persistent worker processes
(``critique_rl.math_verify_worker``, started with subprocess, so callers may be threads,
daemonic pool workers or forked children). An item past ``timeout_s`` gets its worker killed
(restarted for the next item), scores 0.0 and is counted in ``stats()``. One call may spend
``step_budget_s``: items still waiting when it is spent score 0.0 unverified, so a batch of
pathological answers costs about the budget, not ``timeout_s`` per answer over the workers.

    >>> math_reward(["Q"], ["... so $x = \\\\boxed{\\\\frac{3}{6}}$"], answer=["\\\\frac{1}{2}"])
    [1.0]
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from critique_rl.config import MathRewardConfig  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)


class _Worker:
    """One verifier process; every call either returns a reply or leaves the process killed."""

    def __init__(self, cfg: MathRewardConfig):
        # The worker sees the caller's sys.path, so a verifier importable here is importable there.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        cmd = [sys.executable, "-m", "critique_rl.math_verify_worker", cfg.verifier, str(cfg.worker_memory_mb),
               cfg.extraction]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._buffer = b""  # stdout is read with os.read on its descriptor, so select() sees every byte
        reply = self._readline(cfg.startup_timeout_s)
        if reply != "ready":
            self.kill()
            why = "did not start in time" if reply is None else reply.lstrip("!") or "it exited (its error is on stderr)"
            raise RuntimeError(f"math verifier process ({cfg.verifier}) failed to start: {why}")

    def ask(self, gold: str, prediction: str, timeout_s: float) -> str | None:
        """The reply line; None on timeout, '' when the process died (either way it is killed)."""
        try:
            self.proc.stdin.write((json.dumps([gold, prediction]) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:  # the process is gone: same as end of file
            reply = ""
        else:
            reply = self._readline(timeout_s)
        if not reply:
            self.kill()
        return reply

    def _readline(self, timeout_s: float) -> str | None:
        """One line from the process; None past the deadline, '' at end of file."""
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):  # a request still buffered for a dead process
                pipe.close()


# _ask's reply for an item not started before the call's budget was spent.
SKIPPED = "skipped"
STATS = ("items", "correct", "timeouts", "errors", "budget_skipped", "starts", "restarts", "seconds")


class MathVerifier:
    """Verifies (gold, prediction) pairs in worker processes, started on first use.

    Safe to call from several threads at once; a forked child starts its own workers.
    """

    def __init__(self, cfg: MathRewardConfig | None = None):
        self.cfg = cfg or MathRewardConfig()
        self._counts: Counter[str] = Counter()
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()  # a fresh one: a fork may copy it held
        # Idle slots: None (no process yet, started when needed) or a worker, dead once killed.
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(self.cfg.workers):
            self._idle.put(None)
        self._pid = os.getpid()

    def _count(self, key: str, amount: float = 1) -> None:
        with self._lock:
            self._counts[key] += amount

    def stats(self) -> dict[str, float]:
        """Totals so far: items scored, correct, timeouts, errors (the verifier raised or its process
        died), budget_skipped (scored 0.0 unverified), process starts, restarts (starts replacing a
        killed process) and seconds spent in ``verify``."""
        with self._lock:
            return {k: self._counts[k] for k in STATS}

    def _ask(self, gold: str, prediction: str, deadline: float) -> str | None:
        """The worker's reply; None on timeout, SKIPPED when the deadline has passed before the start."""
        worker = self._idle.get()
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return SKIPPED
            if worker is None or worker.proc.poll() is not None:
                restart = worker is not None
                worker = _Worker(self.cfg)
                self._count("starts")
                self._count("restarts", restart)
            # Measured before the start: starting a process is not the item's time.
            return worker.ask(gold, prediction, min(self.cfg.timeout_s, remaining))
        finally:
            self._idle.put(worker)

    def _score(self, reply: str | None, prediction: str) -> float:
        self._count("items")
        if reply == SKIPPED:
            self._count("budget_skipped")
            return 0.0
        if reply is None:
            self._count("timeouts")
            logger.warning("math verification timed out; scored 0.0 (prediction starts %r)", prediction[:200])
            return 0.0
        if not reply or reply.startswith("!"):
            self._count("errors")
            logger.warning("math verification failed (%s); scored 0.0", reply[1:] or "verifier process died")
            return 0.0
        if reply == "1":
            self._count("correct")
        return float(reply)

    def verify(self, golds: Sequence[str], predictions: Sequence[str]) -> list[float]:
        """1.0 where the prediction's answer equals the gold answer, else 0.0, in input order."""
        if len(golds) != len(predictions):
            raise ValueError(f"{len(golds)} gold answers for {len(predictions)} predictions")
        if os.getpid() != self._pid:  # forked: the inherited pipes belong to the parent's workers
            self._reset()
        start = time.monotonic()
        deadline = start + self.cfg.step_budget_s if self.cfg.step_budget_s else math.inf
        with ThreadPoolExecutor(self.cfg.workers) as pool:
            replies = list(pool.map(self._ask, map(str, golds), predictions, itertools.repeat(deadline)))
        scores = [self._score(reply, prediction) for reply, prediction in zip(replies, predictions)]
        if SKIPPED in replies:
            logger.warning("math verification budget (verifier.step_budget_s = %gs) spent: %d of %d items scored "
                           "0.0 unverified", self.cfg.step_budget_s, replies.count(SKIPPED), len(replies))
        self._count("seconds", time.monotonic() - start)
        return scores

    def close(self) -> None:
        """Stop the worker processes (they also exit on their own when this process ends)."""
        if os.getpid() != self._pid:
            return
        while not self._idle.empty():
            worker = self._idle.get()
            if worker is not None:
                worker.kill()
        self._reset()

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def make_math_reward(cfg: MathRewardConfig):
    """A TRL-shaped reward ``fn(prompts, completions, answer, **kw) -> list[float]`` with its own workers;
    ``fn.verifier`` holds them (``fn.verifier.stats()``, ``fn.verifier.close()``)."""
    verifier = MathVerifier(cfg)

    def math_reward(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
        return verifier.verify(answer, completions)

    math_reward.verifier = verifier
    return math_reward


DEFAULT_VERIFIER = MathVerifier()


def math_reward(prompts: list[str], completions: list[str], answer: list[str], **_: object) -> list[float]:
    """1.0 when a completion's final answer (\\boxed{} first) equals its gold ``answer``, else 0.0.

    Uses DEFAULT_VERIFIER (default MathRewardConfig); a module-level function, so it pickles into
    pool workers. ``make_math_reward`` builds one with other settings.
    """
    return DEFAULT_VERIFIER.verify(answer, completions)
