"""Time and peak memory of one RL step as the group size and the completion length grow.

    python scripts/bench_growth.py [--prompts 8] [--steps 3] [--warmup 1] [--rounds 2] [--threads 1]

Three series, each configuration for GRPO and Critique-GRPO (``--methods``):

* ``group``:  group size (``rollout.num_generations``) 4, 8, 16 at completion length 64, the
  default token budgets (``train.max_tokens_per_microbatch`` 16384, ``rollout.generation_batch_size`` 256);
* ``length``: completion length 64, 128, 256 at group size 8, the default budgets;
* ``budget``: the ``group`` series again under small budgets (``--budget-tokens`` 2048 tokens per
  training micro-batch, ``--budget-generation`` 32 sequences per ``generate`` call), which every
  batch of the series fills or exceeds: peak memory then stays flat as the batch grows.

The policy is a random-weight tiny Qwen2 of the preset's ``warmstart`` sizes (context
``--max-position-embeddings`` 1024, so prompt plus a 256-token completion, and refinement
prompts that contain such an attempt, fit). Random weights score 0, so every Critique-GRPO group
fails entirely and every attempt is critiqued and refined: its costliest case. Completion lengths
are forced: the child sets ``generation_config.min_new_tokens`` to the completion length, so
every completion (and refinement) is exactly that long and the table's lengths are real.

Each configuration runs in a fresh subprocess: the peak resident set size (Linux VmHWM, reset
through /proc/self/clear_refs after the trainer is built, so it covers the RL steps; falls back
to ``getrusage(RUSAGE_SELF).ru_maxrss``, the whole process) is that configuration's alone.
``step_peak_mb`` is that peak minus the resident size after setup (interpreter, torch, model,
optimizer): the memory the steps themselves add, glibc's retained free memory included.
Configurations run round-robin ``--rounds`` times (so a burst of load from other jobs spreads
over all of them); the table gives the median of the per-round medians of step time (wall and
process CPU time) and the largest peak. On a machine shared with other jobs use ``--threads 1``
(see bench_vs_trl.py). The last line of output is one JSON object with the table rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_BUDGET = (16384, 256)        # train.max_tokens_per_microbatch, rollout.generation_batch_size (config defaults)


def rss_mb(field: str) -> float | None:
    """VmRSS / VmHWM of this process in MiB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(spec: dict) -> None:
    """One configuration: build the trainer, run warm-up + measured steps, print one JSON line."""
    from critique_rl.config import load_config
    from critique_rl.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    cfg = load_config(spec["preset"], [
        f"method={spec['method']}", f"seed={spec['seed']}", f"model.name_or_path={spec['model']}", "model.device=cpu",
        f"rollout.num_generations={spec['num_generations']}", f"rollout.max_completion_length={spec['length']}",
        f"rollout.generation_batch_size={spec['generation_batch_size']}",
        f"train.max_tokens_per_microbatch={spec['max_tokens_per_microbatch']}",
        f"train.prompts_per_step={spec['prompts']}", "eval.every=0",
    ])
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), show_progress=False)
        trainer.model.generation_config.min_new_tokens = spec["length"]     # force the completion length
        setup = rss_mb("VmRSS")
        hwm_reset = reset_peak()
        rows = []
        for i in range(spec["warmup"] + spec["steps"]):
            t, c = time.perf_counter(), time.process_time()
            metrics = trainer.step()
            metrics["time/step"] = time.perf_counter() - t
            metrics["time/cpu"] = time.process_time() - c
            if i >= spec["warmup"]:
                rows.append(metrics)
        peak = rss_mb("VmHWM") if hwm_reset else None
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)

    def med(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in rows)

    n = spec["prompts"] * spec["num_generations"]
    print(json.dumps({
        "seconds_per_step": med("time/step"), "cpu_seconds_per_step": med("time/cpu"),
        "phases": {p: med(f"time/{p}") for p in ("sample", "critique", "refine", "train")},
        "completion_tokens_per_step": med("completions/mean_length") * n,
        "refinements_per_step": med("refine/critiques"),
        "rss_setup_mb": setup, "peak_rss_mb": peak if peak is not None else ru_maxrss,
        "peak_method": "VmHWM reset after setup" if peak is not None else "ru_maxrss (whole process)",
        "ru_maxrss_mb": ru_maxrss,
    }))


def make_model(preset: str, max_positions: int, out: Path, seed: int) -> Path:
    from critique_rl.config import load_config
    from critique_rl.modeling import build_char_tokenizer, build_tiny_model

    cfg = load_config(preset, [f"warmstart.max_position_embeddings={max_positions}"])
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg.warmstart, tokenizer, seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def configurations(args) -> list[dict]:
    """(series, method, group size, length, budgets) rows; the same configuration may be in two series."""
    budget = (args.budget_tokens, args.budget_generation)
    rows = []
    for method in args.methods:
        for n in args.groups:
            rows.append(dict(series="group", method=method, num_generations=n, length=args.group_length, budget=DEFAULT_BUDGET))
        for length in args.lengths:
            rows.append(dict(series="length", method=method, num_generations=args.length_group, length=length, budget=DEFAULT_BUDGET))
        for n in args.groups:
            rows.append(dict(series="budget", method=method, num_generations=n, length=args.group_length, budget=budget))
    return rows


def key(row: dict) -> tuple:
    return row["method"], row["num_generations"], row["length"], row["budget"]


def run_child(row: dict, args, model: Path) -> dict:
    spec = dict(method=row["method"], num_generations=row["num_generations"], length=row["length"],
                max_tokens_per_microbatch=row["budget"][0], generation_batch_size=row["budget"][1],
                prompts=args.prompts, steps=args.steps, warmup=args.warmup, threads=args.threads,
                seed=args.seed, preset=args.preset, model=str(model))
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"configuration {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="toy", help="config preset: model sizes (warmstart section) and task")
    parser.add_argument("--methods", default="grpo,critique_grpo", type=lambda s: s.split(","))
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--groups", default="4,8,16", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--lengths", default="64,128,256", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--group-length", type=int, default=64, help="completion length of the group and budget series")
    parser.add_argument("--length-group", type=int, default=8, help="group size of the length series")
    parser.add_argument("--budget-tokens", type=int, default=2048, help="train.max_tokens_per_microbatch of the budget series")
    parser.add_argument("--budget-generation", type=int, default=32, help="rollout.generation_batch_size of the budget series")
    parser.add_argument("--max-position-embeddings", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3, help="measured steps per configuration (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="round-robin repetitions of every configuration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    rows = configurations(args)
    unique = list(dict.fromkeys(key(r) for r in rows))
    results: dict[tuple, list[dict]] = {k: [] for k in unique}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(args.preset, args.max_position_embeddings, Path(tmp) / "model", args.seed)
        for r in range(args.rounds):
            for k in unique:
                row = next(x for x in rows if key(x) == k)
                res = run_child(row, args, model)
                results[k].append(res)
                print(f"round {r + 1}  {k[0]:13s} n={k[1]:<3d} L={k[2]:<4d} budget={k[3]}  "
                      f"{res['seconds_per_step']:.3f} s/step (CPU {res['cpu_seconds_per_step']:.3f} s)  peak {res['peak_rss_mb']:.0f} MiB "
                      f"(setup {res['rss_setup_mb']:.0f})", flush=True)

    table = []
    for row in rows:
        runs = results[key(row)]
        peak = max(x["peak_rss_mb"] for x in runs)
        setup = statistics.median(x["rss_setup_mb"] for x in runs)
        seconds = statistics.median(x["seconds_per_step"] for x in runs)
        table.append({
            "series": row["series"], "method": row["method"], "num_generations": row["num_generations"],
            "max_completion_length": row["length"], "prompts_per_step": args.prompts,
            "sequences_per_step": args.prompts * row["num_generations"],
            "max_tokens_per_microbatch": row["budget"][0], "generation_batch_size": row["budget"][1],
            "seconds_per_step": seconds,
            "cpu_seconds_per_step": statistics.median(x["cpu_seconds_per_step"] for x in runs),
            "phases": {p: statistics.median(x["phases"][p] for x in runs) for p in runs[0]["phases"]},
            "completion_tokens_per_step": statistics.median(x["completion_tokens_per_step"] for x in runs),
            "refinements_per_step": statistics.median(x["refinements_per_step"] for x in runs),
            "tokens_per_second": statistics.median(x["completion_tokens_per_step"] / x["seconds_per_step"] for x in runs),
            "rss_setup_mb": setup, "peak_rss_mb": peak, "step_peak_mb": peak - setup,
            "ru_maxrss_mb": max(x["ru_maxrss_mb"] for x in runs),
            "seconds_per_round": [round(x["seconds_per_step"], 4) for x in runs],
        })
    # Growth relative to the first configuration of each (series, method).
    for t in table:
        base = next(b for b in table if b["series"] == t["series"] and b["method"] == t["method"])
        t["time_ratio"] = t["seconds_per_step"] / base["seconds_per_step"]
        t["cpu_time_ratio"] = t["cpu_seconds_per_step"] / base["cpu_seconds_per_step"]
        t["step_peak_ratio"] = t["step_peak_mb"] / base["step_peak_mb"] if base["step_peak_mb"] > 0 else None

    print(f"\n{'series':7s} {'method':13s} {'n':>3s} {'L':>4s} {'seqs':>5s} {'budget':>11s} {'s/step':>7s} "
          f"{'x':>5s} {'CPU s':>6s} {'x':>5s} {'tok/s':>6s} {'peak MiB':>8s} {'step MiB':>8s}")
    for t in table:
        print(f"{t['series']:7s} {t['method']:13s} {t['num_generations']:3d} {t['max_completion_length']:4d} "
              f"{t['sequences_per_step']:5d} {t['max_tokens_per_microbatch']:>5d}/{t['generation_batch_size']:<5d} "
              f"{t['seconds_per_step']:7.3f} {t['time_ratio']:5.2f} {t['cpu_seconds_per_step']:6.3f} {t['cpu_time_ratio']:5.2f} "
              f"{t['tokens_per_second']:6.0f} "
              f"{t['peak_rss_mb']:8.0f} {t['step_peak_mb']:8.0f}")
    import transformers
    print(json.dumps({
        "rows": table,
        "config": {"preset": args.preset, "prompts_per_step": args.prompts, "steps": args.steps, "warmup": args.warmup,
                   "rounds": args.rounds, "threads": args.threads, "max_position_embeddings": args.max_position_embeddings,
                   "model": "random weights, lengths forced by min_new_tokens"},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "loadavg_end": list(os.getloadavg())},
        "wall_seconds": time.perf_counter() - start,
    }))


if __name__ == "__main__":
    main()
