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

from critique_rl.checkpoint import checkpoints, latest_checkpoint
from critique_rl.config import Config, ConfigError, config_from_dict
from critique_rl.distributed import is_main_process
from critique_rl.metrics import write_atomic
from critique_rl.report import EARLY_KEY, METHOD_LABELS, config_differences, difference, num, write_report
from critique_rl.tracking import forget_runs
from critique_rl.tracking import require as require_trackers
from critique_rl.trainer import Trainer
from critique_rl.warmstart import warm_start, warm_start_critic


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
        # Only a run that never reached a checkpoint starts over: one whose checkpoints are all broken
        # is kept, and resume() says what to do.
        if run_dir.exists() and not checkpoints(run_dir):
            for stale in run_dir.iterdir():      # the run's own warm start and critic model (train) are kept
                if stale.name not in ("warmstart", "critic_model"):
                    shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        save_config(cfg, run_dir)
    trainer = Trainer(cfg, run_dir, show_progress)
    if checkpoints(run_dir):
        trainer.resume()
    return trainer.train()


def continue_run(source: Path, run_dir: Path, cfg: Config, show_progress: bool = True) -> dict:
    """Train ``run_dir`` as a continuation of the finished run ``source`` up to ``cfg.train.steps``."""
    if not (run_dir / "final_eval.json").is_file() and not checkpoints(run_dir):
        tmp = run_dir.with_name(f".{run_dir.name}-tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        (tmp / "final_eval.json").unlink(missing_ok=True)
        forget_runs(tmp)                    # its own W&B / MLflow runs, not more steps in the source's
        shutil.rmtree(run_dir, ignore_errors=True)
        tmp.rename(run_dir)
    return run_training(cfg, run_dir, show_progress)


def check_warm_startable(cfg: Config) -> None:
    """Fail in a second, before any training, where the warm start or the runs after it cannot go."""
    if cfg.task.name != "arithmetic":
        raise ConfigError(f"task.name = {cfg.task.name}: the warm start (and the pipeline and compare built on it) trains "
                          "the embedded tiny model on the synthetic task; for a real model run `critique-rl train` "
                          "with model.name_or_path")
    require_trackers(cfg.log)       # the RL runs after the warm start log there: a missing library fails now


def build_once(cfg: Config, final: Path, build) -> Path:
    """``final`` unless it holds a model already: ``build(tmp)`` writes it into a temporary folder
    (with the config), which then replaces ``final`` whole, so an interrupted build leaves nothing."""
    if not (final / "model.safetensors").is_file():
        tmp = final.with_name(f".{final.name}-tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_config(cfg, tmp)
        build(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    return final


def ensure_warm_start(cfg: Config, out: Path, show_progress: bool = True) -> Path:
    check_warm_startable(cfg)
    return build_once(cfg, out / "warmstart", lambda tmp: warm_start(cfg, tmp, show_progress))


def wants_critic_model(cfg: Config) -> bool:
    """critic.backend hf with an empty critic.model on the synthetic task: the run's own tiny critic
    model, trained into OUT/critic_model (as an empty model.name_or_path means OUT/warmstart)."""
    return cfg.critic.backend == "hf" and not cfg.critic.model and cfg.task.name == "arithmetic"


def ensure_critic_model(cfg: Config, out: Path, show_progress: bool = True) -> Path:
    """OUT/critic_model: trained from scratch (``critic_model``) unless it is there, with its config.yaml
    and training.json (steps, seconds, final loss and, with critic_model.eval_problems > 0, its
    quality, also printed)."""
    check_warm_startable(cfg)
    model_dir = out / "critic_model"

    def build(tmp: Path) -> None:
        trained = warm_start_critic(cfg, tmp, show_progress)
        info = {k: v for k, v in trained.items() if k != "losses"}
        if cfg.critic_model.eval_problems:
            from critique_rl.critic_quality import critic_model_quality, quality_critic

            info["quality"] = critic_model_quality(quality_critic(cfg), tmp)
            info["quality"]["model"] = str(model_dir)
        write_atomic(tmp / "training.json", json.dumps(info, indent=2))
        if "quality" in info and is_main_process():
            print(f"critic model: {info['steps']} steps in {info['train_seconds']:.0f} s, final loss "
                  f"{info['final_loss']:.4f}; quality: {json.dumps(info['quality'])}", flush=True)

    return build_once(cfg, model_dir, build)


def _seconds_per_step(run_dir: Path) -> float:
    times = [json.loads(line).get("time/step") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [t for t in times if t is not None]
    return sum(times) / len(times)


def _phase(index: int, total: int, text: str) -> None:
    if is_main_process():
        print(f"== [{index}/{total}] {text} ==", flush=True)


def _run_state(run_dir: Path, cfg: Config) -> str:
    """How a run stage will start: reused, resumed or new (for its phase header)."""
    if (run_dir / "final_eval.json").is_file():
        # A finished run is reused whatever this command's config says, so the header says where they
        # differ; loading the recorded config fills the fields added since with their defaults.
        try:
            recorded = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()), str(run_dir / "config.yaml"))
        except (OSError, ConfigError) as err:
            return f": reused (finished in {run_dir}; its config could not be compared: {err})"
        differ = [key for key, _ in config_differences({"run": recorded.to_dict(), "now": cfg.to_dict()})]
        shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        return f": reused (finished in {run_dir}" + (f"; its config.yaml differs in {shown})" if differ else ")")
    checkpoint = latest_checkpoint(run_dir)
    return f": resuming from {checkpoint.name}" if checkpoint is not None else ""


def closing_line(summary: dict) -> str:
    """The verdict in one sentence with its numbers: Critique-GRPO against GRPO on hard and easy."""
    methods = summary["methods"]
    c, g, eq = methods["critique_grpo"], methods["grpo"], methods.get("grpo_equal_compute")
    splits = [f"{s} {num(c[f'{s}_pass1'])} vs GRPO {num(g[f'{s}_pass1'])} "
              f"({difference(c[f'{s}_pass1'], g[f'{s}_pass1'])})" for s in ("hard", "easy")]
    # How fast each left the plateau: the early evaluation (hard at step 50) when the runs have one.
    early = next((key for key in c if EARLY_KEY.fullmatch(key) and key in g), None)
    if early is not None:
        step = EARLY_KEY.fullmatch(early)[2]
        splits.append(f"hard at step {step} {num(c[early])} vs GRPO {num(g[early])} ({difference(c[early], g[early])})")
    at_equal = (f"; GRPO at equal compute ({eq['steps']} steps): hard {num(eq['hard_pass1'])}, "
                f"easy {num(eq['easy_pass1'])}") if eq else ""
    return (f"Verdict (seed {summary['seed']}, one seed): Critique-GRPO greedy pass@1 {', '.join(splits)}{at_equal}.")


def run_pipeline(cfg: Config, out: Path, show_progress: bool = True, config_name: str = "") -> dict:
    """Warm start, the RL runs, the report; ``config_name`` (the --config it was launched with) is
    recorded in summary.json and the report's title."""
    start = time.perf_counter()
    check_warm_startable(cfg)       # before the first header: a command that cannot run prints only its error
    out.mkdir(parents=True, exist_ok=True)
    critic_model = wants_critic_model(cfg)
    total = (5 if cfg.pipeline.equal_compute else 4) + critic_model
    ws_state = ": reused" if (out / "warmstart" / "model.safetensors").is_file() else ""
    _phase(1, total, f"warm start ({cfg.warmstart.steps} steps){ws_state}")
    ws_dir = ensure_warm_start(cfg, out, show_progress)
    policy = dataclasses.replace(cfg.model, name_or_path=str(ws_dir))
    reused = bool(ws_state)
    if critic_model:
        # critic.backend hf without a model: the run's own critic model, trained once, for every run's config.
        cm_state = ": reused" if (out / "critic_model" / "model.safetensors").is_file() else ""
        _phase(2, total, f"critic model ({cfg.critic_model.steps} steps){cm_state}")
        reused &= bool(cm_state)
        cfg = dataclasses.replace(cfg, critic=dataclasses.replace(cfg.critic, model=str(ensure_critic_model(cfg, out, show_progress))))

    runs = {}
    for index, method in enumerate(("grpo", "critique_grpo"), start=2 + critic_model):
        run_cfg = dataclasses.replace(cfg, method=method, model=policy)
        state = _run_state(out / method, run_cfg)
        reused &= state.startswith(": reused")
        _phase(index, total, f"{METHOD_LABELS[method]} ({cfg.train.steps} steps){state}")
        run_training(run_cfg, out / method, show_progress)
        runs[method] = out / method

    if cfg.pipeline.equal_compute:
        # GRPO given the wall-clock time Critique-GRPO used: more steps at its own cost per step.
        # Its first steps are the GRPO run's (same start, same seed), so it continues that run.
        ratio = _seconds_per_step(out / "critique_grpo") / _seconds_per_step(out / "grpo")
        steps = max(cfg.train.steps, round(cfg.train.steps * ratio))
        run_cfg = dataclasses.replace(cfg, method="grpo", model=policy, train=dataclasses.replace(cfg.train, steps=steps))
        state = _run_state(out / "grpo_equal_compute", run_cfg)
        reused &= state.startswith(": reused")
        _phase(4 + critic_model, total, f"GRPO at equal compute ({steps} steps: continues GRPO after step {cfg.train.steps}){state}")
        continue_run(out / "grpo", out / "grpo_equal_compute", run_cfg, show_progress)
        runs["grpo_equal_compute"] = out / "grpo_equal_compute"

    _phase(total, total, "report")
    previous = out / "summary.json"
    # A rerun that trained nothing only re-renders the report: the wall time stays the training's.
    kept_wall = json.loads(previous.read_text()).get("wall_seconds") if reused and previous.is_file() else None
    notes = (f"Critic: the tiny critic model `{cfg.critic.model}` (critic.backend hf). " if critic_model else "") + (
             f"Warm start: `{ws_dir}`. Every run starts from it with seed {cfg.seed}; GRPO and Critique-GRPO "
             "differ only in `method`" + ("; GRPO at equal compute continues the GRPO run for the wall-clock time "
                                          "Critique-GRPO took (at GRPO's own cost per step)." if "grpo_equal_compute" in runs else "."))
    # summary.json keys methods by their config name so scripts need not parse labels.
    summary = write_report(runs, out, cfg.eval.pass_k, labels=METHOD_LABELS, config_name=config_name,
                           title="Critique-GRPO vs GRPO on the synthetic task", notes=notes,
                           pairs=[("critique_grpo", m) for m in ("grpo", "grpo_equal_compute") if m in runs],
                           more_seeds=(f"rerun the same command with `--seed 1 --out {out}-seed1` and `--seed 2 --out "
                                       f"{out}-seed2`, then `python scripts/aggregate_seeds.py {out} {out}-seed1 {out}-seed2`"),
                           extra={"seed": cfg.seed, "config": config_name})
    summary = {"wall_seconds": kept_wall or time.perf_counter() - start, **summary}
    summary["verdict"] = closing_line(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
