"""Benchmark evaluation of any generator: greedy pass@1, mean@N and unbiased pass@k per benchmark,
with every sample and its verdict written to JSONL.

The model comes in as plain functions ``generate(prompts, n) -> n completions per prompt``
(one greedy, one sampling), so this module is the same for HF, vLLM or a test stub. A sample is
correct when its reward is >= 1.0 (``math_reward`` gives 1.0 or 0.0; None counts as wrong).
Unbiased pass@1 equals mean@N, so pass@k is reported for k = 2, 4, 8 ... and N.

    >>> pass_ks(16), pass_ks(6), pass_ks(1)
    ([2, 4, 8, 16], [2, 4, 6], [])
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from critique_rl.benchmark_data import benchmark_names, load_benchmark
from critique_rl.config import BenchmarkEvalConfig, DatasetSpec  # noqa: F401  (re-exported)
from critique_rl.datasets_io import DatasetError, Example, load_examples
from critique_rl.evaluate import pass_at_k

GenerateFn = Callable[[list[str], int], list[list[str]]]
RewardFn = Callable[..., list[Any]]  # TRL shape: fn(prompts=, completions=, answer=) -> list[float | None]


def pass_ks(n: int) -> list[int]:
    """The k of the reported pass@k: powers of two from 2 below n, and n itself."""
    ks, k = [], 2
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 2 else ks


def _scored(generate: GenerateFn, n: int, examples: Sequence[Example], render: Callable[[str], str],
            reward: RewardFn) -> tuple[list[list[str]], list[list[bool]], list[list[Any]]]:
    """(completions, correct, rewards), each [problem][sample], of n completions per example."""
    prompts = [render(ex.question) for ex in examples]
    outs = generate(prompts, n)
    if len(outs) != len(prompts) or any(len(o) != n for o in outs):
        raise ValueError(f"generate returned {[len(o) for o in outs]} completions for {len(prompts)} prompts x {n}")
    rewards = reward(prompts=[p for p in prompts for _ in range(n)], completions=[c for o in outs for c in o],
                     answer=[ex.answer for ex in examples for _ in range(n)])
    per_problem = [rewards[i * n:(i + 1) * n] for i in range(len(examples))]
    return outs, [[(r or 0.0) >= 1.0 for r in rs] for rs in per_problem], per_problem


def evaluate_benchmark(name: str, examples: Sequence[Example], cfg: BenchmarkEvalConfig, *,
                       render: Callable[[str], str], reward: RewardFn, samples_path: str | Path,
                       greedy_generate: GenerateFn | None = None,
                       sample_generate: GenerateFn | None = None) -> dict[str, Any]:
    """One table row {benchmark, problems, greedy_pass@1, mean@N, pass@k ...}; writes every sample
    (benchmark, row, mode, sample, question, answer, completion, reward, correct) to ``samples_path``.

    ``render`` turns a question into a prompt; ``greedy_generate`` is needed when ``cfg.greedy``,
    ``sample_generate`` when ``cfg.num_samples`` > 0.
    """
    if not examples:
        raise ValueError(f"benchmark {name}: no examples")
    modes = []
    if cfg.greedy:
        modes.append(("greedy", greedy_generate, 1))
    if cfg.num_samples > 0:
        modes.append(("sample", sample_generate, cfg.num_samples))
    row: dict[str, Any] = {"benchmark": name, "problems": len(examples)}
    path = Path(samples_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for mode, generate, n in modes:
            if generate is None:
                raise ValueError(f"benchmark {name}: {mode} evaluation is on but no {mode}_generate was given")
            outs, correct, rewards = _scored(generate, n, examples, render, reward)
            for ex, completions, oks, rs in zip(examples, outs, correct, rewards):
                for i, (completion, ok, r) in enumerate(zip(completions, oks, rs)):
                    f.write(json.dumps({"benchmark": name, "row": ex.row, "mode": mode, "sample": i,
                                        "question": ex.question, "answer": ex.answer,
                                        "completion": completion, "reward": r, "correct": ok}) + "\n")
            counts = [sum(oks) for oks in correct]
            if mode == "greedy":
                row["greedy_pass@1"] = sum(counts) / len(examples)
            else:
                row[f"mean@{n}"] = sum(counts) / (n * len(examples))
                for k in pass_ks(n):
                    row[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in counts) / len(examples)
    return row


def load_eval_sets(cfg: BenchmarkEvalConfig, specs: Sequence[DatasetSpec] = ()) -> dict[str, list[Example]]:
    """name -> examples of every set to evaluate: the benchmarks of ``cfg.benchmarks`` (pulled copy or
    hub), then ``specs`` (each named by its ``name``); ``cfg.limit`` caps each set unless a spec has its own."""
    sets = {name: load_benchmark(name, cfg.data_root, cfg.limit) for name in benchmark_names(cfg.benchmarks)}
    for spec in specs:
        if spec.name in sets:
            raise DatasetError(f"two evaluation sets are named {spec.name!r}; give the dataset spec another name")
        sets[spec.name] = load_examples(dataclasses.replace(spec, limit=spec.limit or cfg.limit))
    return sets


def samples_file(name: str) -> str:
    """The samples file of set ``name``: its name made safe as a file name.

    >>> samples_file("math500"), samples_file("my set/v2")
    ('math500.samples.jsonl', 'my_set_v2.samples.jsonl')
    """
    return re.sub(r"[^\w.+-]+", "_", name) + ".samples.jsonl"


def evaluate_benchmarks(sets: dict[str, Sequence[Example]], cfg: BenchmarkEvalConfig, out_dir: str | Path,
                        **kw: Any) -> list[dict[str, Any]]:
    """``evaluate_benchmark`` on each set of ``sets`` (from load_eval_sets), samples in
    ``out_dir/<name>.samples.jsonl``; ``kw`` are its keyword arguments (render, reward, greedy_generate,
    sample_generate)."""
    return [evaluate_benchmark(name, examples, cfg, samples_path=Path(out_dir) / samples_file(name), **kw)
            for name, examples in sets.items()]


def with_average(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` plus an 'average' row: the unweighted mean over benchmarks of every rate column
    (the papers' "average over tasks"); a column missing from a benchmark is left out.

    >>> with_average([{"benchmark": "a", "problems": 2, "greedy_pass@1": 0.5}, {"benchmark": "b", "problems": 4, "greedy_pass@1": 0.0}])[-1]
    {'benchmark': 'average', 'problems': 6, 'greedy_pass@1': 0.25}
    """
    rows = list(rows)
    if len(rows) < 2:
        return rows
    columns = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in ("benchmark", "problems")]
    average: dict[str, Any] = {"benchmark": "average", "problems": sum(r["problems"] for r in rows)}
    for c in columns:
        if all(c in r for r in rows):
            average[c] = sum(r[c] for r in rows) / len(rows)
    return rows + [average]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of benchmark rows; columns in first-seen order, rates in percent.

    >>> print(format_table([{"benchmark": "aime24", "problems": 30, "greedy_pass@1": 0.1}]))
    | benchmark | problems | greedy_pass@1 |
    |---|---|---|
    | aime24 | 30 | 10.0 |
    """
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{100 * value:.1f}"
    return "" if value is None else str(value)
