"""Wall time per RL step by phase, GRPO vs Critique-GRPO, on the same config and warm start.

    python scripts/bench_step.py --model runs/demo/warmstart [--steps 12] [--warmup 2]

Each configuration trains from the same warm start for --warmup + --steps steps; the median of
the measured steps is reported per phase (sample, verify, critique, refine, train). The last
line of output is one JSON object with ``ratio_critique_over_grpo`` for refine_trigger
``all_fail`` (every failed attempt of an all-fail group critiqued, and at most 2 of them),
``always``, and ``async`` (refine.mode async: all-fail groups critiqued and refined by a background
process with refine.async_threads threads while the trainer goes on; ``lag`` and ``wait`` report its
mean lag in steps and the trainer's median wait for it). The first steps are the costliest for
Critique-GRPO: half the groups fail entirely.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from critique_rl.config import load_config
from critique_rl.pipeline import ensure_warm_start
from critique_rl.trainer import Trainer

PHASES = ("sample", "verify", "critique", "refine", "refine_wait", "train", "step")
VARIANTS = {
    "grpo": ["method=grpo"],
    "critique_grpo_all_fail": ["method=critique_grpo", "refine.refine_trigger=all_fail"],
    "critique_grpo_all_fail_max2": ["method=critique_grpo", "refine.refine_trigger=all_fail", "refine.max_critiques_per_group=2"],
    "critique_grpo_always": ["method=critique_grpo", "refine.refine_trigger=always"],
    "critique_grpo_async": ["method=critique_grpo", "refine.refine_trigger=all_fail", "refine.mode=async"],
}


RATIO_KEYS = {"critique_grpo_all_fail": "all_fail", "critique_grpo_all_fail_max2": "all_fail_max_critiques_2",
              "critique_grpo_always": "always", "critique_grpo_async": "async"}


def time_steps(model: Path, overrides: list[str], steps: int, warmup: int, work: Path) -> dict[str, float]:
    cfg = load_config("toy", [f"model.name_or_path={model}", "eval.every=0", *overrides])
    trainer = Trainer(cfg, work, show_progress=False)
    rows = []
    try:
        for i in range(warmup + steps):
            t = time.perf_counter()
            metrics = trainer.step()
            metrics["time/step"] = time.perf_counter() - t
            if i >= warmup:
                rows.append(metrics)
    finally:
        trainer.close()
    lags = [r["refine/lag"] for r in rows if "refine/lag" in r]
    return {**{p: statistics.median(r.get(f"time/{p}", 0.0) for r in rows) for p in PHASES},
            **({"lag": statistics.mean(lags)} if lags else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="warm-start model directory; default: train one (toy preset) first")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, grpo first; ratios are given for those measured [{','.join(VARIANTS)}]")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants or variants[0] != "grpo":
        parser.error(f"--variants: grpo first, then any of {', '.join(VARIANTS)}; got {args.variants!r}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else ensure_warm_start(load_config("toy"), Path(tmp) / "ws")
        results = {name: time_steps(model, VARIANTS[name], args.steps, args.warmup, Path(tmp) / name)
                   for name in variants}
    for name, phases in results.items():
        print(f"{name:26s} " + "  ".join(f"{p} {phases[p]:.3f}s" for p in PHASES))
    grpo = results["grpo"]["step"]
    print(json.dumps({
        "threads": args.threads, "steps": args.steps,
        "seconds_per_step": {name: r["step"] for name, r in results.items()},
        "phases": results,
        "ratio_critique_over_grpo": {RATIO_KEYS[name]: r["step"] / grpo for name, r in results.items() if name != "grpo"},
        "async_lag": results.get("critique_grpo_async", {}).get("lag"),
    }))


if __name__ == "__main__":
    main()
