"""critique_rl.math_reward: real reference solutions, corrupted answers, timeouts, threads, processes.

GSM8K choice: the prediction is the whole worked solution with its final '#### N' rewritten as
'\\boxed{N}', so the check covers extraction from a long text full of other numbers
('<<16-3-4=9>>9'), not just comparing two numbers; the gold is the text after '####'.
"""

import multiprocessing
import re
import threading
import time

import pytest

from critique_rl.datasets_io import benchmark_spec, load_examples
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


def rate(verdicts):
    return sum(verdicts) / len(verdicts)


def test_reference_solutions_verify_and_corruptions_do_not(shared_data, verifier):
    math500 = load_examples(benchmark_spec("math500", shared_data))
    gsm8k = load_examples(benchmark_spec("gsm8k", shared_data))
    gsm_solutions = [re.sub(r"####\s*(.+)$", r"\\boxed{\1}", ex.extra["answer"].strip()) for ex in gsm8k]
    # Corruptions: MATH-500 solutions scored against the next row's answer (only where the answers
    # differ as strings); GSM8K solutions whose boxed answer is N+1.
    swapped = [(ex.answer, nxt.extra["solution"]) for ex, nxt in zip(math500, math500[1:] + math500[:1])
               if ex.answer != nxt.answer]
    plus_one = [re.sub(r"\\boxed\{(.+)\}$", lambda m: "\\boxed{%d}" % (int(m[1].replace(",", "")) + 1), s)
                for s in gsm_solutions]
    golds = [ex.answer for ex in math500] + [g for g, _ in swapped] + [ex.answer for ex in gsm8k] * 2
    preds = [ex.extra["solution"] for ex in math500] + [p for _, p in swapped] + gsm_solutions + plus_one
    start = time.monotonic()
    scores = verifier.verify(golds, preds)
    elapsed = time.monotonic() - start
    a, b, c = len(math500), len(math500) + len(swapped), len(math500) + len(swapped) + len(gsm8k)
    print(f"{len(golds)} verifications on {verifier.cfg.workers} workers: {elapsed:.1f}s")
    assert rate(scores[:a]) >= 0.99  # MATH-500 solution vs answer
    assert rate([1 - s for s in scores[a:b]]) >= 0.99  # swapped answers
    assert rate(scores[b:c]) >= 0.99  # GSM8K worked solution vs its #### answer
    assert rate([1 - s for s in scores[c:]]) >= 0.99  # GSM8K answer + 1
    assert verifier.stats()["timeouts"] == 0


def test_pathological_input_times_out_counts_and_recovers():
    with MathVerifier(MathRewardConfig(workers=1, timeout_s=1.0)) as v:
        start = time.monotonic()
        assert v.verify(["1", "2"], [SLOW_INPUT, "\\boxed{2}"]) == [0.0, 1.0]
        assert time.monotonic() - start < 20  # 1 s timeout + a worker restart, not minutes of sympy
        assert v.stats() == {"items": 2, "correct": 1, "timeouts": 1, "errors": 0, "starts": 2}


HOOKS = '''
import os
import time

def slow(gold, prediction):
    time.sleep(60)

def fails(gold, prediction):
    raise ArithmeticError("bad grader")

def dies(gold, prediction):
    os._exit(3)
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


def test_failing_verifier_scores_zero_and_counts(hooks, caplog):
    with MathVerifier(MathRewardConfig(workers=1, verifier="reward_hooks:fails")) as v:
        assert v.verify(["1"], ["\\boxed{1}"]) == [0.0]
        assert v.stats()["errors"] == 1 and v.stats()["starts"] == 1  # the worker survives
    assert "ArithmeticError: bad grader" in caplog.text


def test_dying_verifier_scores_zero_and_restarts(hooks):
    with MathVerifier(MathRewardConfig(workers=1, verifier="reward_hooks:dies")) as v:
        assert v.verify(["1", "1"], ["\\boxed{1}"] * 2) == [0.0, 0.0]
        assert v.stats() == {"items": 2, "correct": 0, "timeouts": 0, "errors": 2, "starts": 2}


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


def test_gold_is_parsed_once_and_boxed_comes_first():
    parse_gold.cache_clear()
    assert verify_answer("0.5", "\\boxed{\\frac{1}{2}}")
    assert verify_answer("0.5", "The answer is 1/2.")
    assert parse_gold.cache_info().hits == 1
    # \boxed{} wins over a later "answer is" and over trailing numbers
    assert verify_answer("4", "The answer is 3? No: \\boxed{4}. Checking: 3 + 1 = 4, not 5")
    assert not verify_answer("3", "The answer is 3? No: \\boxed{4}.")


def test_mismatched_lengths_and_bad_settings():
    with pytest.raises(ValueError, match="2 gold answers for 1 predictions"):
        MathVerifier().verify(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="workers >= 1"):
        MathVerifier(MathRewardConfig(workers=0))
