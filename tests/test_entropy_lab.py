"""The entropy–reward law fit and the comparison of interventions."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from critique_rl.compare import (
    COMBINED,
    DEFAULT_METHODS,
    METHODS,
    aggregate,
    best_intervention,
    compare_markdown,
    entropy_columns,
    markdown_table,
    mean_std,
    stat,
)
from critique_rl.entropy_law import (
    EntropyLawFit,
    fit_entropy_law,
    fit_on_prefix,
    mean_prediction,
    pairs_from_jsonl,
    pairs_from_run,
    r_squared,
    window_means,
    window_points,
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
    out = subprocess.run([*CLI, "fit-entropy", "--jsonl", str(path), "--json", "--plot", str(tmp_path / "p.png"),
                          "--window", "3"], capture_output=True, text=True, timeout=120, check=True).stdout
    fit = json.loads(out.strip().splitlines()[-1])
    assert fit["a"] == pytest.approx(0.1, rel=1e-3) and fit["ceiling"] == pytest.approx(0.5, rel=1e-3)
    assert fit["r2"] == pytest.approx(1.0) and fit["heldout_mean_error"] is None
    # 10 points in windows of 3: 3 means (the last point is dropped); a mean of exp is not exp of the
    # mean, so the law fitted to the means is close to, not exactly, the points' law.
    assert fit["window"] == 3 and fit["window_points"] == 3 and fit["r2_window"] > 0.999
    assert fit["window_ceiling"] == pytest.approx(0.5, abs=0.01)
    assert (tmp_path / "p.png").stat().st_size > 5000
    out = subprocess.run([*CLI, "fit-entropy", "--jsonl", str(path), "--json", "--plot", str(tmp_path / "p.png"),
                          "--fit-fraction", "0.5", "--heldout-steps", "2"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    fit = json.loads(out.strip().splitlines()[-1])
    assert (fit["points"], fit["heldout_points"], fit["heldout_mean_points"]) == (5, 5, 2)
    assert fit["heldout_mean_error"] == pytest.approx(0.0, abs=1e-6) and fit["window_a"] is None   # 5 steps: no 3 windows
    assert fit["heldout_actual_mean"] == pytest.approx(np.mean(-0.1 * np.exp(H[-2:]) + 0.6))


def test_r_squared_and_window_means_by_hand():
    # SS_tot of [1, 2, 3, 4] = 2.25 + 0.25 + 0.25 + 2.25 = 5; SS_res of [1, 3, 3, 3] = 0 + 1 + 0 + 1 = 2
    assert r_squared([1, 2, 3, 4], [1, 3, 3, 3]) == pytest.approx(1 - 2 / 5)
    assert r_squared([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(1 - 20 / 5)      # worse than the mean: negative
    assert r_squared([0.3, 0.3, 0.3], [0.3, 0.2, 0.3]) is None                   # constant accuracy: undefined
    assert window_means([1, 2, 3, 4, 5, 6, 7], 3) == [2.0, 5.0] and window_means([1, 2], 3) == []
    with pytest.raises(ValueError, match="--window must be at least 1"):
        window_means([1.0], 0)
    # each run on its own: a window never spans two runs (the 4th point of run 1 and the 1st of run 2)
    H, R = window_points([([1, 3, 5, 7, 9], [0, 2, 4, 6, 8]), ([11, 13, 15], [1, 1, 4])], 2)
    assert (H, R) == ([2.0, 6.0, 12.0], [1.0, 5.0, 1.0])


def test_heldout_mean_error_by_hand():
    fit = EntropyLawFit(a=0.2, b=0.9, ceiling=0.7, rmse=0.0, points=3)
    # law at H = 0: 0.7, at H = ln 2: 0.5; predicted mean (0.7 + 0.5) / 2 = 0.6, actual 0.55 -> +0.05
    assert mean_prediction(fit, [0.0, np.log(2)], [0.5, 0.6]) == pytest.approx((0.05, 0.6, 0.55))
    # 20 steps on the law, fitted on the first 10; steps 10-14 are 0.5 below the law (they count in
    # heldout_rmse only), the last 5 are 0.1 below it: the fit over-predicts their mean by exactly 0.1.
    H = np.linspace(1.5, 0.1, 20)
    R = -0.2 * np.exp(H) + 0.9
    R[10:15] -= 0.5
    R[15:] -= 0.1
    fit = fit_on_prefix([(H, R)], 0.5, window=5, heldout_steps=5)
    assert (fit.points, fit.heldout_points, fit.heldout_mean_points) == (10, 10, 5)
    assert fit.r2 == pytest.approx(1.0) and fit.heldout_mean_error == pytest.approx(0.1)
    assert fit.heldout_predicted_mean == pytest.approx(np.mean(-0.2 * np.exp(H[15:]) + 0.9))
    assert fit.heldout_actual_mean == pytest.approx(fit.heldout_predicted_mean - 0.1)
    assert fit.heldout_rmse == pytest.approx(np.sqrt((5 * 0.5 ** 2 + 5 * 0.1 ** 2) / 10))
    assert fit.window_points == 2 and fit.window_a is None and fit.r2_window is None     # 2 windows of the 10 fitted steps
    # A held-out part shorter than --heldout-steps: all of it, never a fitted step.
    late = -0.2 * np.exp(H) + 0.9
    late[18:] -= 0.1
    fit = fit_on_prefix([(H, late)], 0.9, heldout_steps=30)
    assert (fit.heldout_points, fit.heldout_mean_points) == (2, 2) and fit.heldout_mean_error == pytest.approx(0.1)
    fit = fit_on_prefix([(H, R)], 1.0, window=5)                 # no held-out steps: 4 windows of 5
    assert fit.heldout_mean_error is None and fit.window_points == 4 and fit.r2_window is not None


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
    assert text.endswith(table) and table.count("\n|") == 5 and "ratio is 1" in table and "| hard pass@1 (greedy) |" in table
    assert "Command: `critique-rl compare --config tiny --methods grpo,clip_cov,critique_grpo+best --out " in table
    assert "| token entropy, first 10 steps |" in table and "| R² (steps) |" in table and " ± " not in table
    assert (out / "entropy.png").is_file() and (out / "entropy_reward.png").is_file()
    assert text.startswith("# Every method from one warm start (seed 0, config tiny + train.steps=2)\n")
    assert "- **clip_cov vs grpo** — hard: tie (clip_cov 0.00 vs grpo 0.00); easy: tie (clip_cov 0.00 vs grpo 0.00)." in text
    assert result["config"] == "tiny + train.steps=2"
    rows = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert "entropy/delta" in rows[2] and "entropy/cov_logp_adv" in rows[2] and "entropy/p80" in rows[2]
    assert rows[2]["entropy/probe"] > 0 and result["methods"]["grpo"]["probe_entropy"] > 0
    fit = subprocess.run([*CLI, "fit-entropy", str(out / "grpo"), str(out / "clip_cov"), "--json"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert {"a", "b", "ceiling", "rmse", "r2", "r2_window", "window_ceiling"} <= set(json.loads(fit.strip().splitlines()[-1]))


def test_method_list_and_entropy_columns():
    assert DEFAULT_METHODS == ["grpo", "clip_higher", "clip_cov", "kl_cov", "gppo", "top_entropy", "entropy_bonus",
                               "critique_grpo", COMBINED]
    assert "grpo_std" in METHODS and "grpo_std" not in DEFAULT_METHODS
    assert METHODS["entropy_bonus"] == ["method=grpo", "loss.entropy_coef=0.01"]
    rows = [{"step": 0, "eval/hard_pass1": 0.0}] + [
        {"step": s, "entropy": 0.1 * s, "entropy/top20_mean": 0.5 * s, "clip_ratio/region_mean": 0.01 * s} for s in range(1, 13)]
    cols = entropy_columns({"metrics": rows})
    # first 10 steps: mean of 0.1..1.0 = 0.55; last 10 (steps 3..12): mean of 0.3..1.2 = 0.75
    assert cols["initial_token_entropy"] == pytest.approx(0.55) and cols["final_token_entropy"] == pytest.approx(0.75)
    assert cols["initial_top20_entropy"] == pytest.approx(2.75) and cols["final_top20_entropy"] == pytest.approx(3.75)
    assert cols["acted_on"] == cols["clipped"] == pytest.approx(0.065)           # no selected_frac: the clipped share
    assert entropy_columns({"metrics": rows, "config": {"loss": {"entropy_coef": 0.01}}})["acted_on"] == 1.0   # a bonus: every token
    rows[5]["intervention/selected_frac"], rows[6]["intervention/selected_frac"] = 0.2, 0.4
    assert entropy_columns({"metrics": rows})["acted_on"] == pytest.approx(0.3)


def seed_result(seed, grpo_hard, bonus_hard, mini_batches=1):
    def summary(hard, sps):
        return {"hard_pass1": hard, "easy_pass1": 1.0, "hard_pass@4": hard + 0.1, "hard_pass@16": None, "k": 4,
                "initial_token_entropy": 0.5, "final_token_entropy": 0.1 * (seed + 1), "r2": None, "seconds_per_step": sps}
    return {"seed": seed, "config": "entropy", "command": "critique-rl compare --seeds 0,1", "k": 4,
            "methods": {"grpo": summary(grpo_hard, 1.0), "entropy_bonus": summary(bonus_hard, 2.0)},
            "overrides": {"grpo": ["method=grpo"], "entropy_bonus": ["method=grpo", "loss.entropy_coef=0.01"]},
            "best": None, "on_policy": mini_batches == 1, "train_seconds": 10.0, "wall_seconds": 12.0 + seed}


def test_aggregate_over_seeds_by_hand():
    assert stat([0.1, 0.3, None]) == {"mean": pytest.approx(0.2), "std": pytest.approx(0.1 * 2 ** 0.5), "n": 2,
                                      "values": [0.1, 0.3, None]}
    assert mean_std(stat([0.1, 0.3])) == "0.200 ± 0.141" and mean_std(stat([0.25])) == "0.250"
    agg = aggregate([seed_result(0, 0.1, 0.3, mini_batches=2), seed_result(1, 0.2, 0.6, mini_batches=2)])
    bonus = agg["methods"]["entropy_bonus"]
    # hard pass@1 0.3 and 0.6: mean 0.45, sample std |0.6 - 0.3| / sqrt(2) = 0.2121
    assert bonus["hard_pass1"]["mean"] == pytest.approx(0.45) and bonus["hard_pass1"]["std"] == pytest.approx(0.3 / 2 ** 0.5)
    assert bonus["final_token_entropy"]["values"] == [0.1, 0.2] and bonus["hard_pass@16"]["mean"] is None
    assert agg["seeds"] == [0, 1] and agg["wall_seconds"] == {"0": 12.0, "1": 13.0} and agg["total_wall_seconds"] == 25.0
    text = compare_markdown(agg)
    assert text.startswith("# Every method from one warm start (seeds 0, 1, config entropy)\n")
    # the verdict pairs the seeds: differences 0.2 and 0.4, mean 0.3 ± 0.141
    assert "- **entropy_bonus vs grpo** — hard: entropy_bonus wins by +0.30 ± 0.141 (entropy_bonus 0.45 vs grpo 0.15, " \
           "means over 2 seeds; entropy_bonus ahead in 2 of 2 seeds); easy: tie" in text
    assert "Each cell: mean ± sample std over seeds 0, 1" in text and "Command: `critique-rl compare --seeds 0,1`" in text
    row = next(line for line in text.splitlines() if line.startswith("| entropy_bonus |"))
    assert row.startswith("| entropy_bonus | 0.450 ± 0.212 | 1.000 ± 0.000 | 0.550 ± 0.212 | 0.500 ± 0.000 | 0.150 ± 0.071 |")
    assert "hard pass@16" not in text                         # not logged by any run: no column
    assert "ratio is 1" not in text                           # mini_batches 2: the ratio moves
    one = compare_markdown(seed_result(0, 0.1, 0.3))          # one seed: values alone, and the on-policy note
    assert "| entropy_bonus | 0.300 | 1.000 | 0.400 | 0.500 | 0.100 |" in one and "ratio is 1" in one


def test_compare_with_jobs_trains_the_same_runs_in_parallel_processes(tmp_path):
    """--jobs 2 trains the methods two at a time in spawned processes (one torch thread each here, as
    the sequential run under OMP_NUM_THREADS=1): the same runs, the same table, the same best."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        subprocess.run([*CLI, "compare", "--config", "tiny", "--out", str(out), "--jobs", jobs, "--methods",
                        "grpo,entropy_bonus,critique_grpo,critique_grpo+best", "train.steps=2", "loss.entropy_coef=0.01"],
                       capture_output=True, text=True, timeout=300, check=True, env=env)
        results[jobs] = json.loads((out / "compare.json").read_text())
    sequential, parallel = results["1"], results["2"]
    assert list(parallel["methods"]) == ["grpo", "entropy_bonus", "critique_grpo", "critique_grpo+best"]
    assert parallel["best"] == sequential["best"] and parallel["overrides"] == sequential["overrides"]
    for name, values in sequential["methods"].items():
        for key in ("hard_pass1", "easy_pass1", "initial_token_entropy", "final_token_entropy"):
            assert parallel["methods"][name][key] == values[key], (name, key)
        assert parallel["methods"][name]["run_wall_seconds"] > 0
    assert "--jobs 2" in parallel["command"] and "--jobs" not in sequential["command"]


def test_compare_over_seeds_on_the_tiny_preset(tmp_path):
    out = tmp_path / "cmp"
    printed = subprocess.run([*CLI, "compare", "--config", "tiny", "--seeds", "0,1", "--out", str(out), "--methods",
                              "grpo,entropy_bonus", "train.steps=3"], capture_output=True, text=True, timeout=300,
                             check=True).stdout
    result = json.loads((out / "compare.json").read_text())
    assert result["seeds"] == [0, 1] and list(result["methods"]) == ["grpo", "entropy_bonus"]
    for method in result["methods"].values():
        for key in ("hard_pass1", "easy_pass1", "initial_token_entropy", "final_token_entropy", "initial_top20_entropy",
                    "final_top20_entropy", "ceiling", "r2", "r2_window", "acted_on", "clipped", "seconds_per_step",
                    "hard_pass@1", "hard_pass@2"):   # tiny: eval.pass_n = 2, so pass@1 and pass@2
            assert {"mean", "std", "values"} <= set(method[key]) and len(method[key]["values"]) == 2
        assert method["initial_token_entropy"]["mean"] > 0 and method["initial_token_entropy"]["std"] is not None
    assert set(result["wall_seconds"]) == {"0", "1"} and result["total_wall_seconds"] > 0
    assert f"total {result['total_wall_seconds']:.0f} s" in printed
    for seed in (0, 1):
        seed_json = json.loads((out / f"seed{seed}" / "compare.json").read_text())
        assert seed_json["seed"] == seed and (out / f"seed{seed}" / "curves.png").stat().st_size > 10_000
        final = json.loads((out / f"seed{seed}" / "grpo" / "final_eval.json").read_text())
        assert {"eval/hard_pass@1", "eval/hard_pass@2"} <= set(final)
    assert (out / "entropy.png").stat().st_size > 5000 and (out / "entropy_reward.png").stat().st_size > 5000
    assert (out / "methods.png").stat().st_size > 5000 and f"{out / 'methods.png'}" in printed
    text = (out / "compare.md").read_text()
    assert text.startswith("# Every method from one warm start (seeds 0, 1, config tiny + train.steps=3)")
    assert " ± " in text and "--seeds 0,1 --methods grpo,entropy_bonus" in text


def test_a_finished_run_with_other_settings_is_found(tmp_path):
    """compare reuses finished runs only when they trained with the settings asked now (critique_grpo+best
    changes when another intervention becomes the best); fields added since fill in with defaults."""
    from critique_rl.compare import changed_fields
    from critique_rl.config import apply_overrides, load_config
    from critique_rl.pipeline import save_config

    cfg = load_config("tiny", ["method=critique_grpo", "loss.epsilon_high=0.28"])
    run = tmp_path / "critique_grpo+best"
    assert changed_fields(run, cfg) == []                           # nothing recorded yet
    save_config(cfg, run)
    assert changed_fields(run, cfg) == []
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    del recorded["critic"]["noise"]                                # as written before the field existed
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    assert changed_fields(run, cfg) == []
    now = apply_overrides(load_config("tiny", ["method=critique_grpo"]), ["loss.entropy_coef=0.01"])
    assert changed_fields(run, now) == ["loss.epsilon_high", "loss.entropy_coef"]
