"""The reference critic of the synthetic task (and the template-only critic of any task).

On the synthetic task it walks the attempt's steps against the reference solution, names the
first wrong step with its correct value, and ends with a verdict. On other tasks it has no
steps to check: it renders indicative or ground-truth critiques from the verifier's verdict. The wording comes from the critique template, which
receives: question, attempt, reference, verdict, and ``checked`` (the steps up to the first
error, each with index, text, expected, ok). Indicative and ground-truth templates use a subset.

``critic.noise`` makes it a deliberately flawed critic: that share of its chain-of-thought
critiques on the synthetic task is wrong on purpose, so the effect of critic quality can be
measured. A noised critique either names a wrong step (one the attempt got right, or any step
of a correct attempt) with a wrong value, or names the right step with a wrong value (the correct
result off by 1, 2 or 10, never the attempt's own value); its verdict is kept or, with
``critic.noise_verdict: flip``, inverted. The noised ``checked`` list goes through the same
template. Whether a request is noised, and how, is drawn from a random stream seeded by (seed,
question, attempt): the same request always gets the same critique, in any order, in any
process, before or after a resume; nothing needs checkpointing. Its provenance holds
``noised: true`` and ``noise`` (step or value), and ``metrics()`` counts ``critic/noised``.
"""

from __future__ import annotations

import random
from dataclasses import replace

from critique_rl.critics.base import Critique, CritiqueRequest, verdict_word
from critique_rl.tasks.arithmetic import Problem, StepCheck, check_steps
from critique_rl.templates import load_template

NOISE_OFFSETS = (-10, -2, -1, 1, 2, 10)


def _split_value(step: str) -> tuple[str, str, int | None]:
    """('85+29', '=', 114) of '85+29=114', ('answer', ' ', 114) of 'answer 114'; the value None if unparseable."""
    head, sep, value = step.rpartition("=") if "=" in step else step.rpartition(" ")
    try:
        return head, sep, int(value)
    except ValueError:
        return head, sep, None


def wrong_value(rng: random.Random, expected: str, written: str) -> str:
    """``expected`` (a reference step) with its result off by a small offset, never the written one.

    >>> wrong_value(random.Random(0), "85+29=114", "85+29=104") in {"85+29=%d" % v for v in (112, 113, 115, 116, 124)}
    True
    """
    head, sep, value = _split_value(expected)
    if value is None:
        return expected
    _, _, seen = _split_value(written)
    choices = [value + d for d in NOISE_OFFSETS if value + d >= 0 and value + d != seen]
    return f"{head}{sep}{rng.choice(choices)}"


def noised_checks(rng: random.Random, problem: Problem, checked: list[StepCheck]) -> tuple[list[StepCheck], str]:
    """A wrong version of ``checked`` (check_steps' walk) and how it is wrong: 'step' or 'value'.

    'step' names a step the attempt got right (any step when the attempt is correct) as the wrong
    one, with a wrong value; 'value' names the real first error with a wrong value. An attempt
    wrong at its first step has no right step to name: its noise is always 'value'.
    """
    correct = all(c.ok for c in checked)
    if correct:
        fine = [c.index for c in checked]
    else:
        fine = [c.index for c in checked[:-1]]
    mode = "step" if fine and (correct or rng.random() < 0.5) else "value"
    if mode == "step":
        named = rng.choice(fine)
        steps = [c for c in checked if c.index < named]
        target = checked[named - 1]
    else:
        steps, target = checked[:-1], checked[-1]
    return steps + [replace(target, expected=wrong_value(rng, target.expected, target.text), ok=False)], mode


class RuleCritic:
    def __init__(self, template: str, noise: float = 0.0, noise_verdict: str = "keep", seed: int = 0):
        """``noise``: the share of critiques of the synthetic task's problems noised on purpose (pass
        it for chain-of-thought templates only: the others show no steps); ``noise_verdict`` keep
        or flip; ``seed`` with each request's question and attempt seeds its noise."""
        self.template = load_template(template)
        self.noise = noise
        self.flip = noise_verdict == "flip"
        self.seed = seed
        self.requests = 0
        self.noised = 0

    def variables(self, request: CritiqueRequest) -> dict:
        return self._variables(request)[0]

    def _variables(self, request: CritiqueRequest) -> tuple[dict, dict]:
        """The template's variables and the critique's provenance."""
        provenance: dict = {}
        if isinstance(request.problem, Problem):
            checked = check_steps(request.problem, request.attempt)
            correct = all(c.ok for c in checked)
            if self.noise > 0:
                rng = random.Random(f"{self.seed}/noise/{request.question}/{request.attempt}")
                if rng.random() < self.noise:
                    checked, mode = noised_checks(rng, request.problem, checked)
                    correct = not correct if self.flip else correct
                    provenance = {"noised": True, "noise": mode, "noise_verdict": "flip" if self.flip else "keep"}
        else:
            checked, correct = [], request.correct
        values = dict(question=request.question, attempt=request.attempt, reference=request.reference,
                      verdict=verdict_word(correct), checked=checked)
        return values, provenance

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        self.requests += len(requests)
        out = []
        for request in requests:
            values, provenance = self._variables(request)
            self.noised += bool(provenance)
            out.append(Critique(self.template.render(**values).strip(), values["verdict"], "rule", provenance))
        return out

    def metrics(self) -> dict[str, float]:
        """Critiques written since the previous call (per-step values, like every critic); with
        noise, critic/noised: how many of them were noised."""
        out = {"critic/requests": float(self.requests)}
        if self.noise > 0:
            out["critic/noised"] = float(self.noised)
        self.requests = self.noised = 0
        return out
