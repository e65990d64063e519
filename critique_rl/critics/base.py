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


# The verdict line every critique template asks for, at the start of a line (markdown decoration
# allowed), so an instruction quoted mid-line is not taken for it; 'incorrect' = 'wrong'.
_VERDICT_LINE = re.compile(r"^\W*verdict\W*(correct|incorrect|wrong)\b", re.IGNORECASE | re.MULTILINE)
# A verdict anywhere in a line, as the rule critic writes it ("... should be 114. verdict: wrong").
_VERDICT = re.compile(r"\bverdict\W*(correct|incorrect|wrong)\b", re.IGNORECASE)


def _normal(word: str) -> str:
    return "correct" if word.lower() == "correct" else "wrong"


def parse_verdict(text: str) -> str | None:
    """The critique's verdict, or None when it states none.

    The last non-empty line decides when it names one verdict, wherever in the line; a last line
    naming both (a quoted instruction) decides nothing. Otherwise the last line that starts with
    the verdict counts, so a closing remark after it does not hide it.

    >>> parse_verdict("step 2 is off by 10.\\n**Verdict:** Incorrect")
    'wrong'
    >>> parse_verdict("step 1 ok. step 2 wrong, should be 85+29=114. verdict: wrong")
    'wrong'
    >>> parse_verdict('End with one line: "Verdict: correct" or "Verdict: wrong".') is None
    True
    >>> parse_verdict('Verdict: correct\\nEnd with one line: "Verdict: correct" or "Verdict: wrong".')
    'correct'
    >>> parse_verdict('End with one line: "Verdict: correct" or "Verdict: wrong".\\nAll steps hold.') is None
    True
    >>> parse_verdict("Verdict: wrong\\n\\nHope this helps.")
    'wrong'
    """
    lines = [line for line in text.splitlines() if line.strip()]
    last = {_normal(w) for w in _VERDICT.findall(lines[-1])} if lines else set()
    if len(last) == 1:
        return last.pop()
    found = _VERDICT_LINE.findall(text)
    return _normal(found[-1]) if found else None


def verdict_word(correct: bool) -> str:
    return "correct" if correct else "wrong"


def critic_reference(cfg: CriticConfig, task: Any, problem: Any) -> str:
    """What the critic is shown as the reference (``critic.reference``): the final answer, or the task's worked solution."""
    if cfg.reference == "solution":
        return task.reference_solution(problem)
    return str(problem.answer)


def default_template(cfg: CriticConfig, task: str) -> str:
    return cfg.template or f"{task}/critique_{cfg.critique_type}.jinja"
