"""Reward functions with TRL's shape: ``fn(prompts, completions, **columns) -> list[float | None]``."""

from __future__ import annotations

from critique_rl.tasks.arithmetic import verify


def arithmetic_reward(prompts: list[str], completions: list[str], answer: list[int], **_: object) -> list[float]:
    """1.0 when the completion's final 'answer N' equals the reference total, else 0.0."""
    return [verify(a, c) for c, a in zip(completions, answer)]
