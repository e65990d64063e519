"""The entropy–reward law fit and the comparison of interventions."""

import json
import subprocess
import sys

import numpy as np
import pytest

from critique_rl.compare import best_intervention, markdown_table
from critique_rl.entropy_law import (
    fit_entropy_law,
    fit_on_prefix,
    pairs_from_jsonl,
    pairs_from_run,
)

CLI = [sys.executable, "-m", "critique_rl.cli"]


def test_fit_recovers_a_known_law_from_noisy_points():
    rng = np.random.default_rng(0)
    H = np.linspace(0.05, 1.2, 120)                     # entropy falling over training, in nats
    R = -0.15 * np.exp(H) + 0.85 + rng.normal(0, 0.01, H.size)
    fit = fit_entropy_law(H, R)
    assert fit.a == pytest.approx(0.15, rel=0.05) and fit.b == pytest.approx(0.85, rel=0.05)
    assert fit.ceiling == pytest.approx(0.70, rel=0.05) and fit.rmse < 0.015


def test_prefix_fit_scores_the_later_points_of_each_run():
    H = np.linspace(1.5, 0.1, 50)                       # step order: entropy decreasing
    fit = fit_on_prefix([(H, -0.2 * np.exp(H) + 0.9)], fraction=0.4)
    assert fit.points == 20 and fit.heldout_points == 30 and fit.heldout_rmse < 1e-6
    # Two runs are cut one by one: 7 + 14 fitted, 3 + 6 held out; the second run's law differs.
    early, late = np.linspace(1.0, 0.1, 10), np.linspace(1.0, 0.1, 20)
    fit = fit_on_prefix([(early, -0.2 * np.exp(early) + 0.9), (late, -0.2 * np.exp(late) + 0.8)], fraction=0.7)
    assert (fit.points, fit.heldout_points) == (21, 9) and fit.heldout_rmse > 0.01
    with pytest.raises(ValueError, match="leaves 2 points to fit"):
        fit_on_prefix([(H[:4], H[:4])], fraction=0.5)


def test_too_few_points_and_bad_jsonl_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 3"):
        fit_entropy_law([0.1, 0.2], [0.5, 0.4])
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"entropy": 0.3, "accuracy": 0.5}\n{"entropy": 0.2}\n')
    with pytest.raises(ValueError, match=r"pairs.jsonl:2: expected an object with numeric 'entropy' and 'accuracy'"):
        pairs_from_jsonl(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="pairs.jsonl: no points"):
        pairs_from_jsonl(path)
    with pytest.raises(ValueError, match="no step logs both 'entropy' and 'eval/typo'"):
        pairs_from_run(write_metrics(tmp_path, [{"step": 1, "entropy": 0.3, "reward": 0.5}]), "eval/typo")


def test_accuracy_key_keeps_eval_steps_with_their_own_entropy(tmp_path):
    run = write_metrics(tmp_path, [{"step": 0, "eval/hard_pass1": 0.1},          # before training: no entropy
                                   {"step": 1, "entropy": 0.5, "reward": 0.2},
                                   {"step": 2, "entropy": 0.4, "reward": 0.3, "eval/hard_pass1": 0.25}])
    assert pairs_from_run(run) == ([0.5, 0.4], [0.2, 0.3])
    assert pairs_from_run(run, "eval/hard_pass1") == ([0.4], [0.25])


def write_metrics(run_dir, rows):
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def test_fit_entropy_cli_on_a_jsonl_file(tmp_path):
    H = np.linspace(0.1, 1.0, 10)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"entropy": h, "accuracy": -0.1 * np.exp(h) + 0.6}) + "\n" for h in H))
    out = subprocess.run([*CLI, "fit-entropy", "--jsonl", str(path), "--json", "--plot", str(tmp_path / "p.png")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    fit = json.loads(out.strip().splitlines()[-1])
    assert fit["a"] == pytest.approx(0.1, rel=1e-3) and fit["ceiling"] == pytest.approx(0.5, rel=1e-3)
    assert (tmp_path / "p.png").stat().st_size > 5000


def test_best_intervention_ranks_by_hard_accuracy_then_pass_at_k():
    s = {"grpo": {"hard_pass1": 0.9, "hard_pass_at_k": 1.0},
         "clip_cov": {"hard_pass1": 0.2, "hard_pass_at_k": 0.3}, "gppo": {"hard_pass1": 0.2, "hard_pass_at_k": 0.5}}
    assert best_intervention(s) == "gppo"          # grpo is not an intervention
    with pytest.raises(ValueError, match="needs at least one of"):
        best_intervention({"grpo": s["grpo"]})


def test_compare_end_to_end_on_the_tiny_preset(tmp_path):
    out = tmp_path / "cmp"
    subprocess.run([*CLI, "compare", "--config", "tiny", "--out", str(out), "--methods", "grpo,clip_cov,critique_grpo+best",
                    "train.steps=2"], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads((out / "compare.json").read_text())
    assert list(result["methods"]) == ["grpo", "clip_cov", "critique_grpo+best"]
    best = ["loss.intervention=clip_cov", "loss.scale_rewards=group", "method=critique_grpo"]
    assert result["overrides"]["critique_grpo+best"] == best
    assert (out / "curves.png").stat().st_size > 10_000
    text = (out / "compare.md").read_text()
    table = markdown_table(result)
    assert text.endswith(table) and table.count("\n|") == 4 and "ratio is 1" in table and "| hard pass@1 (greedy) |" in table
    assert text.startswith("# Every method from one warm start (seed 0, config tiny + train.steps=2)\n")
    assert "- **clip_cov vs grpo** — hard: tie (clip_cov 0.00 vs grpo 0.00); easy: tie (clip_cov 0.00 vs grpo 0.00)." in text
    assert result["config"] == "tiny + train.steps=2"
    rows = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert "entropy/delta" in rows[2] and "entropy/cov_logp_adv" in rows[2] and "entropy/p80" in rows[2]
    assert rows[2]["entropy/probe"] > 0 and result["methods"]["grpo"]["probe_entropy"] > 0
    fit = subprocess.run([*CLI, "fit-entropy", str(out / "grpo"), str(out / "clip_cov"), "--json"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert {"a", "b", "ceiling", "rmse"} <= set(json.loads(fit.strip().splitlines()[-1]))
