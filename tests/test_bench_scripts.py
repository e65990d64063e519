"""Smoke tests of the CPU benchmarks in scripts/: one tiny configuration each, seconds long.

They check that the scripts run against the current trainer and that their last line is the JSON
object the README's tables come from; they time nothing. The TRL comparison skips where TRL is
not installed (it is a benchmark-only dependency: the `bench` and `dev` extras).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run(script: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_vs_trl_runs_both_trainers_on_the_same_prompts():
    pytest.importorskip("trl")
    r = run("bench_vs_trl.py", "--preset", "tiny", "--steps", "1", "--warmup", "1", "--prompts", "2",
            "--num-generations", "2", "--max-completion-length", "8")
    assert r["same_prompts_per_step"]
    assert r["ratio_ours_over_trl"] > 0
    assert len(r["trl"]["steps"]) == len(r["ours"]["steps"]) == 1
    assert r["trl"]["generate_calls_per_step"] == r["ours"]["generate_calls_per_step"] == 1
    assert 0 < r["ours"]["completion_tokens_per_step"] <= 2 * 2 * 8


def test_bench_growth_forces_lengths_and_reports_peak_memory():
    r = run("bench_growth.py", "--preset", "tiny", "--methods", "grpo", "--prompts", "2", "--groups", "2",
            "--lengths", "8,16", "--group-length", "8", "--length-group", "2", "--budget-tokens", "16",
            "--budget-generation", "2", "--steps", "1", "--warmup", "0")
    rows = r["rows"]
    assert [(x["series"], x["max_completion_length"]) for x in rows] == [("group", 8), ("length", 8), ("length", 16), ("budget", 8)]
    for x in rows:
        assert x["completion_tokens_per_step"] == 2 * 2 * x["max_completion_length"]   # lengths forced
        assert x["peak_rss_mb"] >= x["rss_setup_mb"] > 0
    assert rows[-1]["max_tokens_per_microbatch"] == 16 and rows[-1]["generation_batch_size"] == 2


def test_bench_step_reports_the_phase_times_and_ratios(warm_policy):
    r = run("bench_step.py", "--model", str(warm_policy), "--steps", "1", "--warmup", "0", "--threads", "1")
    assert set(r["ratio_critique_over_grpo"]) == {"all_fail", "all_fail_max_critiques_2", "always", "async"}
    assert all(v > 0 for v in r["ratio_critique_over_grpo"].values())
    assert r["phases"]["grpo"]["refine"] == 0 and r["phases"]["critique_grpo_always"]["refine"] > 0
    # async: refinement is off the step (refine 0 there); its one step joins nothing yet, so no lag
    assert r["phases"]["critique_grpo_async"]["refine"] == 0 and r["async_lag"] is None
    two = run("bench_step.py", "--model", str(warm_policy), "--steps", "2", "--warmup", "0", "--threads", "1",
              "--variants", "grpo,critique_grpo_async")
    assert set(two["seconds_per_step"]) == {"grpo", "critique_grpo_async"} and two["async_lag"] == 1.0
    assert set(two["ratio_critique_over_grpo"]) == {"async"}


def test_bench_overlap_measures_both_settings_against_the_stub_critic(warm_policy):
    r = run("bench_overlap.py", "--model", str(warm_policy), "--steps", "1", "--warmup", "0", "--latency", "0.01")
    assert r["ratio_overlap_over_sequential"] > 0 and r["critique_s_sequential"] > 0


def test_bench_eval_memory_evaluates_long_prompts_and_reports_peak_memory(warm_policy):
    r = run("bench_eval_memory.py", "--problems", "5", "--max-chars", "900", "--model", str(warm_policy),
            "benchmarks.num_samples=2")
    assert r["problems"] == 5 and r["samples"] == 5 * (1 + 2)                 # greedy + 2 samples each
    assert r["prompts_cut_first_call"] == 5 and r["prompt_limit_tokens"] == 256 - 48      # every prompt exceeds the context
    assert r["sum_of_process_peaks_mb"] >= r["peak_rss_mb"] > 0 and r["processes"] >= 2 and r["wall_s"] > 0
    assert r["results"][0]["problems"] == 5


def test_bench_clipping_reports_the_clipped_share_per_setting(warm_policy):
    r = run("bench_clipping.py", "--model", str(warm_policy), "--config", "tiny", "--steps", "1",
            "--settings", "mb2_lr5e-5,mb4_it2_lr2e-4", "--threads", "1")
    assert list(r["settings"]) == ["mb2_lr5e-5", "mb4_it2_lr2e-4"]
    for row in r["settings"].values():
        assert 0 <= row["clipped_mean"] <= row["clipped_max"] <= 1 and row["seconds_per_step"] > 0
