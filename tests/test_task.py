"""The synthetic task: splits, verifier, rule critic."""

import random

from critique_rl.config import TaskConfig
from critique_rl.critics.base import CritiqueRequest
from critique_rl.critics.rule import RuleCritic
from critique_rl.tasks.arithmetic import (
    ProblemSource,
    extract_answer,
    problem_from_operands,
    sample_problem,
    verify,
    wrong_attempt,
)


def test_reference_solution_and_verifier():
    p = problem_from_operands((47, 38, 29))
    assert p.solution == "47+38=85; 85+29=114; answer 114"
    assert verify(114, p.solution) == 1.0 and verify(114, "47+38=85; 85+29=104; answer 104") == 0.0
    assert extract_answer("no answer here") is None


def test_splits_easy_below_threshold_hard_only_in_the_last_step():
    cfg, rng = TaskConfig(), random.Random(0)
    for _ in range(200):
        easy, hard = sample_problem(rng, cfg, hard=False), sample_problem(rng, cfg, hard=True)
        assert easy.answer < 100
        assert hard.answer >= 100 and hard.answer - hard.operands[-1] < 100


def test_eval_splits_are_fixed_and_never_trained_on():
    a, b = ProblemSource(TaskConfig(), seed=0), ProblemSource(TaskConfig(), seed=5)
    assert [p.question for p in a.eval_hard] == [p.question for p in b.eval_hard]
    train = {p.question for step in range(50) for p in a.train_batch(step, 16)}
    assert not train & a.held_out
    assert a.train_batch(3, 16) == a.train_batch(3, 16)


def test_rule_critic_names_first_wrong_step_and_its_value():
    p = problem_from_operands((47, 38, 29))
    critic = RuleCritic("arithmetic/critique_cot.jinja")
    [c] = critic.critique([CritiqueRequest(p.question, "47+38=85; 85+29=104; answer 104", "114", False, p)])
    assert c.text == "step 1 ok. step 2 wrong, should be 85+29=114. verdict: wrong"
    assert c.verdict == "wrong"
    [ok] = critic.critique([CritiqueRequest(p.question, p.solution, "114", True, p)])
    assert ok.verdict == "correct" and ok.text.endswith("verdict: correct")


def test_wrong_attempts_are_wrong_and_well_formed():
    rng = random.Random(1)
    for _ in range(100):
        p = sample_problem(rng, TaskConfig(), hard=rng.random() < 0.5)
        attempt = wrong_attempt(rng, p)
        assert verify(p.answer, attempt) == 0.0 and attempt.count(";") == 2
