"""Local transformers models as critics: a model of their own (``hf``) or the policy itself (``self``).

Critic prompts are generated in batches of ``max_concurrency`` with the rollout engine; with
``api: chat`` the tokenizer's chat template turns the messages into text first.
"""

from __future__ import annotations

import time

from critique_rl.config import ConfigError, CriticConfig, ModelConfig
from critique_rl.critics.generative import Generation
from critique_rl.critics.prompting import Prompt
from critique_rl.modeling import load_policy
from critique_rl.rollout import HFEngine, SamplingParams


class HFGenerator:
    def __init__(self, model, tokenizer, cfg: CriticConfig, backend: str, model_name: str):
        if cfg.api == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"critic.api is 'chat' but the tokenizer of the {backend} critic ({model_name}) has "
                              f"no chat template; set critic.api: completions")
        self.backend = backend
        self.model = model_name
        self.tokenizer = tokenizer
        self.engine = HFEngine(model, tokenizer, cfg.max_concurrency)
        self.params = SamplingParams(cfg.max_tokens, cfg.temperature, cfg.top_p, greedy=cfg.temperature == 0)

    def _text(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        start = time.perf_counter()
        outputs = self.engine.generate([self._text(p) for p in prompts], 1, self.params)
        latency = time.perf_counter() - start            # every prompt of the batch waited this long
        return [Generation(c.text, latency, 1, len(c.prompt_ids), len(c.completion_ids)) for [c] in outputs]


def load_hf_generator(cfg: CriticConfig) -> HFGenerator:
    """The ``hf`` critic: ``critic.model`` loaded frozen on ``critic.device``."""
    model, tokenizer = load_policy(cfg.model, ModelConfig(name_or_path=cfg.model, torch_dtype=cfg.torch_dtype,
                                                          device=cfg.device), what="critic.model")
    model.eval().requires_grad_(False)
    return HFGenerator(model, tokenizer, cfg, backend="hf", model_name=cfg.model)
