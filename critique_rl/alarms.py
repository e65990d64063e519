"""Silent-failure alarms: the failures that leave a run running but learning nothing.

    >>> check_alarms({"reward": 0.0, "completions/clipped_ratio": 0.1, "frac_reward_zero_std": 1.0,
    ...               "entropy": 0.5}, zero_std_streak=1, settings=AlarmSettings())
    ['zero_reward']
    >>> settings = AlarmSettings(fallback_share=0.5, fallback_patience=2)
    >>> fallback_streak({"critic/fallbacks": 7.0, "refine/critiques": 8.0}, 1, settings)
    2
    >>> fallback_streak({"refine/critiques": 0.0}, 1, settings)   # no critiques: no evidence either way
    1
    >>> check_alarms({"reward": 0.5, "completions/clipped_ratio": 0.1, "entropy": 0.5}, 0, settings, fallback_streak=2)
    ['critic_fallbacks']
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlarmSettings:
    truncation_ratio: float = 0.5      # most completions hit max_completion_length
    zero_std_patience: int = 20        # steps in a row where every group had zero reward variance
    entropy_min: float = 0.0           # collapse below this (0: off)
    entropy_max: float = 0.0           # explosion above this (0: off)
    fallback_share: float = 0.5        # a step whose critiques fell back more than this ...
    fallback_patience: int = 5         # ... this many steps in a row


MESSAGES = {
    "zero_reward": "reward is 0 for every sample of this step (verifier, answer format or template?)",
    "truncation": "most completions hit max_completion_length: truncation zeroes their reward",
    "zero_std": "every group has had zero reward variance for {patience} steps: no learning signal",
    "entropy_collapse": "entropy {entropy:.4f} fell below train.entropy_min {low}",
    "entropy_explosion": "entropy {entropy:.4f} rose above train.entropy_max {high}",
    "critic_fallbacks": "{fallbacks}/{critiques} critiques fell back, more than critic.alarm_fallback_share {share:g} for "
                        "{fallback_patience} steps in a row: is the critic up? (reasons: critique_fallback in samples.jsonl)",
}


def fallback_streak(metrics: dict, streak: int, settings: AlarmSettings) -> int:
    """Steps in a row whose share of fallback critiques exceeded ``settings.fallback_share``."""
    critiques = metrics.get("refine/critiques", 0.0)
    if not critiques or "critic/fallbacks" not in metrics:      # no critiques, or a critic that never falls back
        return streak
    return streak + 1 if metrics["critic/fallbacks"] / critiques > settings.fallback_share else 0


def check_alarms(metrics: dict, zero_std_streak: int, settings: AlarmSettings, fallback_streak: int = 0) -> list[str]:
    """Names of the alarms this step's metrics raise (see MESSAGES)."""
    raised = []
    if metrics["reward"] <= 0.0:
        raised.append("zero_reward")
    if metrics["completions/clipped_ratio"] > settings.truncation_ratio:
        raised.append("truncation")
    if zero_std_streak >= settings.zero_std_patience:
        raised.append("zero_std")
    entropy = metrics.get("entropy")       # absent from a step with nothing to train (refine.mode async)
    if settings.entropy_min > 0 and entropy is not None and entropy < settings.entropy_min:
        raised.append("entropy_collapse")
    if settings.entropy_max > 0 and entropy is not None and entropy > settings.entropy_max:
        raised.append("entropy_explosion")
    if fallback_streak >= settings.fallback_patience:
        raised.append("critic_fallbacks")
    return raised


def describe(name: str, metrics: dict, settings: AlarmSettings) -> str:
    return MESSAGES[name].format(patience=settings.zero_std_patience, entropy=metrics.get("entropy", float("nan")),
                                 low=settings.entropy_min, high=settings.entropy_max,
                                 fallbacks=int(metrics.get("critic/fallbacks", 0)),
                                 critiques=int(metrics.get("refine/critiques", 0)),
                                 share=settings.fallback_share, fallback_patience=settings.fallback_patience)
