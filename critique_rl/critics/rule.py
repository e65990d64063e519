"""The reference critic of the synthetic task (and the template-only critic of any task).

On the synthetic task it walks the attempt's steps against the reference solution, names the
first wrong step with its correct value, and ends with a verdict. On other tasks it has no
steps to check: it renders indicative or ground-truth critiques from the verifier's verdict. The wording comes from the critique template, which
receives: question, attempt, reference, verdict, and ``checked`` (the steps up to the first
error, each with index, text, expected, ok). Indicative and ground-truth templates use a subset.
"""

from __future__ import annotations

from critique_rl.critics.base import Critique, CritiqueRequest, verdict_word
from critique_rl.tasks.arithmetic import Problem, check_steps
from critique_rl.templates import load_template


class RuleCritic:
    def __init__(self, template: str):
        self.template = load_template(template)
        self.requests = 0

    def variables(self, request: CritiqueRequest) -> dict:
        if isinstance(request.problem, Problem):
            checked = check_steps(request.problem, request.attempt)
            correct = all(c.ok for c in checked)
        else:
            checked, correct = [], request.correct
        return dict(question=request.question, attempt=request.attempt, reference=request.reference,
                    verdict=verdict_word(correct), checked=checked)

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        self.requests += len(requests)
        out = []
        for request in requests:
            values = self.variables(request)
            out.append(Critique(self.template.render(**values).strip(), values["verdict"], "rule"))
        return out

    def metrics(self) -> dict[str, float]:
        """Critiques written since the previous call (per-step values, like every critic)."""
        out = {"critic/requests": float(self.requests)}
        self.requests = 0
        return out
