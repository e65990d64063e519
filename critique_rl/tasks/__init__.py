"""Tasks: where problems come from, how completions are scored, what evaluation runs on.

    arithmetic  the built-in synthetic task (tasks/arithmetic.py), rule-based verifier
    math        real problems from a dataset file (config `data.train`), math-verify reward,
                evaluated on named benchmarks (config `benchmarks`, `critique-rl data list`)

The trainer sees only this interface, so the RL loop is the same for both.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from critique_rl.config import Config


class Task(Protocol):
    name: str       # the folder of its default templates under prompts/

    def train_batch(self, step: int, size: int) -> list[Any]:
        """The RL prompts of one step: a pure function of (seed, step), so a resumed run replays no data."""

    def eval_sets(self) -> dict[str, list[Any]]:
        """Held-out problems by name; metrics are eval/<name>_pass1 and eval/<name>_pass@k."""

    def probe_problems(self, n: int) -> list[Any]:
        """Fixed held-out problems whose greedy completions' entropy is logged as entropy/probe."""

    def reward(self, problems: Sequence[Any], completions: Sequence[str]) -> list[float]:
        """1.0 for a correct final answer, else 0.0, one per (problem, completion) pair."""

    def label(self, problem: Any) -> str:
        """The slice a training problem counts in: accuracy/train_<label>."""

    def reference_solution(self, problem: Any) -> str:
        """A correct solution text, to check the templates render before training."""

    TOKEN_KINDS: tuple[str, ...]    # the token kinds token_kinds names; () when it has none

    def token_kinds(self, problem: Any, token_texts: Sequence[str]) -> list[str] | None:
        """One kind from TOKEN_KINDS per completion token (entropy/kind/*), or None: no kinds."""

    def metrics(self) -> dict[str, float]:
        """The verifier's counters since the last call (one step's), logged with the step."""

    def close(self) -> None:
        """Release what the task holds (verifier processes)."""


def build_task(cfg: Config) -> Task:
    """The task named by ``cfg.task.name``."""
    if cfg.task.name == "math":
        from critique_rl.tasks.math import MathTask

        return MathTask(cfg)
    from critique_rl.tasks.arithmetic import ArithmeticTask

    return ArithmeticTask(cfg.task, cfg.seed)
