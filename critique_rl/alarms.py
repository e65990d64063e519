"""Silent-failure alarms: the failures that leave a run running but learning nothing.

    >>> check_alarms({"reward": 0.0, "completions/clipped_ratio": 0.1, "frac_reward_zero_std": 1.0,
    ...               "entropy": 0.5}, zero_std_streak=1, settings=AlarmSettings())
    ['zero_reward']
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlarmSettings:
    truncation_ratio: float = 0.5      # most completions hit max_completion_length
    zero_std_patience: int = 20        # steps in a row where every group had zero reward variance
    entropy_min: float = 0.0           # collapse below this (0: off)
    entropy_max: float = 0.0           # explosion above this (0: off)


MESSAGES = {
    "zero_reward": "reward is 0 for every sample of this step (verifier, answer format or template?)",
    "truncation": "most completions hit max_completion_length: truncation zeroes their reward",
    "zero_std": "every group has had zero reward variance for {patience} steps: no learning signal",
    "entropy_collapse": "entropy {entropy:.4f} fell below train.entropy_min {low}",
    "entropy_explosion": "entropy {entropy:.4f} rose above train.entropy_max {high}",
}


def check_alarms(metrics: dict, zero_std_streak: int, settings: AlarmSettings) -> list[str]:
    """Names of the alarms this step's metrics raise (see MESSAGES)."""
    raised = []
    if metrics["reward"] <= 0.0:
        raised.append("zero_reward")
    if metrics["completions/clipped_ratio"] > settings.truncation_ratio:
        raised.append("truncation")
    if zero_std_streak >= settings.zero_std_patience:
        raised.append("zero_std")
    if settings.entropy_min > 0 and metrics["entropy"] < settings.entropy_min:
        raised.append("entropy_collapse")
    if settings.entropy_max > 0 and metrics["entropy"] > settings.entropy_max:
        raised.append("entropy_explosion")
    return raised


def describe(name: str, metrics: dict, settings: AlarmSettings) -> str:
    return MESSAGES[name].format(patience=settings.zero_std_patience, entropy=metrics["entropy"],
                                 low=settings.entropy_min, high=settings.entropy_max)
