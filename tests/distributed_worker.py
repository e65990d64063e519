"""Run by tests/test_distributed.py under 1 or 2 processes (torchrun / accelerate launch).

For each loss type, a fresh trainer from the same model optimizes the same recorded global
batches: the one-process run records them (its own rollouts, with rewards redrawn so the
advantages are not all zero), the two-process run replays them, each process taking its own
groups as it does in training. Writes every step's logged loss and the final weights per process.

    python tests/distributed_worker.py MODEL_DIR OUT_DIR
"""

import json
import random
import sys
from pathlib import Path

import torch

from critique_rl.config import load_config
from critique_rl.trainer import Trainer

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
STEPS = 2


def main(model_dir: str, out: str) -> None:
    out = Path(out)
    batches = out / "batches"
    results = {}
    for loss_type in LOSS_TYPES:
        cfg = load_config("tiny", [f"model.name_or_path={model_dir}", "method=critique_grpo", f"loss.loss_type={loss_type}",
                                   "train.prompts_per_step=4", "rollout.num_generations=3", "rollout.max_completion_length=16",
                                   "train.mini_batches=2", "train.max_tokens_per_microbatch=80", "loss.entropy_coef=0.01",
                                   "loss.entropy_agg=token_mean", "loss.refinement_weight=paper",
                                   "train.learning_rate=1e-3", "train.warmup_steps=1", "eval.every=0", "eval.probe_prompts=0"])
        trainer = Trainer(cfg, out / f"run-{loss_type}-rank{trainer_rank()}", show_progress=False)
        losses = []
        for step in range(STEPS):
            path = batches / f"{loss_type}-{step}.pt"
            if trainer.dist.world_size == 1:
                members = trainer.collect(trainer.task.train_batch(step, cfg.train.prompts_per_step)).members
                rng = random.Random(step)
                for m in members:
                    m.reward = float(rng.random() < 0.5)
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(members, path)
            else:
                mine, _ = trainer.dist.shard(list(range(cfg.train.prompts_per_step)))
                members = [m for m in torch.load(path, weights_only=False) if m.group in mine]
            metrics = trainer.optimize(members)
            losses.append(metrics["loss"])
        results[loss_type] = losses
        torch.save(trainer.model.state_dict(), out / f"weights-{loss_type}-world{trainer.dist.world_size}-rank{trainer.dist.rank}.pt")
    (out / f"losses-world{trainer.dist.world_size}-rank{trainer.dist.rank}.json").write_text(json.dumps(results))


def trainer_rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    main(*sys.argv[1:])
