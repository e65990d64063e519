"""The synthetic task: splits, verifier, rule critic."""

import random

from critique_rl.config import TaskConfig, load_config
from critique_rl.critics.base import CritiqueRequest
from critique_rl.critics.rule import RuleCritic
from critique_rl.tasks.arithmetic import (
    ProblemSource,
    extract_answer,
    misconceived_solution,
    problem_from_operands,
    sample_problem,
    verify,
    wrong_attempt,
)
from critique_rl.warmstart import TranscriptMaker


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


def test_misconceived_solutions_drop_the_leading_digit_of_every_result_over_the_threshold():
    assert misconceived_solution(problem_from_operands((47, 38, 29)), 100) == "47+38=85; 85+29=14; answer 14"
    assert misconceived_solution(problem_from_operands((60, 45, 30)), 100) == "60+45=5; 5+30=35; answer 35"
    easy = problem_from_operands((12, 30, 40))
    assert misconceived_solution(easy, 100) == easy.solution


def test_plateau_warm_start_mix_holds_misconceived_hard_solves_at_the_configured_share():
    cfg = load_config("plateau")
    source = ProblemSource(cfg.task, 0)
    maker, rng = TranscriptMaker(cfg, source), random.Random(0)
    pairs = [maker.pair(rng) for _ in range(4000)]
    solves = [(problem_from_operands(tuple(map(int, q.split("+")))), c)
              for q, c in pairs if "try " not in q]      # refinement prompts show an attempt
    hard = [(p, c) for p, c in solves if p.answer >= cfg.task.hard_threshold]
    assert cfg.warmstart.misconception_fraction == 0.25
    assert abs(len(hard) / len(solves) - 0.25) < 0.03
    # Every hard solve is wrong in the same way; the easy ones stay the reference.
    assert all(c == misconceived_solution(p, 100) for p, c in hard)
    assert all(verify(p.answer, c) == 0.0 for p, c in hard)

    # misconception_fraction 0 draws nothing more: the default's transcripts are unchanged.
    toy = load_config("toy")
    default, with_field = TranscriptMaker(toy, source), TranscriptMaker(load_config("toy", ["warmstart.misconception_fraction=0"]), source)
    a, b = random.Random(3), random.Random(3)
    assert [default.pair(a) for _ in range(300)] == [with_field.pair(b) for _ in range(300)]
