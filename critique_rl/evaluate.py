"""Held-out evaluation: greedy pass@1 and the unbiased sampled pass@k."""

from __future__ import annotations

from math import comb
from typing import Sequence

from critique_rl.rollout.base import SamplingParams
from critique_rl.tasks.arithmetic import Problem, verify
from critique_rl.templates import PromptTemplate


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 2)
    0.5
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def greedy_pass1(engine, template: PromptTemplate, problems: Sequence[Problem], max_new_tokens: int) -> float:
    prompts = [template.render(question=p.question) for p in problems]
    outs = engine.generate(prompts, 1, SamplingParams(max_new_tokens, greedy=True))
    return sum(verify(p.answer, o[0].text) for p, o in zip(problems, outs)) / max(1, len(problems))


def sampled_pass_at_k(engine, template: PromptTemplate, problems: Sequence[Problem], n: int, k: int,
                      params: SamplingParams) -> float:
    prompts = [template.render(question=p.question) for p in problems]
    outs = engine.generate(prompts, n, params)
    scores = [pass_at_k(n, int(sum(verify(p.answer, s.text) for s in o)), k) for p, o in zip(problems, outs)]
    return sum(scores) / max(1, len(scores))
