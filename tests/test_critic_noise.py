"""critic.noise: the rule critic's deliberately wrong critiques, their share, their wrongness, their verdict."""

import math
import random

import pytest

from critique_rl.config import ConfigError, TaskConfig, load_config
from critique_rl.critics import CritiqueRequest, build_critic
from critique_rl.critics.rule import RuleCritic
from critique_rl.tasks.arithmetic import check_steps, sample_problem, wrong_attempt

COT = "arithmetic/critique_cot.jinja"


def requests(n: int, seed: int = 0, correct_share: float = 0.2) -> list[CritiqueRequest]:
    """``n`` distinct requests: wrong attempts of easy and hard problems, and some correct solutions."""
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        p = sample_problem(rng, TaskConfig(), hard=rng.random() < 0.5)
        correct = rng.random() < correct_share
        attempt = p.solution if correct else wrong_attempt(rng, p)
        if (p.question, attempt) not in seen:
            seen.add((p.question, attempt))
            out.append(CritiqueRequest(p.question, attempt, str(p.answer), correct, p))
    return out


@pytest.mark.parametrize("rate", [0.1, 0.3, 1.0])
def test_the_noised_share_is_the_configured_rate(rate):
    reqs = requests(2000)
    critic = RuleCritic(COT, noise=rate, seed=3)
    noised = sum(bool(c.provenance.get("noised")) for c in critic.critique(reqs))
    sigma = math.sqrt(len(reqs) * rate * (1 - rate))
    assert abs(noised - rate * len(reqs)) <= 4 * sigma
    assert critic.metrics() == {"critic/requests": 2000.0, "critic/noised": float(noised)}
    assert critic.metrics() == {"critic/requests": 0.0, "critic/noised": 0.0}      # per step: reset


def test_noised_critiques_name_a_wrong_step_or_a_wrong_value():
    reqs = requests(600)
    noisy, clean = RuleCritic(COT, noise=1.0, seed=0), RuleCritic(COT)
    modes = set()
    for r, c, truth in zip(reqs, noisy.critique(reqs), clean.critique(reqs)):
        assert c.provenance["noised"] is True and c.verdict == truth.verdict      # keep: the true verdict
        assert c.text != truth.text and c.text.endswith(f"verdict: {truth.verdict}")
        checked = noisy.variables(r)["checked"]
        real = check_steps(r.problem, r.attempt)
        named = checked[-1]
        assert not named.ok and all(s.ok for s in checked[:-1])
        assert named.expected != r.problem.reference_steps[named.index - 1]      # the value it states is wrong
        assert named.expected != named.text                                       # and not what the attempt wrote
        if c.provenance["noise"] == "step":      # a step the attempt got right (any, when it is correct)
            assert real[named.index - 1].ok and (r.correct or named.index < real[-1].index)
        else:                                    # the real first error, with a wrong value
            assert not r.correct and named.index == real[-1].index
        modes.add(c.provenance["noise"])
    assert modes == {"step", "value"}


def test_flip_inverts_the_verdict_of_noised_critiques_only():
    reqs = requests(400)
    flip = RuleCritic(COT, noise=0.5, noise_verdict="flip", seed=1)
    for r, c in zip(reqs, flip.critique(reqs)):
        truth = "correct" if r.correct else "wrong"
        expected = ({"correct": "wrong", "wrong": "correct"}[truth] if c.provenance.get("noised") else truth)
        assert c.verdict == expected and c.text.endswith(f"verdict: {expected}")
        assert c.provenance.get("noise_verdict", "flip") == "flip"


def test_noise_is_a_function_of_seed_and_request_so_a_resume_replays_it():
    # A resumed trainer builds a fresh critic and sees only the later steps' requests (after its
    # own start-up check): each critique must not depend on what the critic wrote before.
    reqs = requests(300)
    first = RuleCritic(COT, noise=0.4, seed=7).critique(reqs)
    fresh = RuleCritic(COT, noise=0.4, seed=7)
    fresh.critique(requests(5, seed=99))
    later = fresh.critique(reqs[150:][::-1])[::-1]
    assert [(c.text, c.verdict, c.provenance) for c in first[150:]] == [(c.text, c.verdict, c.provenance) for c in later]
    other = RuleCritic(COT, noise=0.4, seed=8).critique(reqs)
    assert [c.text for c in other] != [c.text for c in first]        # the seed matters


def test_config_fields_and_the_factory():
    cfg = load_config("tiny", ["critic.noise=0.25", "critic.noise_verdict=flip"])
    critic = build_critic(cfg.critic, cfg.task.name, seed=5)
    assert (critic.noise, critic.flip, critic.seed) == (0.25, True, 5)
    assert "critic/noised" not in build_critic(load_config("tiny").critic, "arithmetic").metrics()
    with pytest.raises(ConfigError, match="critic.noise"):
        load_config("tiny", ["critic.noise=1.5"])
    with pytest.raises(ConfigError, match="rule critic only"):
        load_config("tiny", ["critic.noise=0.2", "critic.backend=openai", "critic.model=x"])
    with pytest.raises(ConfigError, match="rule critic only"):
        load_config("tiny", ["critic.noise=0.2", "critic.critique_type=indicative"])


def test_a_training_run_counts_and_records_noised_critiques(train_short):
    import json

    run_dir = train_short("critic.noise=0.5")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "refine/critiques" in r]
    assert len(steps) == 2 and all(0 <= r["critic/noised"] <= r["refine/critiques"] for r in steps)
    refinements = [ref for line in (run_dir / "samples.jsonl").read_text().splitlines()
                   for ref in json.loads(line).get("refinements", [])]
    marked = [ref["critique_noised"] for ref in refinements if "critique_noised" in ref]
    assert set(marked) <= {"step", "value"} and sum(r["critic/noised"] for r in steps) > 0
