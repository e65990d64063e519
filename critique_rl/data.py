"""Problems for warm start, RL and evaluation, generated from seeds.

Evaluation splits depend only on the task config (not on the run's seed), so runs with
different seeds are evaluated on the same problems; training never sees an evaluation problem.
A training batch is a pure function of (seed, step), so a resumed run replays no data.
"""

from __future__ import annotations

import random

from critique_rl.config import TaskConfig
from critique_rl.tasks.arithmetic import Problem, sample_problem

EVAL_SEED = 1_000_003


class ProblemSource:
    def __init__(self, cfg: TaskConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        rng = random.Random(EVAL_SEED)
        self.eval_easy = self._distinct(rng, cfg.eval_easy, hard=False, exclude=set())
        self.eval_hard = self._distinct(rng, cfg.eval_hard, hard=True, exclude=set())
        self.held_out = {p.question for p in self.eval_easy + self.eval_hard}

    def _distinct(self, rng: random.Random, n: int, hard: bool, exclude: set[str]) -> list[Problem]:
        seen, out = set(exclude), []
        for _ in range(200 * n + 1000):
            if len(out) == n:
                return out
            p = sample_problem(rng, self.cfg, hard)
            if p.question not in seen:
                seen.add(p.question)
                out.append(p)
        raise ValueError(f"task config has too few distinct {'hard' if hard else 'easy'} problems for {n} evaluation problems")

    def sample(self, rng: random.Random, hard: bool) -> Problem:
        """A training problem of the given difficulty that is not in an evaluation split."""
        while True:
            p = sample_problem(rng, self.cfg, hard)
            if p.question not in self.held_out:
                return p

    def train_batch(self, step: int, size: int) -> list[Problem]:
        """The RL prompts of one step: a ``train_hard_fraction`` share of hard problems."""
        rng = random.Random(f"{self.seed}/train/{step}")
        num_hard = round(size * self.cfg.train_hard_fraction)
        return [self.sample(rng, hard=i < num_hard) for i in range(size)]
