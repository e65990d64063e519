"""The critic interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from critique_rl.config import CriticConfig


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


def verdict_word(correct: bool) -> str:
    return "correct" if correct else "wrong"


def default_template(cfg: CriticConfig, task: str) -> str:
    return cfg.template or f"{task}/critique_{cfg.critique_type}.jinja"


def build_critic(cfg: CriticConfig, task: str) -> Critic:
    from critique_rl.critics.rule import RuleCritic

    if cfg.backend == "rule":
        return RuleCritic(default_template(cfg, task))
    raise ValueError(f"critic.backend {cfg.backend!r} is not available; choose 'rule'")
