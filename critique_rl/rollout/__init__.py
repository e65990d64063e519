"""Rollout engines: turn prompts into sampled completions, token ids included."""

from critique_rl.rollout.base import Completion, SamplingParams
from critique_rl.rollout.hf import HFEngine

__all__ = ["Completion", "SamplingParams", "HFEngine"]
