"""How much PPO clipping happens, and so how much clip-higher and GPPO can act, per update setting.

    python scripts/bench_clipping.py --model runs/entropy/seed0/warmstart [--steps 30] [--config entropy]

Clip-higher and GPPO change only the tokens PPO clips: with one optimizer step per rollout batch
the ratio is exactly 1 and nothing is clipped. Each setting below trains GRPO with clip-higher
(epsilon_high 0.28) from the same warm start for --steps steps and reports the share of
initial-sample tokens clipped (``clip_ratio/region_mean``: below 1 - epsilon with A < 0 or above
1 + epsilon_high with A > 0, TRL's definition) averaged over the steps, the largest per-step
share, the change of token entropy (mean of the last 5 steps minus the first 5) and the seconds
per step. The last line of output is one JSON object.
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
from critique_rl.trainer import Trainer

# (name, overrides): optimizer steps per batch = mini_batches x num_iterations; the learning rate
# scales how far one optimizer step moves the ratio.
SETTINGS = {
    "mb2_lr5e-5": ["train.mini_batches=2"],
    "mb4_lr5e-5": ["train.mini_batches=4"],
    "mb2_it2_lr5e-5": ["train.mini_batches=2", "train.num_iterations=2"],
    "mb2_lr2e-4": ["train.mini_batches=2", "train.learning_rate=2e-4"],
    "mb4_it2_lr2e-4": ["train.mini_batches=4", "train.num_iterations=2", "train.learning_rate=2e-4"],
}


def measure(config: str, model: Path, overrides: list[str], steps: int, work: Path) -> dict[str, float]:
    cfg = load_config(config, [f"model.name_or_path={model}", "eval.every=0", "method=grpo",
                               "loss.epsilon_high=0.28", f"train.steps={steps}", *overrides])
    trainer = Trainer(cfg, work, show_progress=False)
    rows = []
    for _ in range(steps):
        t = time.perf_counter()
        metrics = trainer.step()
        metrics["time/step"] = time.perf_counter() - t
        rows.append(metrics)
    clipped = [r["clip_ratio/region_mean"] for r in rows]
    entropy = [r["entropy"] for r in rows]
    return {"clipped_mean": statistics.mean(clipped), "clipped_max": max(clipped),
            "clipped_high_mean": statistics.mean(r["clip_ratio/high_mean"] for r in rows),
            "entropy_change": statistics.mean(entropy[-5:]) - statistics.mean(entropy[:5]),
            "reward_mean": statistics.mean(r["reward"] for r in rows),
            "seconds_per_step": statistics.median(r["time/step"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="warm-start model directory (e.g. runs/entropy/seed0/warmstart)")
    parser.add_argument("--config", default="entropy")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated among {', '.join(SETTINGS)}")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = args.settings.split(",")
    unknown = [s for s in chosen if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            start = time.perf_counter()
            results[name] = measure(args.config, Path(args.model), SETTINGS[name], args.steps, Path(tmp) / name)
            print(f"{name}: {json.dumps({k: round(v, 5) for k, v in results[name].items()})} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(json.dumps({"steps": args.steps, "config": args.config, "settings": results}))


if __name__ == "__main__":
    main()
