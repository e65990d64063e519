"""The report's words come from its numbers: runs written as the trainer writes them, with known
accuracies, and the verdict, tables and config difference read back from report.md, the
multi-seed verdict from scripts/aggregate_seeds.py."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from critique_rl.report import continuations, load_run, write_report

ROOT = Path(__file__).resolve().parents[1]


def fake_run(run_dir: Path, method: str, hard: list[float], easy: float, steps: int, lr: float = 1e-4,
             source: Path | None = None) -> Path:
    """A run directory: config.yaml, metrics.jsonl (eval every 2 steps) and final_eval.json.
    With ``source``, the log starts with that run's log, as a continued run's does."""
    run_dir.mkdir(parents=True)
    config = {"method": method, "seed": 0, "train": {"steps": steps, "learning_rate": lr}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [json.loads(line) for line in (source / "metrics.jsonl").read_text().splitlines()] if source else []
    for step in range(len(rows), steps + 1):
        row = {"step": step} if step == 0 else {"step": step, "reward": 0.5, "entropy": 0.03 + step / 1000,
                                                 "frac_all_fail": 0.5, "time/step": 1.0}
        if step % 2 == 0:
            row |= {"eval/easy_pass1": easy, "eval/hard_pass1": hard[min(step // 2, len(hard) - 1)]}
        rows.append(row)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    final = {"step": steps, "eval/easy_pass1": easy, "eval/hard_pass1": hard[-1], "eval/easy_pass@4": easy,
             "eval/hard_pass@4": hard[-1]}
    (run_dir / "final_eval.json").write_text(json.dumps(final))
    return run_dir


def test_verdict_table_and_config_difference_come_from_the_runs(tmp_path: Path):
    grpo = fake_run(tmp_path / "grpo", "grpo", [0.0, 0.0, 0.0], 0.99, 4)
    cgrpo = fake_run(tmp_path / "critique_grpo", "critique_grpo", [0.0, 0.1, 0.26], 0.985, 4)
    slower = fake_run(tmp_path / "slow", "grpo", [0.0, 0.0, 0.0, 0.05], 0.93, 6, lr=5e-5)
    summary = write_report({"grpo": grpo, "critique_grpo": cgrpo, "slow": slower}, tmp_path / "out", 4,
                           labels={"grpo": "GRPO", "critique_grpo": "Critique-GRPO"}, config_name="toy",
                           pairs=[("critique_grpo", "grpo"), ("critique_grpo", "slow")], extra={"seed": 0})
    assert summary["seed"] == 0 and summary["methods"]["critique_grpo"]["hard_pass1"] == 0.26
    lines = (tmp_path / "out" / "report.md").read_text().splitlines()
    assert "Seed 0, config toy." in lines
    # The early evaluation is the shared one nearest a third of the shortest run (4 steps): step 2.
    assert ("- **Critique-GRPO vs GRPO** — hard: Critique-GRPO wins by +0.26 (Critique-GRPO 0.26 vs GRPO 0.00); "
            "easy: tie (Critique-GRPO 0.985 vs GRPO 0.99); "
            "hard at step 2: Critique-GRPO wins by +0.10 (Critique-GRPO 0.10 vs GRPO 0.00).") in lines
    assert ("- **Critique-GRPO vs slow** — hard: Critique-GRPO wins by +0.21 (Critique-GRPO 0.26 vs slow 0.05); "
            "easy: Critique-GRPO wins by +0.055 (Critique-GRPO 0.985 vs slow 0.93); "
            "hard at step 2: Critique-GRPO wins by +0.10 (Critique-GRPO 0.10 vs slow 0.00).") in lines
    assert "| run | steps | hard pass@1 (greedy) | easy pass@1 (greedy) | hard pass@1 at step 2 (greedy) " \
           "| hard pass@4 (sampled) | easy pass@4 (sampled) " \
           "| hard pass@1 before RL | easy pass@1 before RL | final entropy | s / step |" in lines
    assert "| Critique-GRPO | 4 | 0.260 | 0.985 | 0.100 | 0.260 | 0.985 | 0.000 | 0.985 | 0.034 | 1.000 |" in lines
    assert "| setting | GRPO | Critique-GRPO | slow |" in lines
    assert "| `method` | `grpo` | `critique_grpo` | `grpo` |" in lines
    assert "| `train.steps` | `4` | `4` | `6` |" in lines and "| `train.learning_rate` | `0.0001` | `0.0001` | `5e-05` |" in lines
    assert not any(line.startswith("| `seed`") for line in lines)       # equal settings are not listed
    assert (tmp_path / "out" / "curves.png").stat().st_size > 10_000


def test_a_continued_run_is_found_and_drawn_from_where_it_parts(tmp_path: Path):
    grpo = fake_run(tmp_path / "grpo", "grpo", [0.0, 0.1], 0.99, 2)
    longer = fake_run(tmp_path / "longer", "grpo", [0.0, 0.1, 0.2, 0.3], 0.99, 6, source=grpo)
    other = fake_run(tmp_path / "other", "critique_grpo", [0.0, 0.2], 0.99, 2)
    runs = {"GRPO": load_run(grpo), "longer": load_run(longer), "other": load_run(other)}
    assert continuations(runs) == {"longer": ("GRPO", 2)}


def aggregate(tmp_path: Path, per_seed: list[tuple[float, float, float]]) -> list[str]:
    """aggregate_seeds.py over pipeline summaries with the given (GRPO, Critique-GRPO, equal compute) hard pass@1."""
    dirs = []
    for seed, hard in enumerate(per_seed):
        methods = {m: {"easy_pass1": 0.99, "hard_pass1": h, "easy_pass_at_k": 1.0, "hard_pass_at_k": h, "k": 4,
                       "final_entropy": 0.03, "steps": 150, "seconds_per_step": 0.6}
                   for m, h in zip(("grpo", "critique_grpo", "grpo_equal_compute"), hard)}
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"wall_seconds": 600.0, "seed": seed, "methods": methods}))
        dirs.append(str(d))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate_seeds.py"), *dirs],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return out.splitlines()


def test_aggregate_seeds_gives_the_verdict_with_mean_and_spread(tmp_path: Path):
    lines = aggregate(tmp_path, [(0.23, 0.395, 0.24), (0.0, 0.27, 0.0), (0.0, 0.43, 0.0)])
    assert "| method (3 seeds) | easy pass@1 (greedy) | hard pass@1 (greedy) | easy pass@4 (sampled) " \
           "| hard pass@4 (sampled) | final entropy | steps | s / step |" in lines
    assert ("- **Critique-GRPO vs GRPO** — hard: Critique-GRPO wins by +0.288 ± 0.133 (Critique-GRPO 0.365 vs "
            "GRPO 0.077, means over 3 seeds; Critique-GRPO ahead in 3 of 3 seeds); easy: tie (Critique-GRPO 0.99 vs "
            "GRPO 0.99, means over 3 seeds, difference +0.000 ± 0.00).") in lines
    assert "- 3 seeds (0, 1, 2): a difference is the mean of the per-seed differences ± their sample std." in lines
    summary = json.loads(lines[-1])
    assert summary["seeds"] == [0, 1, 2] and abs(summary["methods"]["critique_grpo"]["hard_pass1"]["mean"] - 0.365) < 1e-9
