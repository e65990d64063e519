"""What overlapping critiques with log-prob scoring saves: step time with critic.overlap on and off.

    python scripts/bench_overlap.py --model runs/demo/warmstart [--latency 0.3] [--steps 6]

The critic is the `openai` backend against the project's OpenAI-compatible stub server on
127.0.0.1, answering each request after --latency seconds (a remote critic's round trip). The
update is off-policy (train.mini_batches=2, as in the paper's presets), so the trainer has old
log-probs to score while the critiques are written. The two settings train from the same warm
start and are measured alternately, step by step; medians after --warmup steps. The last line of
output is one JSON object with ``ratio_overlap_over_sequential``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from critique_rl.config import load_config
from critique_rl.critics.stub_server import StubServer
from critique_rl.pipeline import ensure_warm_start
from critique_rl.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="warm-start model directory; default: train one (toy preset) first")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the stub critic takes per request")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, StubServer(latency_s=args.latency) as server:
        model = Path(args.model) if args.model else ensure_warm_start(load_config("toy"), Path(tmp) / "ws")
        trainers = {}
        for overlap in (True, False):
            cfg = load_config("toy", [f"model.name_or_path={model}", "eval.every=0", "method=critique_grpo",
                                      "train.mini_batches=2", "critic.backend=openai", f"critic.base_url={server.base_url}",
                                      "critic.model=stub", "critic.api_key_env=", "critic.cache=false",
                                      f"critic.overlap={str(overlap).lower()}"])
            trainers[overlap] = Trainer(cfg, Path(tmp) / f"overlap-{overlap}", show_progress=False)
        rows: dict[bool, list[dict]] = {True: [], False: []}
        for i in range(args.warmup + args.steps):
            for overlap, trainer in trainers.items():
                t = time.perf_counter()
                metrics = trainer.step()
                metrics["time/step"] = time.perf_counter() - t
                if i >= args.warmup:
                    rows[overlap].append(metrics)
                print(f"step {i + 1} overlap={overlap}: {metrics['time/step']:.2f}s, "
                      f"critiques {int(metrics['refine/critiques'])}, critique {metrics.get('time/critique', 0):.2f}s, "
                      f"wait {metrics.get('time/critique_wait', metrics.get('time/critique', 0)):.2f}s", flush=True)

    def median(overlap: bool, key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in rows[overlap])

    result = {
        "benchmark": "bench_overlap",
        "latency_s": args.latency, "steps": args.steps, "warmup": args.warmup,
        "step_s_overlap": median(True, "time/step"), "step_s_sequential": median(False, "time/step"),
        "critique_s_overlap": median(True, "time/critique"), "critique_wait_s_overlap": median(True, "time/critique_wait"),
        "critique_s_sequential": median(False, "time/critique"),
        "ratio_overlap_over_sequential": median(True, "time/step") / median(False, "time/step"),
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
