"""critique_rl.math_reward: real reference solutions, corrupted answers, garbage, extraction
policies, timeouts, the per-call budget, threads, processes.

The reference solutions are scored as they are: MATH-500's end in \\boxed{}, GSM8K's in '#### N'
after a text full of other numbers ('<<16-3-4=9>>9'); the gold is the dataset's answer.
"""

import multiprocessing
import re
import threading
import time

import pytest

from critique_rl.config import ConfigError, load_config
from critique_rl.benchmark_data import benchmark_spec
from critique_rl.datasets_io import load_examples
from critique_rl.math_reward import (
    MathRewardConfig,
    MathVerifier,
    make_math_reward,
    math_reward,
)
from critique_rl.math_verify_worker import parse_gold, verify_answer

SLOW_INPUT = "\\boxed{(10^{7})!}"  # sympy computes 10^7! when comparing: minutes of CPU, little memory


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(MathRewardConfig(workers=2)) as v:
        yield v


def garbage(gold: str) -> list[str]:
    """Texts that merely contain the gold, no stated answer: the first scored 1 against gold '1' in
    an evaluation when any number anywhere counted."""
    return [f"{gold}t\\}}<0bpE@S%q,y", f"x {gold} y", f"I bought {gold} apples and 3 pears at the market.", gold]


def test_reference_solutions_score_1_and_garbage_containing_the_gold_scores_0(shared_data, verifier):
    math500 = load_examples(benchmark_spec("math500", shared_data))
    gsm8k = load_examples(benchmark_spec("gsm8k", shared_data))
    examples = math500 + gsm8k
    solutions = [ex.extra["solution"] for ex in math500] + [ex.extra["answer"] for ex in gsm8k]
    # Corruptions: MATH-500 solutions scored against the next row's answer (where the two answers
    # differ: '5' and 'x=5' do not); GSM8K solutions whose '#### N' says N+1.
    swapped = [(ex.answer, nxt.extra["solution"]) for ex, nxt in zip(math500, math500[1:] + math500[:1])
               if not verify_answer(ex.answer, f"\\boxed{{{nxt.answer}}}")]
    plus_one = [(ex.answer, re.sub(r"####\s*(.+)$", lambda m: "#### %d" % (int(m[1].replace(",", "")) + 1),
                                   ex.extra["answer"].strip())) for ex in gsm8k]
    junk = [(ex.answer, text) for ex in examples for text in garbage(ex.answer)]
    start = time.monotonic()
    references = verifier.verify([ex.answer for ex in examples], solutions)
    wrong = verifier.verify([g for g, _ in swapped + plus_one + junk], [p for _, p in swapped + plus_one + junk])
    elapsed = time.monotonic() - start
    print(f"{len(references) + len(wrong)} verifications on {verifier.cfg.workers} workers: {elapsed:.1f}s")
    failed = [(ex.source, ex.row, ex.answer) for ex, score in zip(examples, references) if score != 1.0]
    assert not failed, f"reference solutions scored 0: {failed[:10]}"
    assert (len(math500), len(gsm8k)) == (500, 1319)
    paid = [pair for pair, score in zip(swapped + plus_one + junk, wrong) if score]
    assert not paid, f"wrong or unstated answers scored 1: {paid[:10]}"
    assert len(junk) == 4 * 1819
    stats = verifier.stats()
    assert stats["timeouts"] == stats["errors"] == stats["budget_skipped"] == 0


POLICY_CASES = [  # gold, completion, score under: anchored, boxed, any
    ("1", "1t\\}<0bpE@S%q,y", 0, 0, 1),
    ("42", "I have 42 apples", 0, 0, 1),
    ("42", "6 * 7 = <<6*7=42>>42\n#### 42", 1, 0, 1),
    ("1000", "#### 1,000", 1, 0, 1),
    ("42", "So the answer is 42.", 1, 0, 1),
    ("42", "**Answer:** 42", 1, 0, 1),
    ("42", "The final answer is $42$. I hope it is correct.", 1, 0, 1),
    ("\\frac{1}{2}", "so $x = \\boxed{\\frac{2}{4}}$", 1, 1, 1),
    ("4", "The answer is 3? No: \\boxed{4}. Checking: 3 + 1 = 4, not 5", 1, 1, 1),  # \boxed{} comes first
    ("3", "The answer is 3? No: \\boxed{4}.", 0, 0, 0),
]


@pytest.mark.parametrize("column, extraction", [(2, "anchored"), (3, "boxed"), (4, "any")])
def test_extraction_policy_in_the_worker(column, extraction):
    with MathVerifier(MathRewardConfig(workers=1, extraction=extraction)) as v:
        scores = v.verify([case[0] for case in POLICY_CASES], [case[1] for case in POLICY_CASES])
    assert scores == [float(case[column]) for case in POLICY_CASES]


def test_unknown_extraction_policy_fails_loudly():
    with MathVerifier(MathRewardConfig(workers=1, extraction="everywhere")) as v:
        with pytest.raises(RuntimeError, match="failed to start: ValueError: extraction 'everywhere': expected one of anchored, boxed, any"):
            v.verify(["1"], ["\\boxed{1}"])
    with pytest.raises(ConfigError, match="verifier.extraction"):
        load_config("tiny", ["verifier.extraction=everywhere"])


def test_pathological_input_times_out_counts_and_recovers():
    with MathVerifier(MathRewardConfig(workers=1, timeout_s=1.0)) as v:
        start = time.monotonic()
        assert v.verify(["1", "2"], [SLOW_INPUT, "\\boxed{2}"]) == [0.0, 1.0]
        assert time.monotonic() - start < 20  # 1 s timeout + a worker restart, not minutes of sympy
        stats = v.stats()
        assert stats.pop("seconds") > 0
        assert stats == {"items": 2, "correct": 1, "timeouts": 1, "errors": 0, "budget_skipped": 0, "starts": 2, "restarts": 1}


HOOKS = '''
import os
import time

from critique_rl.math_verify_worker import verify_answer

def slow(gold, prediction):
    time.sleep(60)

def fails(gold, prediction):
    raise ArithmeticError("bad grader")

def dies(gold, prediction):
    os._exit(3)

def slow_when_asked(gold, prediction, extraction):
    if "slow" in prediction:
        time.sleep(60)
    return verify_answer(gold, prediction, extraction)
'''


@pytest.fixture
def hooks(tmp_path, monkeypatch):
    (tmp_path / "reward_hooks.py").write_text(HOOKS)
    monkeypatch.syspath_prepend(str(tmp_path))  # workers get the caller's sys.path


def test_injected_slow_verifier_cannot_hang_a_step(hooks):
    reward = make_math_reward(MathRewardConfig(workers=2, timeout_s=0.5, verifier="reward_hooks:slow"))
    start = time.monotonic()
    assert reward(["p"] * 3, ["\\boxed{1}"] * 3, answer=["1"] * 3) == [0.0, 0.0, 0.0]
    assert time.monotonic() - start < 15
    assert reward.verifier.stats()["timeouts"] == 3
    reward.verifier.close()


def test_a_batch_of_pathological_answers_costs_the_budget_not_a_timeout_each(hooks):
    cfg = MathRewardConfig(workers=2, timeout_s=10.0, step_budget_s=2.0, verifier="reward_hooks:slow_when_asked")
    with MathVerifier(cfg) as v:
        assert v.verify(["1", "1"], ["\\boxed{1}"] * 2) == [1.0, 1.0]  # both workers started
        start = time.monotonic()
        assert v.verify(["1"] * 20, ["slow \\boxed{1}"] * 20) == [0.0] * 20
        elapsed = time.monotonic() - start
        assert elapsed < 6, elapsed  # 2 s budget + killing; without it 20 x 10 s over 2 workers = 100 s
        stats = v.stats()
        assert (stats["timeouts"], stats["budget_skipped"]) == (2, 18)  # the two in flight were cut at the budget
        # The next call has a budget of its own; the killed workers restart; the hook got extraction='anchored'.
        assert v.verify(["1", "2"], ["\\boxed{1}", "x 2 y"]) == [1.0, 0.0]
        assert (v.stats()["restarts"], v.stats()["starts"]) == (2, 4)


def test_failing_verifier_scores_zero_and_counts(hooks, caplog):
    with MathVerifier(MathRewardConfig(workers=1, verifier="reward_hooks:fails")) as v:
        assert v.verify(["1"], ["\\boxed{1}"]) == [0.0]
        assert v.stats()["errors"] == 1 and v.stats()["starts"] == 1  # the worker survives
    assert "ArithmeticError: bad grader" in caplog.text


def test_dying_verifier_scores_zero_and_restarts(hooks):
    with MathVerifier(MathRewardConfig(workers=1, verifier="reward_hooks:dies")) as v:
        assert v.verify(["1", "1"], ["\\boxed{1}"] * 2) == [0.0, 0.0]
        stats = v.stats()
        assert (stats["errors"], stats["starts"], stats["restarts"]) == (2, 2, 1)


def test_unknown_verifier_fails_loudly():
    with MathVerifier(MathRewardConfig(workers=1, verifier="no_such_module:verify")) as v:
        with pytest.raises(RuntimeError, match="failed to start: ModuleNotFoundError: No module named 'no_such_module'"):
            v.verify(["1"], ["1"])


def test_works_from_a_non_main_thread():
    out = []
    thread = threading.Thread(target=lambda: out.append(
        math_reward(["p", "p"], ["so $\\boxed{\\dfrac{6}{4}}$", "\\boxed{2}"], answer=["\\frac{3}{2}", "3"])))
    thread.start()
    thread.join()
    assert out == [[1.0, 0.0]]


def test_works_in_a_forked_daemonic_pool_worker():
    # Warm the default workers here first: the forked child must not use the inherited pipes, and
    # a daemonic multiprocessing worker may not start multiprocessing children (subprocess is fine).
    assert math_reward(["p"], ["\\boxed{5}"], answer=["5"]) == [1.0]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(math_reward, (["p", "p"], ["\\boxed{5}", "\\boxed{6}"], ["5", "5"])) == [1.0, 0.0]
    assert math_reward(["p"], ["\\boxed{7}"], answer=["7"]) == [1.0]


def test_gold_is_parsed_once():
    parse_gold.cache_clear()
    assert verify_answer("0.5", "\\boxed{\\frac{1}{2}}")
    assert verify_answer("0.5", "The answer is 1/2.")
    assert parse_gold.cache_info().hits == 1


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="2 gold answers for 1 predictions"):
        MathVerifier().verify(["1", "2"], ["1"])
