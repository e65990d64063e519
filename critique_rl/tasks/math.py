"""Real math: problems from a dataset file or hub dataset, scored by math-verify.

Training prompts go through the data in a fresh seeded order each epoch; the batch of a step is
a pure function of (seed, step). Evaluation sets are the benchmarks named in
``benchmarks.benchmarks`` (GSM8K, MATH-500, AIME24, AMC23, Minerva, OlympiadBench: pulled copies
or the hub, see benchmark_data), each its own metric: eval/math500_pass1, ...
"""

from __future__ import annotations

import random

from critique_rl.benchmark_data import benchmark_names, load_benchmark
from critique_rl.config import Config
from critique_rl.datasets_io import DatasetError, Example, load_examples
from critique_rl.math_reward import MathVerifier


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The order of the examples in one epoch: a permutation fixed by (seed, epoch).

    >>> sorted(epoch_order(5, seed=0, epoch=3)) == list(range(5))
    True
    """
    order = list(range(size))
    random.Random(f"{seed}/epoch/{epoch}").shuffle(order)
    return order


class MathTask:
    name = "math"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        spec = cfg.data.train
        if not spec.path:
            raise DatasetError("task.name = math needs data.train.path: a .jsonl/.json/.parquet file or a hub dataset id")
        self.train = load_examples(spec)
        if not self.train:
            raise DatasetError(f"data.train {spec.path}: no usable examples")
        # Loaded now, not at the first evaluation: a benchmark neither pulled nor reachable stops the
        # run before its first step.
        b = cfg.benchmarks
        self._eval_sets = {name: load_benchmark(name, b.data_root, b.limit) for name in benchmark_names(b.benchmarks)}
        self.verifier = MathVerifier(cfg.verifier)
        self._logged = self.verifier.stats()

    def train_batch(self, step: int, size: int) -> list[Example]:
        n, orders = len(self.train), {}
        for p in range(step * size, (step + 1) * size):
            orders.setdefault(p // n, epoch_order(n, self.cfg.seed, p // n))
        return [self.train[orders[p // n][p % n]] for p in range(step * size, (step + 1) * size)]

    def eval_sets(self) -> dict[str, list[Example]]:
        return self._eval_sets

    def probe_problems(self, n: int) -> list[Example]:
        pool = [ex for examples in self.eval_sets().values() for ex in examples] or self.train
        return pool[:n]

    def reward(self, problems, completions) -> list[float]:
        return self.verifier.verify([p.answer for p in problems], list(completions))

    def label(self, problem: Example) -> str:
        return "all"

    TOKEN_KINDS: tuple[str, ...] = ()

    def token_kinds(self, problem: Example, token_texts) -> None:
        return None     # free-form solutions: no token kinds, no entropy/kind/* metrics

    def reference_solution(self, problem: Example) -> str:
        return str(problem.extra.get(self.cfg.data.train.solution_field) or f"\\boxed{{{problem.answer}}}")

    def metrics(self) -> dict[str, float]:
        """verifier/<counter>: items, correct, timeouts, errors, budget_skipped, starts, restarts and
        seconds of the verification since the last call (not running totals)."""
        now = self.verifier.stats()
        out = {f"verifier/{k}": now[k] - self._logged[k] for k in now}
        self._logged = now
        return out

    def close(self) -> None:
        self.verifier.close()
