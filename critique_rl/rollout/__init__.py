"""Rollout engines: turn prompts into sampled completions, token ids included.

Every engine has ``generate(prompts, num_samples, params) -> [prompt][sample] Completion`` and
``sync_weights(step)``, called after each optimizer step so an engine holding its own copy of the
policy (a server, vLLM) samples from the current weights.
"""

from __future__ import annotations

from pathlib import Path

from critique_rl.rollout.base import Completion, SamplingParams
from critique_rl.rollout.hf import HFEngine

__all__ = ["Completion", "SamplingParams", "HFEngine", "build_engine"]


def build_engine(cfg, model, tokenizer, run_dir: Path):
    """The engine named by ``cfg.engine`` (a RolloutConfig) for the policy ``model``."""
    if cfg.engine == "hf":
        return HFEngine(model, tokenizer, cfg.generation_batch_size)
    raise ValueError(f"rollout.engine = {cfg.engine!r} is not available")
