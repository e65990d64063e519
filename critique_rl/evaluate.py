"""Held-out evaluation: greedy pass@1 and the unbiased sampled pass@k.

``reward(problems, completions) -> list[float]`` is the task's verifier; a completion counts as
correct when its reward is >= 1.
"""

from __future__ import annotations

from math import comb
from typing import Callable, Sequence

from critique_rl.rollout.base import SamplingParams

Reward = Callable[[Sequence, Sequence[str]], list[float]]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 2)
    0.5
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def greedy_pass1(engine, prompts: Sequence[str], problems: Sequence, reward: Reward, max_new_tokens: int) -> float:
    outs = engine.generate(list(prompts), 1, SamplingParams(max_new_tokens, greedy=True))
    rewards = reward(problems, [o[0].text for o in outs])
    return sum(r >= 1.0 for r in rewards) / max(1, len(problems))


# The final evaluation logs sampled pass@k at each of these k that eval.pass_n samples allow.
PASS_KS = (1, 2, 4, 8, 16)


def pass_ks(n: int, k: int) -> list[int]:
    """The k of the final evaluation: each of PASS_KS up to n, and the configured k.

    >>> pass_ks(8, 4), pass_ks(16, 3), pass_ks(2, 1)
    ([1, 2, 4, 8], [1, 2, 3, 4, 8, 16], [1, 2])
    """
    return sorted({x for x in PASS_KS if x <= n} | {k})


def mean_pass_at_k(n: int, counts: Sequence[int], ks: Sequence[int]) -> dict[int, float]:
    """Mean unbiased pass@k over problems with ``counts`` correct of n samples each, for every k.

    >>> mean_pass_at_k(4, [1, 0], [1, 2, 4])
    {1: 0.125, 2: 0.25, 4: 0.5}
    """
    return {k: sum(pass_at_k(n, c, k) for c in counts) / max(1, len(counts)) for k in ks}


def sampled_pass_at_ks(engine, prompts: Sequence[str], problems: Sequence, reward: Reward, n: int, ks: Sequence[int],
                       params: SamplingParams) -> dict[int, float]:
    """Sampled pass@k for every k in ``ks``, all from the same n samples per problem."""
    outs = engine.generate(list(prompts), n, params)
    rewards = reward([p for p in problems for _ in range(n)], [s.text for o in outs for s in o])
    counts = [sum(r >= 1.0 for r in rewards[i * n:(i + 1) * n]) for i in range(len(problems))]
    return mean_pass_at_k(n, counts, ks)


def sampled_pass_at_k(engine, prompts: Sequence[str], problems: Sequence, reward: Reward, n: int, k: int,
                      params: SamplingParams) -> float:
    return sampled_pass_at_ks(engine, prompts, problems, reward, n, [k], params)[k]
