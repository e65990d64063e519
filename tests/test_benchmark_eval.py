"""critique_rl.benchmark_eval plumbing: a fixed generator on real benchmark rows, the real math_reward,
and metrics checked by hand."""

import dataclasses
import json

import pytest

from critique_rl.benchmark_eval import (
    BenchmarkEvalConfig,
    evaluate_benchmark,
    evaluate_benchmarks,
    format_table,
    load_eval_sets,
)
from critique_rl.benchmark_data import benchmark_spec
from critique_rl.datasets_io import DatasetError, DatasetSpec, Example, load_examples
from critique_rl.math_reward import math_reward

PREFIX = "Solve and put the final answer in \\boxed{}.\n"


def render(question):
    return PREFIX + question


class FixedGenerator:
    """Prompt i of each call gets `right[i]` correct completions out of n, then wrong ones; the
    correct answer is looked up by prompt in `golds`."""

    def __init__(self, golds, right):
        self.golds, self.right, self.calls = golds, right, []

    def __call__(self, prompts, n):
        self.calls.append((len(prompts), n))
        return [[f"Working... so the result is $\\boxed{{{self.golds[p]}}}$." if j < k else "I think it is \\boxed{-98765}."
                 for j in range(n)] for p, k in zip(prompts, self.right)]


def test_metrics_and_samples_on_real_rows(shared_data, tmp_path):
    cfg = BenchmarkEvalConfig(benchmarks="math500, amc23", data_root=str(shared_data), limit=4, num_samples=4)
    golds = {render(ex.question): ex.answer for name in ("math500", "amc23")
             for ex in load_examples(dataclasses.replace(benchmark_spec(name, shared_data), limit=4))}
    # Problems 1-4 of each benchmark: greedy right on 1 and 3; sampled right 4, 2, 1 and 0 times of 4.
    greedy, sample = FixedGenerator(golds, [1, 0, 1, 0]), FixedGenerator(golds, [4, 2, 1, 0])
    rows = evaluate_benchmarks(load_eval_sets(cfg), cfg, tmp_path, render=render, reward=math_reward,
                               greedy_generate=greedy, sample_generate=sample)
    # mean@4 = 7/16; pass@2 = (1 + (1 - C(2,2)/C(4,2)) + (1 - C(3,2)/C(4,2)) + 0) / 4 = (1 + 5/6 + 1/2) / 4;
    # pass@4 = 3 of 4 problems with a correct sample
    expected = {"problems": 4, "greedy_pass@1": 0.5, "mean@4": 7 / 16, "pass@2": (1 + 5 / 6 + 0.5) / 4, "pass@4": 0.75}
    assert [r["benchmark"] for r in rows] == ["math500", "amc23"]
    for row in rows:
        assert row == pytest.approx({"benchmark": row["benchmark"], **expected})
    assert greedy.calls == [(4, 1)] * 2 and sample.calls == [(4, 4)] * 2

    lines = [json.loads(line) for line in (tmp_path / "math500.samples.jsonl").read_text().splitlines()]
    assert len(lines) == 4 + 16
    assert set(lines[0]) == {"benchmark", "row", "mode", "sample", "question", "answer", "completion", "reward", "correct"}
    assert [(x["row"], x["correct"]) for x in lines if x["mode"] == "greedy"] == [(1, True), (2, False), (3, True), (4, False)]
    sampled = [x for x in lines if x["mode"] == "sample"]
    assert [x["sample"] for x in sampled[:4]] == [0, 1, 2, 3]
    assert [sum(x["correct"] for x in sampled if x["row"] == r) for r in (1, 2, 3, 4)] == [4, 2, 1, 0]
    assert all(x["reward"] == float(x["correct"]) for x in lines)
    assert lines[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"

    table = format_table(rows).splitlines()
    assert table[0] == "| benchmark | problems | greedy_pass@1 | mean@4 | pass@2 | pass@4 |"
    assert table[2] == "| math500 | 4 | 50.0 | 43.8 | 58.3 | 75.0 |"


EXAMPLES = [Example(question="1+1?", answer="2", row=1, source="tiny"), Example(question="2+2?", answer="4", row=2, source="tiny")]


def test_none_reward_is_wrong_and_greedy_only(tmp_path):
    def reward(prompts, completions, answer, **_):
        return [None if c.endswith("?") else float(c == a) for c, a in zip(completions, answer)]

    cfg = BenchmarkEvalConfig(num_samples=0)
    row = evaluate_benchmark("tiny", EXAMPLES, cfg, render=str, reward=reward, samples_path=tmp_path / "s.jsonl",
                             greedy_generate=lambda prompts, n: [["2"], ["4?"]])
    assert row == {"benchmark": "tiny", "problems": 2, "greedy_pass@1": 0.5}
    second = json.loads((tmp_path / "s.jsonl").read_text().splitlines()[1])
    assert second["reward"] is None and second["correct"] is False


def test_wrong_generator_output_and_missing_generator_fail(tmp_path):
    cfg = BenchmarkEvalConfig(greedy=False, num_samples=3)
    common = dict(render=str, reward=math_reward, samples_path=tmp_path / "s.jsonl")
    with pytest.raises(ValueError, match="sample evaluation is on but no sample_generate"):
        evaluate_benchmark("tiny", EXAMPLES, cfg, **common)
    with pytest.raises(ValueError, match=r"generate returned \[3, 2\] completions for 2 prompts x 3"):
        evaluate_benchmark("tiny", EXAMPLES, cfg, sample_generate=lambda p, n: [["a"] * 3, ["b"] * 2], **common)
    with pytest.raises(ValueError, match="no examples"):
        evaluate_benchmark("tiny", [], cfg, **common)


def test_eval_sets_take_dataset_specs_beside_benchmarks(shared_data, tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"q": f"{i}+{i}?", "a": [str(2 * i)]}) + "\n" for i in range(1, 6)))
    cfg = BenchmarkEvalConfig(benchmarks="amc23", data_root=str(shared_data), limit=3)
    mine = DatasetSpec(name="mine v2", path=str(path), question_field="q", answer_field="a")
    sets = load_eval_sets(cfg, [mine])
    assert {name: len(examples) for name, examples in sets.items()} == {"amc23": 3, "mine v2": 3}  # cfg.limit caps both
    assert [ex.answer for ex in sets["mine v2"]] == ["2", "4", "6"]
    rows = evaluate_benchmarks(sets, dataclasses.replace(cfg, num_samples=0), tmp_path, render=render, reward=math_reward,
                               greedy_generate=lambda prompts, n: [["\\boxed{4}"] for _ in prompts])
    assert [(r["benchmark"], r["greedy_pass@1"]) for r in rows] == [("amc23", 0.0), ("mine v2", pytest.approx(1 / 3))]
    assert (tmp_path / "mine_v2.samples.jsonl").is_file()  # the name made safe as a file name
    with pytest.raises(DatasetError, match="two evaluation sets are named 'amc23'; give the dataset spec another name"):
        load_eval_sets(cfg, [dataclasses.replace(mine, name="amc23")])
