"""The exact input of a model critic: its templates rendered as chat messages or as raw text.

The prompt template receives question, attempt and reference (None when the critic is not
shown it, so one template serves both cases); it is never told the verifier's verdict.
"""

from __future__ import annotations

from typing import Union

from critique_rl.config import CriticConfig
from critique_rl.critics.base import CritiqueRequest
from critique_rl.templates import load_template

Prompt = Union[str, list[dict[str, str]]]     # completions text, or chat messages


def shows_reference(cfg: CriticConfig) -> bool:
    """Whether the critic sees the reference answer: always, except a self-critic told not to."""
    return cfg.backend != "self" or cfg.self_reference


def prompt_template_name(cfg: CriticConfig, task: str) -> str:
    return cfg.prompt_template or f"{task}/critic_prompt_cot.jinja"


class CriticPrompt:
    def __init__(self, cfg: CriticConfig, task: str):
        self.template = load_template(prompt_template_name(cfg, task))
        self.system = load_template(cfg.system_template) if cfg.system_template else None
        self.api = cfg.api
        self.with_reference = shows_reference(cfg)

    def render(self, request: CritiqueRequest) -> Prompt:
        values = dict(question=request.question, attempt=request.attempt,
                      reference=request.reference if self.with_reference else None)
        user = self.template.render(**values)
        system = self.system.render(**values) if self.system else None
        if self.api == "completions":
            return (system or "") + user
        return ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": user}]
