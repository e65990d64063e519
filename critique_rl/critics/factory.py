"""``build_critic``: the backend ``critic.backend`` names, built from the config.

It lives apart from ``base`` because it imports every backend, and every backend imports
``base``. The model backends' heavy modules (transformers models, the OpenAI client) are
imported only when chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from critique_rl.config import ConfigError, CriticConfig
from critique_rl.critics.base import Critic, default_template
from critique_rl.critics.cache import CritiqueCache
from critique_rl.critics.generative import GenerativeCritic
from critique_rl.critics.rule import RuleCritic


def build_critic(cfg: CriticConfig, task: str, policy: tuple[Any, Any] | None = None,
                 run_dir: Path | None = None, seed: int = 0) -> Critic:
    """The critic ``critic.backend`` names.

    ``policy`` is the trainer's (model, tokenizer), needed by ``self``; ``run_dir`` holds the
    critique cache unless ``critic.cache_dir`` is set; ``seed`` (the run's) seeds the rule
    critic's ``critic.noise``, with each request's content.
    """
    if cfg.backend == "rule":
        noise = cfg.noise if cfg.critique_type == "cot" else 0.0
        return RuleCritic(default_template(cfg, task), noise, cfg.noise_verdict, seed)
    if cfg.backend == "self":
        from critique_rl.critics.hf import HFGenerator

        if policy is None:
            raise ValueError("critic.backend 'self' critiques with the policy: build_critic needs policy=(model, tokenizer) "
                             "(to see its prompt without a policy: critique-rl render --critic-prompt)")
        # Never cached: the same prompt gets a different critique once the weights move.
        return GenerativeCritic(cfg, task, HFGenerator(*policy, cfg, backend="self", model_name="policy"), cache=None)
    if not cfg.model:
        raise ConfigError(f"critic.backend {cfg.backend!r} needs critic.model (the model name or path)")
    if cfg.backend == "openai":
        from critique_rl.critics.openai_api import OpenAIGenerator

        generator = OpenAIGenerator(cfg)
    elif cfg.backend == "hf":
        from critique_rl.critics.hf import load_hf_generator

        generator = load_hf_generator(cfg)
    else:
        raise ValueError(f"critic.backend {cfg.backend!r} is not available; choose 'rule', 'openai', 'hf' or 'self'")
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else run_dir
    cache = CritiqueCache(cache_dir / "critic_cache.sqlite") if cfg.cache and cache_dir is not None else None
    return GenerativeCritic(cfg, task, generator, cache)
