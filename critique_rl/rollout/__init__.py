"""Rollout engines: turn prompts into sampled completions, token ids included.

Every engine has ``generate(prompts, num_samples, params) -> [prompt][sample] Completion`` and
``sync_weights(step)``, called after each optimizer step so an engine holding its own copy of the
policy (a server, vLLM) samples from the current weights, and ``metrics()``: its counters since the
last call (``rollout/...``), for the step's log.

* ``hf`` (``HFEngine``): transformers ``generate`` on the policy itself.
* ``server`` (``rollout.server.ServerEngine``): an OpenAI-compatible /v1/completions endpoint.
* ``vllm`` (``rollout.vllm_engine.VLLMEngine``): vLLM in the trainer's process; imported only
  when chosen, so vllm need not be installed for the others.

Every engine applies ``rollout.long_prompt`` (``base.LongPrompts``) to prompts longer than the
context leaves them, and reports how many in ``metrics()``.
"""

from __future__ import annotations

from pathlib import Path

from critique_rl.rollout.base import Completion, SamplingParams, rollout_sampling
from critique_rl.rollout.hf import HFEngine

__all__ = ["Completion", "SamplingParams", "HFEngine", "build_engine", "rollout_sampling"]


def build_engine(cfg, model, tokenizer, run_dir: Path):
    """The engine named by ``cfg.engine`` (a RolloutConfig) for the policy ``model`` and its tokenizer.

    ``run_dir`` holds what an engine writes (``rollout_weights/`` of the weight syncs).
    """
    if cfg.engine == "hf":
        return HFEngine(model, tokenizer, cfg.generation_batch_size, cfg.return_logprobs, cfg.max_tokens_per_generate,
                        cfg.long_prompt)
    if cfg.engine == "server":
        from critique_rl.rollout.server import ServerEngine

        return ServerEngine(cfg, model, tokenizer, Path(run_dir))
    if cfg.engine == "vllm":
        from critique_rl.rollout.vllm_engine import VLLMEngine, import_vllm

        import_vllm()           # the install hint before anything else
        return VLLMEngine(cfg, model, tokenizer, Path(run_dir))
    raise ValueError(f"rollout.engine = {cfg.engine!r} is not available; choose hf, server or vllm")
