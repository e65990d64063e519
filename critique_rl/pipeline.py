"""The main job: warm start -> GRPO and Critique-GRPO from the same start -> evaluate -> report.

Re-running the same command on the same directory reuses finished stages and resumes an
interrupted one from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import yaml

from critique_rl.checkpoint import latest_checkpoint
from critique_rl.config import Config, ConfigError
from critique_rl.distributed import is_main_process
from critique_rl.metrics import write_atomic
from critique_rl.report import write_report
from critique_rl.tracking import forget_runs
from critique_rl.tracking import require as require_trackers
from critique_rl.trainer import Trainer
from critique_rl.warmstart import warm_start


def save_config(cfg: Config, run_dir: Path) -> None:
    if not is_main_process():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def run_training(cfg: Config, run_dir: Path, show_progress: bool = True) -> dict:
    """Train one run to completion, resuming it if it was interrupted; returns its final eval."""
    final = run_dir / "final_eval.json"
    if final.is_file():
        return json.loads(final.read_text())
    if is_main_process():                   # the others wait in Trainer(): it joins the process group
        if run_dir.exists() and latest_checkpoint(run_dir) is None:
            shutil.rmtree(run_dir)          # a run that never reached a checkpoint starts over
        save_config(cfg, run_dir)
    trainer = Trainer(cfg, run_dir, show_progress)
    if latest_checkpoint(run_dir) is not None:
        trainer.resume()
    return trainer.train()


def continue_run(source: Path, run_dir: Path, cfg: Config, show_progress: bool = True) -> dict:
    """Train ``run_dir`` as a continuation of the finished run ``source`` up to ``cfg.train.steps``."""
    if not (run_dir / "final_eval.json").is_file() and latest_checkpoint(run_dir) is None:
        tmp = run_dir.with_name(f".{run_dir.name}-tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        (tmp / "final_eval.json").unlink(missing_ok=True)
        forget_runs(tmp)                    # its own W&B / MLflow runs, not more steps in the source's
        shutil.rmtree(run_dir, ignore_errors=True)
        tmp.rename(run_dir)
    return run_training(cfg, run_dir, show_progress)


def ensure_warm_start(cfg: Config, out: Path, show_progress: bool = True) -> Path:
    if cfg.task.name != "arithmetic":
        raise ConfigError(f"task.name = {cfg.task.name}: the warm start (and the pipeline and compare built on it) trains "
                          "the embedded tiny model on the synthetic task; for a real model run `critique-rl train` "
                          "with model.name_or_path")
    require_trackers(cfg.log)       # the RL runs after the warm start log there: a missing library fails now
    ws_dir = out / "warmstart"
    if not (ws_dir / "model.safetensors").is_file():
        tmp = out / ".warmstart-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_config(cfg, tmp)
        warm_start(cfg, tmp, show_progress)
        shutil.rmtree(ws_dir, ignore_errors=True)
        tmp.rename(ws_dir)
    return ws_dir


def _seconds_per_step(run_dir: Path) -> float:
    times = [json.loads(line).get("time/step") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [t for t in times if t is not None]
    return sum(times) / len(times)


def run_pipeline(cfg: Config, out: Path, show_progress: bool = True) -> dict:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ws_dir = ensure_warm_start(cfg, out, show_progress)
    policy = dataclasses.replace(cfg.model, name_or_path=str(ws_dir))

    runs = {}
    for method in ("grpo", "critique_grpo"):
        run_cfg = dataclasses.replace(cfg, method=method, model=policy)
        run_training(run_cfg, out / method, show_progress)
        runs[method] = out / method

    labels = {"grpo": "GRPO", "critique_grpo": "Critique-GRPO"}
    if cfg.pipeline.equal_compute:
        # GRPO given the wall-clock time Critique-GRPO used: more steps at its own cost per step.
        # Its first steps are the GRPO run's (same start, same seed), so it continues that run.
        ratio = _seconds_per_step(out / "critique_grpo") / _seconds_per_step(out / "grpo")
        steps = max(cfg.train.steps, round(cfg.train.steps * ratio))
        run_cfg = dataclasses.replace(cfg, method="grpo", model=policy, train=dataclasses.replace(cfg.train, steps=steps))
        continue_run(out / "grpo", out / "grpo_equal_compute", run_cfg, show_progress)
        runs["grpo_equal_compute"] = out / "grpo_equal_compute"
        labels["grpo_equal_compute"] = f"GRPO, equal compute ({steps} steps)"

    notes = (f"Warm start: `{ws_dir}`. Every run starts from it with seed {cfg.seed}; "
             f"GRPO and Critique-GRPO differ only in `method`.")
    summary = write_report({labels[m]: d for m, d in runs.items()}, out, cfg.eval.pass_k,
                           title="Critique-GRPO vs GRPO on the synthetic task", notes=notes)
    # summary.json keys methods by their config name so scripts need not parse labels.
    summary = {"wall_seconds": time.perf_counter() - start, "seed": cfg.seed,
               "methods": {m: summary["methods"][labels[m]] for m in runs}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
