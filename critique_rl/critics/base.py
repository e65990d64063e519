"""The critic interface every backend implements, and the factory that picks one from the config."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from critique_rl.config import ConfigError, CriticConfig


@dataclass
class CritiqueRequest:
    question: str
    attempt: str
    reference: str           # the reference final answer, as text
    correct: bool            # the verifier's verdict on the attempt
    problem: Any = None      # the task's problem object, for critics that solve it themselves


@dataclass
class Critique:
    text: str
    verdict: str | None      # 'correct' | 'wrong' as stated by the critique, None if it states none
    backend: str
    provenance: dict[str, Any] = field(default_factory=dict)   # cached, fallback, retries, ...


class Critic(Protocol):
    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]: ...

    def metrics(self) -> dict[str, float]: ...


class CriticAuthError(RuntimeError):
    """The critic endpoint rejected the API key (401/403): the run stops, naming the key's variable."""


# The fixed verdict line every critique template asks for, at the start of a line (markdown
# decoration allowed), so an instruction quoted mid-line is not taken for it; 'incorrect' = 'wrong'.
_VERDICT = re.compile(r"^\W*verdict\W*(correct|incorrect|wrong)\b", re.IGNORECASE | re.MULTILINE)


def parse_verdict(text: str) -> str | None:
    """The verdict of the last verdict line, or None when the critique states none.

    >>> parse_verdict("step 2 is off by 10.\\n**Verdict:** Incorrect")
    'wrong'
    >>> parse_verdict('End with one line: "Verdict: correct" or "Verdict: wrong".') is None
    True
    """
    found = _VERDICT.findall(text)
    if not found:
        return None
    return "correct" if found[-1].lower() == "correct" else "wrong"


def verdict_word(correct: bool) -> str:
    return "correct" if correct else "wrong"


def default_template(cfg: CriticConfig, task: str) -> str:
    return cfg.template or f"{task}/critique_{cfg.critique_type}.jinja"


def build_critic(cfg: CriticConfig, task: str, policy: tuple[Any, Any] | None = None,
                 run_dir: Path | None = None) -> Critic:
    """The critic ``critic.backend`` names.

    ``policy`` is the trainer's (model, tokenizer), needed by ``self``; ``run_dir`` holds the
    critique cache unless ``critic.cache_dir`` is set.
    """
    from critique_rl.critics.cache import CritiqueCache
    from critique_rl.critics.generative import GenerativeCritic
    from critique_rl.critics.rule import RuleCritic

    if cfg.backend == "rule":
        return RuleCritic(default_template(cfg, task))
    if cfg.max_concurrency < 1:
        raise ConfigError(f"critic.max_concurrency = {cfg.max_concurrency}; expected >= 1")
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
