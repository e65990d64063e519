"""How well a model critic critiques the synthetic task, against the rule critic.

Held-out attempts: for each of the first N easy and N hard evaluation problems, a
``wrong_attempt`` (seeded, the same for every critic) and the correct solution. Each critique is
generated once (no verdict retries, no fallback: the model's own output) and scored:

    verdict_accuracy            its parsed verdict equals the truth (the rule critic's verdict,
                                which is the verifier's for these attempts); no verdict is a miss
    no_verdict                  share of critiques stating no verdict
    first_wrong_step_accuracy   wrong attempts: it names the rule critic's first wrong step
                                ("step K wrong"), and no earlier one
    correction_accuracy         wrong attempts: that step and the value it should be ("should be
                                65+73=138") both as the rule critic says
    exact_match                 the critique is the rule critic's, character for character

``critique-rl critic-quality --critic-model DIR`` (and the end of ``warmstart-critic``) prints
them as one JSON line, also per split (``easy/...``, ``hard/...``).
"""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

from critique_rl.config import Config, CriticConfig
from critique_rl.critics.base import CritiqueRequest, default_template, parse_verdict
from critique_rl.critics.generative import Generator
from critique_rl.critics.prompting import CriticPrompt
from critique_rl.critics.rule import RuleCritic
from critique_rl.tasks.arithmetic import ProblemSource, verify, wrong_attempt

# "step 2 wrong, should be 65+73=138." -> (2, "65+73=138"); the rule critic's wording
# (prompts/arithmetic/critique_cot.jinja), read leniently ("Step 2 is wrong").
_FIRST_WRONG = re.compile(r"\bstep\s+(\d+)\s+(?:is\s+)?(?:wrong|incorrect)\b(?:\s*,?\s*(?:it\s+)?should\s+be\s+(.*?)\.?(?=\s+verdict\b|\s*$|\.\s))?",
                          re.IGNORECASE)


def first_wrong_step(text: str) -> tuple[int | None, str | None]:
    """The first step a critique calls wrong and what it says that step should be (None when unsaid).

    >>> first_wrong_step("step 1 ok. step 2 wrong, should be 65+73=138. verdict: wrong")
    (2, '65+73=138')
    >>> first_wrong_step("step 1 wrong, should be answer 57. verdict: wrong")
    (1, 'answer 57')
    >>> first_wrong_step("step 1 ok. step 2 ok. verdict: correct")
    (None, None)
    """
    found = _FIRST_WRONG.search(text)
    if not found:
        return None, None
    return int(found[1]), (found[2].strip() if found[2] else None)


def held_out_requests(cfg: Config, problems: int) -> list[tuple[str, CritiqueRequest]]:
    """(split, request) for a wrong attempt and the correct solution of the first ``problems`` easy
    and hard evaluation problems; the reference as the trainer shows it (``critic.reference``)."""
    source = ProblemSource(cfg.task, cfg.seed)
    rng = random.Random("critic_quality")           # the same attempts for every critic and seed
    out = []
    for split, chosen in (("easy", source.eval_easy[:problems]), ("hard", source.eval_hard[:problems])):
        for p in chosen:
            reference = p.solution if cfg.critic.reference == "solution" else str(p.answer)
            for attempt in (wrong_attempt(rng, p), p.solution):
                out.append((split, CritiqueRequest(p.question, attempt, reference, verify(p.answer, attempt) > 0, p)))
    return out


def score_critiques(requests: list[CritiqueRequest], texts: list[str | None], task: str = "arithmetic") -> dict[str, float]:
    """The metrics of the module docstring for model critiques ``texts`` of ``requests``."""
    rule = RuleCritic(default_template(CriticConfig(), task))
    n = len(requests)
    verdicts = hits = no_verdict = wrong = step_hits = corrections = exact = 0
    for request, text in zip(requests, texts, strict=True):
        text = (text or "").strip()
        [truth] = rule.critique([request])
        verdict = parse_verdict(text) if text else None
        no_verdict += verdict is None
        verdicts += verdict == truth.verdict
        exact += text == truth.text
        if truth.verdict == "wrong":
            wrong += 1
            step, value = first_wrong_step(text)
            want_step, want_value = first_wrong_step(truth.text)
            step_hits += step == want_step
            corrections += step == want_step and value == want_value
    hits = verdicts
    return {"critiques": n, "verdict_accuracy": hits / n if n else float("nan"),
            "no_verdict": no_verdict / n if n else float("nan"),
            "first_wrong_step_accuracy": step_hits / wrong if wrong else float("nan"),
            "correction_accuracy": corrections / wrong if wrong else float("nan"),
            "exact_match": exact / n if n else float("nan")}


def critic_quality(cfg: Config, generator: Generator, critic: CriticConfig | None = None, problems: int | None = None) -> dict:
    """Score ``generator``'s critiques of the held-out attempts, prompted as ``critic`` (default
    ``cfg.critic``) prompts; overall and per split."""
    critic = critic or cfg.critic
    problems = cfg.critic_model.eval_problems if problems is None else problems
    labelled = held_out_requests(cfg, problems)
    requests = [r for _, r in labelled]
    prompt = CriticPrompt(critic, cfg.task.name)
    texts = [g.text for g in generator.generate([prompt.render(r) for r in requests])]
    result = {"api": critic.api, "temperature": critic.temperature, "max_tokens": critic.max_tokens,
              "problems_per_split": problems, **score_critiques(requests, texts, cfg.task.name)}
    for split in ("easy", "hard"):
        chosen = [i for i, (s, _) in enumerate(labelled) if s == split]
        scores = score_critiques([requests[i] for i in chosen], [texts[i] for i in chosen], cfg.task.name)
        result.update({f"{split}/{k}": v for k, v in scores.items() if k != "critiques"})
    return result


def model_critic_config(cfg: Config, model_dir: str | Path) -> CriticConfig:
    """``cfg.critic`` pointed at the model in ``model_dir``: as a model of its own (``hf``), or for
    ``critic.backend self`` (a self-critic policy's warm start) with self's prompt (``self_reference``)."""
    backend = "self" if cfg.critic.backend == "self" else "hf"
    return dataclasses.replace(cfg.critic, backend=backend, model=str(model_dir))


def critic_model_quality(cfg: Config, model_dir: str | Path, problems: int | None = None) -> dict:
    """``critic_quality`` of the model in ``model_dir`` loaded as the ``hf`` backend loads it."""
    from critique_rl.critics.hf import load_hf_generator

    critic = model_critic_config(cfg, model_dir)
    generator = load_hf_generator(dataclasses.replace(critic, backend="hf"))
    generator.backend = critic.backend
    return {"model": str(model_dir), **critic_quality(cfg, generator, critic, problems)}


def quality_critic(cfg: Config) -> Config:
    """``cfg`` with critic settings a critic model can be measured with: its own when critic.backend
    is hf or self, else those of ``pipeline --critic model`` (``warmstart.CRITIC_MODEL_OVERRIDES``)."""
    from critique_rl.config import apply_overrides
    from critique_rl.warmstart import CRITIC_MODEL_OVERRIDES

    if cfg.critic.backend in ("hf", "self"):
        return cfg
    return apply_overrides(dataclasses.replace(cfg, critic=dataclasses.replace(cfg.critic)), list(CRITIC_MODEL_OVERRIDES))
