"""Where entropy lives: the arithmetic task's token kinds, entropy by kind, and the trainer's entropy/kind/* metrics."""

import math
import random
import re

import pytest
import torch

from critique_rl import algos
from critique_rl.batching import pad_sequences
from critique_rl.config import load_config
from critique_rl.metrics import read_metrics
from critique_rl.rollout.base import Completion
from critique_rl.tasks.arithmetic import TOKEN_KINDS, problem_from_operands, token_kinds
from critique_rl.trainer import Member, Trainer

P = problem_from_operands((47, 38, 29))
CODE = {"p": "plan", "c": "copy", "e": "exec", "a": "answer", "f": "format"}


def kinds_of(text: str, problem=P) -> str:
    """One letter per character: the char tokenizer's view (one token per character)."""
    return "".join(k[0] for k in token_kinds(problem, list(text)))


# Expected kinds written out by hand, one letter per character under the text.
@pytest.mark.parametrize("text, expected", [
    # correct: both first-step operands choose (3 then 2 unused), 29 is forced, 85 copies the result
    ("47+38=85; 85+29=114; answer 114",
     "pcfpcfeeffccfccfeeefffffffffaaa"),
    # a wrong result: the same roles, the digits are whatever was written
    ("47+38=84; 84+29=113; answer 113",
     "pcfpcfeeffccfccfeeefffffffffaaa"),
    # another order: 29 chosen first, then 47 out of {47, 38}; 38 is forced
    ("29+47=76; 76+38=114; answer 114",
     "pcfpcfeeffccfccfeeefffffffffaaa"),
    # an operand not in the question uses nothing up: 29 still chooses among {38, 29}
    ("47+39=86; 86+29=115; answer 115",
     "pcfpcfeeffccfpcfeeefffffffffaaa"),
    # truncated: the left operand of step 2 copies the result
    ("47+38=85; 8",
     "pcfpcfeeffc"),
    # garbage: a leading digit run takes the first operand's role; stray digits are format
    ("4738",
     "pccc"),
    ("ab=+;x 9 answer",
     "fffffffffffffff"),
    ("answer",
     "ffffff"),
    ("=5+",
     "fef"),
])
def test_token_kinds_of_hand_written_completions(text, expected):
    assert kinds_of(text) == expected


def test_two_operands_and_four_operands():
    assert kinds_of("47+38=85; answer 85", problem_from_operands((47, 38))) == "pcfccfeefffffffffaa"
    p4 = problem_from_operands((12, 34, 56, 78))
    text = "12+34=46; 46+56=102; 102+78=180; answer 180"
    assert kinds_of(text, p4) == "pcfpcfeeffccfpcfeeeffcccfccfeeefffffffffaaa"
    # repeated operands: after 29 only 47s remain, so 47 is forced (distinct values choose, not positions)
    assert kinds_of("29+47=76; 76+47=123", problem_from_operands((47, 47, 29))) == "pcfccfeeffccfccfeee"


def test_empty_and_eos():
    assert token_kinds(P, []) == []
    assert token_kinds(P, [""]) == ["format"]                     # EOS decoded without special tokens
    assert token_kinds(P, ["<eos>"]) == ["format"]                # or with them
    with_eos = token_kinds(P, list("47+38=85; 85+29=114; answer 114") + ["<eos>"])
    assert with_eos[-4:] == ["answer", "answer", "answer", "format"]


def test_multi_character_tokens_take_the_kind_of_their_first_non_space_character():
    tokens = ["47", "+", "38", "=", "85", ";", " 85", "+", "29", "=", "114", ";", " answer", " 114", "  ", ""]
    assert token_kinds(P, tokens) == ["plan", "format", "plan", "format", "exec", "format", "copy", "format", "copy",
                                      "format", "exec", "format", "format", "answer", "format", "format"]


def test_token_kinds_never_raise_on_random_text():
    rng = random.Random(0)
    alphabet = "0123456789+=; answer<eos>-\n"
    for _ in range(500):
        tokens = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3))) for _ in range(rng.randint(0, 20))]
        kinds = token_kinds(P, tokens)
        assert len(kinds) == len(tokens) and set(kinds) <= set(TOKEN_KINDS)


# ---------------------------------------------------------------- entropy_by_kind
def test_entropy_by_kind_docstring_example():
    out = algos.entropy_by_kind(torch.tensor([[0.1, 0.3, 2.0, 1.0, 0.2]]), torch.ones(1, 5),
                                torch.tensor([[0, 0, 1, 1, 0]]), ("a", "b"))
    assert out == pytest.approx({"entropy/kind/a": 0.2, "entropy/kind/b": 1.5,
                                 "entropy/kind_share/a": 0.6, "entropy/kind_share/b": 0.4,
                                 "entropy/top20_kind/a": 0.0, "entropy/top20_kind/b": 1.0})


def test_entropy_by_kind_masks_and_omits_empty_kinds():
    entropy = torch.tensor([[0.1, 0.3, 2.0, 9.0], [1.0, 0.2, 3.0, 0.5]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    kinds = torch.tensor([[0, 0, 1, 1], [1, 0, 0, 0]])       # the 9.0 (kind y) is off the mask
    out = algos.entropy_by_kind(entropy, mask, kinds, ("x", "y", "z"))
    # valid: x 0.1 0.3 0.2 3.0 0.5 (mean 4.1 / 5), y 2.0 1.0; N = 7, k = ceil(1.4) = 2: the 3.0 (x) and 2.0 (y)
    assert out == pytest.approx({"entropy/kind/x": 0.82, "entropy/kind/y": 1.5,
                                 "entropy/kind_share/x": 5 / 7, "entropy/kind_share/y": 2 / 7, "entropy/kind_share/z": 0.0,
                                 "entropy/top20_kind/x": 0.5, "entropy/top20_kind/y": 0.5, "entropy/top20_kind/z": 0.0})
    # quantile 0.5: k = ceil(3.5) = 4: 3.0 x, 2.0 y, 1.0 y, 0.5 x
    half = algos.entropy_by_kind(entropy, mask, kinds, ("x", "y", "z"), quantile=0.5)
    assert half["entropy/top50_kind/x"] == 0.5 and half["entropy/top50_kind/y"] == 0.5
    assert algos.entropy_by_kind(entropy, torch.zeros(2, 4), kinds, ("x", "y", "z")) == {}


# ---------------------------------------------------------------- trainer
def tiny_grpo(model_dir, *overrides):
    return load_config("tiny", [f"model.name_or_path={model_dir}", "method=grpo", "eval.every=0", "eval.probe_prompts=0",
                                "task.eval_easy=4", "task.eval_hard=4", "eval.pass_n=1",
                                "rollout.max_completion_length=48", *overrides])


def scripted_engine(trainer: Trainer):
    """Replace sampling with fixed completions: the solution, a slip, another order and garbage, each + EOS;
    a random tiny policy writes no results, so it would log no entropy/kind/exec."""
    tok = trainer.tokenizer

    def generate(prompts, n, params):
        out = []
        for prompt in prompts:
            question = re.search(r"\d+(\+\d+)+", prompt).group()        # the prompt may be in a chat template
            p = problem_from_operands(tuple(int(x) for x in question.split("+")))
            a, b, c = p.operands
            texts = [p.solution, p.solution.replace(f"={a + b}", f"={a + b + 1}", 1),
                     f"{c}+{b}={c + b}; {c + b}+{a}={p.answer}; answer {p.answer}", "x9;=+"]
            group = []
            for i in range(n):
                text = texts[i % len(texts)]
                ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                group.append(Completion(tok(prompt, add_special_tokens=False)["input_ids"], ids, text, False))
            out.append(group)
        return out
    trainer.engine.generate = generate


def test_kind_ids_sit_where_the_entropy_of_their_token_is(tiny_model_dir, tmp_path):
    trainer = Trainer(tiny_grpo(tiny_model_dir), tmp_path / "run", show_progress=False)
    tok = trainer.tokenizer
    problems = [P, problem_from_operands((5, 61, 7))]
    texts = ["47+38=85; 85+29=114; answer 114", "5+61=66; 66+7=73; answer 73"]
    members = [Member(0, tok(trainer.prompts.solve(p.question), add_special_tokens=False)["input_ids"],
                      tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], 1.0, False, problem=p)
               for p, t in zip(problems, texts)]
    members.append(Member(1, members[0].prompt_ids, members[0].completion_ids, 0.0, True))      # a refinement
    _, entropy, mask = trainer.forward(trainer.model, members)
    ids = trainer.token_kind_ids(members, mask.shape[1])
    input_ids, _, _ = pad_sequences([m.prompt_ids for m in members], [m.completion_ids for m in members], 0)
    assert ids.shape == entropy.shape and members[0].prompt_ids != members[1].prompt_ids
    for row, (p, text) in enumerate(zip(problems, texts)):
        on = mask[row] > 0
        # position t holds the entropy of the distribution that chose input_ids[t + 1]: a completion token
        assert tok.decode(input_ids[row, 1:][on]) == text + tok.eos_token
        expected = token_kinds(p, list(text) + [""])
        assert [TOKEN_KINDS[i] for i in ids[row][on].tolist()] == expected
        assert ids[row][~on].eq(0).all()
    assert ids[2].eq(0).all()                                  # refinements get no kinds


@pytest.mark.parametrize("mini_batches", [1, 2])      # 2: the entropies come from the pre-update forward
def test_grpo_steps_log_entropy_by_kind(tiny_model_dir, tmp_path, mini_batches):
    trainer = Trainer(tiny_grpo(tiny_model_dir, "train.steps=2", "train.prompts_per_step=4", "rollout.num_generations=4",
                                f"train.mini_batches={mini_batches}"), tmp_path / "run", show_progress=False)
    scripted_engine(trainer)
    trainer.train()
    rows = read_metrics(tmp_path / "run")[1:]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for kind in TOKEN_KINDS:
            assert row[f"entropy/kind/{kind}"] > 0
        assert math.fsum(row[f"entropy/kind_share/{k}"] for k in TOKEN_KINDS) == pytest.approx(1.0)
        assert math.fsum(row[f"entropy/top20_kind/{k}"] for k in TOKEN_KINDS) == pytest.approx(1.0)
        # the same tokens as the other entropy statistics: the kind means average to the token mean
        mean = math.fsum(row[f"entropy/kind/{k}"] * row[f"entropy/kind_share/{k}"] for k in TOKEN_KINDS)
        assert mean == pytest.approx(row["entropy/token_mean"], rel=1e-5)


def test_a_task_without_kinds_logs_none(tiny_model_dir, tmp_path):
    trainer = Trainer(tiny_grpo(tiny_model_dir), tmp_path / "run", show_progress=False)
    trainer.task.TOKEN_KINDS = ()                              # what the math task declares
    assert trainer.token_kind_ids([], 4) is None
    out = Trainer.entropy_metrics([torch.ones(1, 3)], [torch.ones(1, 3)], [torch.tensor([False])],
                                  [torch.zeros(1, 3)], [torch.zeros(1)], [None], ())
    assert not any(k.startswith("entropy/kind") for k in out) and "entropy/token_mean" in out
