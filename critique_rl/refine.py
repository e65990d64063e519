"""Which groups get critiqued, and which refinements join their group.

Groups are lists of rewards of one prompt's initial samples.

    >>> groups_to_refine([[0, 0], [1, 0], [1, 1]], "all_fail")
    [0]
    >>> groups_to_refine([[0, 0], [1, 0], [1, 1]], "any_fail")
    [0, 1]
"""

from __future__ import annotations

import random
from typing import Sequence

TRIGGERS = ("all_fail", "any_fail", "always")
FALLBACKS = ("random", "first", "none")


def groups_to_refine(group_rewards: Sequence[Sequence[float]], trigger: str) -> list[int]:
    if trigger not in TRIGGERS:
        raise ValueError(f"refine_trigger {trigger!r}; expected one of {', '.join(TRIGGERS)}")
    chosen = []
    for g, rewards in enumerate(group_rewards):
        failed = [r <= 0 for r in rewards]
        if trigger == "always" or (trigger == "all_fail" and all(failed)) or (trigger == "any_fail" and any(failed)):
            chosen.append(g)
    return chosen


def attempts_to_critique(rewards: Sequence[float], trigger: str, limit: int = 0) -> list[int]:
    """Samples of a triggered group to critique: its failures, or all of them under 'always'.

    ``limit`` > 0 keeps the first ``limit`` of them (samples are i.i.d., so the first are a
    random subset): one correct refinement per group is all the mix needs.

    >>> attempts_to_critique([1, 0, 0, 0], "all_fail", limit=2)
    [1, 2]
    """
    chosen = list(range(len(rewards))) if trigger == "always" else [i for i, r in enumerate(rewards) if r <= 0]
    return chosen[:limit] if limit > 0 else chosen


def choose_refinements(rewards: Sequence[float], k: int, fallback: str, rng: random.Random) -> list[int]:
    """Indices of the refinements that join the group: correct ones first (up to k), else the fallback.

    >>> choose_refinements([0, 1, 1], 1, "random", random.Random(0))
    [1]
    >>> choose_refinements([0, 0, 0], 1, "first", random.Random(0))
    [0]
    >>> choose_refinements([0, 0], 1, "none", random.Random(0))
    []
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"refinement_fallback {fallback!r}; expected one of {', '.join(FALLBACKS)}")
    correct = [i for i, r in enumerate(rewards) if r > 0]
    if correct:
        return correct[:k]
    if fallback == "none" or not rewards:
        return []
    if fallback == "first":
        return list(range(min(k, len(rewards))))
    return sorted(rng.sample(range(len(rewards)), min(k, len(rewards))))
