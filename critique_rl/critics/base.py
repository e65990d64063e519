"""The critic interface every backend implements: requests, critiques and the verdict line."""

from __future__ import annotations

import re
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
