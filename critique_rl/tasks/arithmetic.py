"""The built-in synthetic reasoning task: add a few numbers, one addition per step.

    question  47+38+29
    solution  47+38=85; 85+29=114; answer 114

A problem is *easy* when its total is below ``hard_threshold``, and *hard* when only its last
addition crosses the threshold. The warm start shows the policy solutions of easy problems
only, so a hard problem needs a result with more digits than any solution it has seen: after
warm start it solves easy problems and almost never hard ones, which is the plateau GRPO
cannot leave (all-fail groups). The new skill is one step, so a critique naming that step
can teach it.

Refinement transcripts (question, wrong attempt, critique -> corrected solution) on easy and
hard problems teach the policy to *use* a critique; this is what a real LLM brings with it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from critique_rl.config import TaskConfig

STEP_SEPARATOR = "; "
_ANSWER = re.compile(r"answer (-?\d+)")


@dataclass(frozen=True)
class Problem:
    question: str
    operands: tuple[int, ...]
    answer: int

    @property
    def reference_steps(self) -> list[str]:
        """The reference solution as steps, the final 'answer N' included."""
        steps, total = [], self.operands[0]
        for x in self.operands[1:]:
            steps.append(f"{total}+{x}={total + x}")
            total += x
        return steps + [f"answer {total}"]

    @property
    def solution(self) -> str:
        return STEP_SEPARATOR.join(self.reference_steps)


def problem_from_operands(operands: tuple[int, ...]) -> Problem:
    return Problem("+".join(map(str, operands)), tuple(operands), sum(operands))


def is_hard(problem: Problem, cfg: TaskConfig) -> bool:
    return problem.answer >= cfg.hard_threshold


def is_easy(problem: Problem, cfg: TaskConfig) -> bool:
    return problem.answer < cfg.hard_threshold


def _in_split(problem: Problem, cfg: TaskConfig, hard: bool) -> bool:
    if not hard:
        return is_easy(problem, cfg)
    return is_hard(problem, cfg) and problem.answer - problem.operands[-1] < cfg.hard_threshold


def sample_problem(rng: random.Random, cfg: TaskConfig, hard: bool) -> Problem:
    """Rejection-sample operands until the total falls in the requested difficulty."""
    reachable = cfg.num_terms * cfg.max_operand >= cfg.hard_threshold if hard else cfg.num_terms * cfg.min_operand < cfg.hard_threshold
    if not reachable:
        raise ValueError(f"task config cannot produce {'hard' if hard else 'easy'} problems: "
                         f"{cfg.num_terms} terms in [{cfg.min_operand}, {cfg.max_operand}] vs hard_threshold {cfg.hard_threshold}")
    while True:
        operands = tuple(rng.randint(cfg.min_operand, cfg.max_operand) for _ in range(cfg.num_terms))
        problem = problem_from_operands(operands)
        if _in_split(problem, cfg, hard):
            return problem


def extract_answer(completion: str) -> int | None:
    """The number after the last 'answer', or None when there is none."""
    found = _ANSWER.findall(completion)
    return int(found[-1]) if found else None


def verify(problem_answer: int, completion: str) -> float:
    """Binary correctness of the final answer."""
    return 1.0 if extract_answer(completion) == problem_answer else 0.0


@dataclass(frozen=True)
class StepCheck:
    index: int       # 1-based position in the solution
    text: str        # what the attempt wrote there ('' when missing)
    expected: str    # what the reference has there
    ok: bool


def check_steps(problem: Problem, attempt: str) -> list[StepCheck]:
    """Walk the attempt step by step against the reference, up to and including the first error."""
    written = [s.strip() for s in attempt.strip().split(";")]
    checks = []
    for i, expected in enumerate(problem.reference_steps):
        text = written[i] if i < len(written) else ""
        checks.append(StepCheck(i + 1, text, expected, text == expected))
        if text != expected:
            break
    return checks


TOKEN_KINDS = ("plan", "copy", "exec", "answer", "format")
_DIGITS = re.compile(r"[0-9]+")


def _char_kinds(problem: Problem, text: str) -> list[str]:
    """The kind of each character of a completion ``text`` (see ``token_kinds``)."""
    kinds = ["format"] * len(text)
    unused = list(problem.operands)     # question operands not written yet (a multiset)
    seen_result = False                 # a later step's left operand copies the previous result
    start = 0
    for segment in text.split(";"):
        operand = 0                     # operands written so far in this step
        for run in _DIGITS.finditer(segment):
            before, after = segment[:run.start()].rstrip(), segment[run.end():].lstrip()
            a, b = start + run.start(), start + run.end()
            if before.endswith("answer"):
                kinds[a:b] = ["answer"] * (b - a)
            elif before.endswith("="):
                kinds[a:b] = ["exec"] * (b - a)
                seen_result = True
            elif before == "" or before.endswith("+") or after.startswith("+"):
                chosen = not (operand == 0 and seen_result) and len(set(unused)) > 1
                kinds[a:b] = ["plan" if chosen and i == a else "copy" for i in range(a, b)]
                if not (operand == 0 and seen_result) and int(run.group()) in unused:
                    unused.remove(int(run.group()))
                operand += 1
        start += len(segment) + 1
    return kinds


def token_kinds(problem: Problem, token_texts: list[str]) -> list[str]:
    """The kind (one of ``TOKEN_KINDS``) of each completion token, for entropy by kind.

    The tokens' texts are joined and parsed as steps split at ';'; a digit run's role is read
    from its neighbours:
      answer  digits after 'answer'
      exec    digits after '=' (an addition result)
      plan    the first digit of an operand (a digit run after '+', before '+', or first in its
              step) that chose among more than one distinct unused question operand: both
              operands of the first step while > 1 remain, a later step's right operand while > 1
              remain. A written operand found among the unused ones is used up.
      copy    the other operand digits; a later step's left operand copies the previous result
      format  everything else: '+', '=', ';', spaces, letters, EOS, unparseable digits
    A token gets the kind of its first non-space character (a token without one: format), so
    any tokenizer works. Malformed text never raises: what parses is tagged, the rest is format.

    >>> p = problem_from_operands((47, 38, 29))
    >>> "".join(k[0] for k in token_kinds(p, list("47+38=85; 85+29=114; answer 114") + [""]))
    'pcfpcfeeffccfccfeeefffffffffaaaf'
    """
    kinds = _char_kinds(problem, "".join(token_texts))
    out, offset = [], 0
    for piece in token_texts:
        first = next((offset + i for i, ch in enumerate(piece) if not ch.isspace()), None)
        out.append("format" if first is None else kinds[first])
        offset += len(piece)
    return out


def carried_solution(problem: Problem, write: Callable[[int, int], int]) -> str:
    """The solution with the result of addition ``i`` written as ``write(i, result)``; a result
    written wrong carries into the next step and the final answer, as a model's own slip would.

    >>> carried_solution(problem_from_operands((47, 38, 29)), lambda i, r: r + 1 if i == 0 else r)
    '47+38=86; 86+29=115; answer 115'
    """
    steps, total = [], problem.operands[0]
    for i, x in enumerate(problem.operands[1:]):
        result = write(i, total + x)
        steps.append(f"{total}+{x}={result}")
        total = result
    return STEP_SEPARATOR.join(steps + [f"answer {total}"])


def without_leading_digit(n: int) -> int:
    """114 -> 14: the slip of a model that has not learned results with more digits than usual."""
    return int(str(n)[1:])


def wrong_attempt(rng: random.Random, problem: Problem) -> str:
    """A plausible wrong solution: one addition goes wrong and the error propagates.

    The errors mimic a model that has not learned a skill: a dropped leading digit on results
    with more digits than usual, or an off-by-a-few/tens slip.
    """
    bad = rng.randrange(len(problem.operands) - 1)

    def write(i: int, result: int) -> int:
        if i != bad:
            return result
        if result >= 100 and rng.random() < 0.5:
            return without_leading_digit(result)
        wrong = result + rng.choice([-10, -2, -1, 1, 2, 10])
        return wrong if wrong >= 0 and wrong != result else result + 1

    return carried_solution(problem, write)


def misconceived_solution(problem: Problem, threshold: int) -> str:
    """The solution under a systematic misconception: every result of ``threshold`` or more is
    written without its leading digit, and the error carries into the next step and the answer.

    >>> misconceived_solution(problem_from_operands((47, 38, 29)), 100)
    '47+38=85; 85+29=14; answer 14'
    """
    return carried_solution(problem, lambda _, result: without_leading_digit(result) if result >= threshold else result)


def noisy_solution(rng: random.Random, problem: Problem, digit_noise: float) -> str:
    """The reference solution with each digit of each addition result replaced, with chance
    ``digit_noise``, by another digit (never a leading 0); a slip carries into the next step and
    the final answer, so the transcript stays self-consistent. ``digit_noise`` = 0 gives the solution.
    """
    def write(_: int, result: int) -> int:
        digits = list(str(result))
        for i, d in enumerate(digits):
            if rng.random() < digit_noise:
                digits[i] = rng.choice([c for c in "0123456789" if c != d and (i or c != "0")])
        return int("".join(digits))

    return carried_solution(problem, write)


EVAL_SEED = 1_000_003


class ProblemSource:
    """Problems for warm start, RL and evaluation, generated from seeds.

    Evaluation splits depend only on the task config (not on the run's seed), so runs with
    different seeds are evaluated on the same problems; training never sees an evaluation problem.
    A training batch is a pure function of (seed, step), so a resumed run replays no data.
    """

    def __init__(self, cfg: TaskConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        rng = random.Random(EVAL_SEED)
        self.eval_easy = self._distinct(rng, cfg.eval_easy, hard=False, exclude=set())
        self.eval_hard = self._distinct(rng, cfg.eval_hard, hard=True, exclude=set())
        self.held_out = {p.question for p in self.eval_easy + self.eval_hard}

    def _distinct(self, rng: random.Random, n: int, hard: bool, exclude: set[str]) -> list[Problem]:
        seen, out = set(exclude), []
        for _ in range(200 * n + 1000):
            if len(out) == n:
                return out
            p = sample_problem(rng, self.cfg, hard)
            if p.question not in seen:
                seen.add(p.question)
                out.append(p)
        raise ValueError(f"task config has too few distinct {'hard' if hard else 'easy'} problems for {n} evaluation problems")

    def sample(self, rng: random.Random, hard: bool) -> Problem:
        """A training problem of the given difficulty that is not in an evaluation split."""
        while True:
            p = sample_problem(rng, self.cfg, hard)
            if p.question not in self.held_out:
                return p

    def train_batch(self, step: int, size: int) -> list[Problem]:
        """The RL prompts of one step: a ``train_hard_fraction`` share of hard problems."""
        rng = random.Random(f"{self.seed}/train/{step}")
        num_hard = round(size * self.cfg.train_hard_fraction)
        return [self.sample(rng, hard=i < num_hard) for i in range(size)]


class ArithmeticTask:
    """The synthetic task behind the Task interface: easy/hard evaluation splits, exact-answer reward."""

    name = "arithmetic"

    def __init__(self, cfg: TaskConfig, seed: int):
        self.cfg = cfg
        self.source = ProblemSource(cfg, seed)

    def train_batch(self, step: int, size: int) -> list[Problem]:
        return self.source.train_batch(step, size)

    def eval_sets(self) -> dict[str, list[Problem]]:
        return {"easy": self.source.eval_easy, "hard": self.source.eval_hard}

    def probe_problems(self, n: int) -> list[Problem]:
        return self.source.eval_hard[:n - n // 2] + self.source.eval_easy[:n // 2]

    def reward(self, problems, completions) -> list[float]:
        return [verify(p.answer, c) for p, c in zip(problems, completions, strict=True)]

    def label(self, problem: Problem) -> str:
        return "hard" if is_hard(problem, self.cfg) else "easy"

    def reference_solution(self, problem: Problem) -> str:
        return problem.solution

    TOKEN_KINDS = TOKEN_KINDS

    def token_kinds(self, problem: Problem, token_texts: list[str]) -> list[str]:
        return token_kinds(problem, token_texts)

    def metrics(self) -> dict[str, float]:
        return {}  # the rule verifier is a pure function: nothing to count

    def close(self) -> None:
        pass
