"""Every entropy remedy against GRPO and Critique-GRPO, from one warm start per seed, at one budget.

Each method is a named set of config overrides on top of the base config. The combined method
``critique_grpo+best`` adds to Critique-GRPO the intervention whose GRPO-side run of the same seed
ended with the highest hard greedy pass@1 (ties: higher hard pass@k, then table order).

``run_compare`` trains one seed's methods in one folder (compare.json, compare.md, curves.png,
entropy.png, entropy_reward.png); ``run_compare_seeds`` runs it per seed in DIR/seed{N} and writes
the same files in DIR with each number as mean ± sample std over the seeds. Finished runs and warm
starts are reused, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import shutil
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import yaml

from critique_rl.config import Config, apply_overrides, config_from_dict
from critique_rl.entropy_law import WINDOW, fit_on_prefix, pairs_from_run, window_points
from critique_rl.pipeline import ensure_critic_model, ensure_warm_start, run_training, wants_critic_model
from critique_rl.report import (
    cell,
    column_title,
    interpretation,
    load_run,
    method_summary,
    plot_runs,
    seeds_note,
)
from critique_rl.warmstart import CRITIC_MODEL_OVERRIDES

# The entropy bonus's coefficient (loss.entropy_coef) for the entropy_bonus method, measured on the
# entropy preset (seed 0): at 0.05 the bonus held token entropy near its start (0.11-0.13 nats) for
# 40 steps, then won: entropy 0.78 nats at step 60, 4.5 at step 150 and reward 0 from step 70 on.
# 0.01 leans against the collapse without that runaway. The official code's 0.001 was set for
# std-normalised advantages on a 7B model, where the bonus sums over far more tokens.
ENTROPY_BONUS_COEF = 0.01

# Clip-Cov's covariance window [1, 5] and KL-Cov's top-covariance choice assume std-normalised
# advantages (REFERENCE.md §2), so those two run with scale_rewards=group; grpo_std is GRPO with
# the same scaling, the control that tells the remedy's effect from the scaling's. top_entropy trains
# only the 20 % highest-entropy tokens (the 80/20 rule; loss.top_entropy_quantile defaults to 0.2).
METHODS: dict[str, list[str]] = {
    "grpo": ["method=grpo"],
    "clip_higher": ["method=grpo", "loss.epsilon_high=0.28"],
    "clip_cov": ["method=grpo", "loss.intervention=clip_cov", "loss.scale_rewards=group"],
    "kl_cov": ["method=grpo", "loss.intervention=kl_cov", "loss.scale_rewards=group"],
    "gppo": ["method=grpo", "loss.intervention=gppo", "loss.epsilon_high=0.28"],
    "top_entropy": ["method=grpo", "loss.intervention=top_entropy_quantile"],
    "entropy_bonus": ["method=grpo", f"loss.entropy_coef={ENTROPY_BONUS_COEF}"],
    "critique_grpo": ["method=critique_grpo"],
    "grpo_std": ["method=grpo", "loss.scale_rewards=group"],
    # critic quality: Critique-GRPO (the rule CoT critic) against other critique kinds and noisier critics
    "critic_ground_truth": ["method=critique_grpo", "critic.critique_type=ground_truth"],
    "critic_indicative": ["method=critique_grpo", "critic.critique_type=indicative"],
    "critic_noise25": ["method=critique_grpo", "critic.noise=0.25"],
    "critic_noise50": ["method=critique_grpo", "critic.noise=0.5"],
    # the tiny critic model behind the hf backend; critic.model on the command line names one
    # (else each seed trains its own into DIR/seed{N}/critic_model)
    "critic_model_hf": ["method=critique_grpo", *(o for o in CRITIC_MODEL_OVERRIDES if not o.startswith("critic.model="))],
}
INTERVENTIONS = ["clip_higher", "clip_cov", "kl_cov", "gppo", "top_entropy", "entropy_bonus"]
COMBINED = "critique_grpo+best"
# `--methods all`: the nine methods of the comparison; grpo_std runs only when named.
DEFAULT_METHODS = ["grpo", *INTERVENTIONS, "critique_grpo", COMBINED]

ENTROPY_STEPS = 10      # steps averaged for the initial and the final entropy columns
TABLE_KS = (4, 16)      # the sampled pass@k columns, when the final evaluation logged them


def best_intervention(summaries: dict[str, dict]) -> str:
    ranked = [m for m in INTERVENTIONS if m in summaries]
    if not ranked:
        raise ValueError(f"{COMBINED} needs at least one of {', '.join(INTERVENTIONS)} in --methods")
    return max(ranked, key=lambda m: (summaries[m]["hard_pass1"], summaries[m]["hard_pass_at_k"], -ranked.index(m)))


def entropy_law_row(run_dir: Path) -> dict:
    """The law fitted to a run's (entropy, reward) per step and to its means of WINDOW steps."""
    try:
        fit = fit_on_prefix([pairs_from_run(run_dir)], 1.0, WINDOW)
    except ValueError:
        return {"a": None, "b": None, "ceiling": None, "fit_rmse": None, "r2": None, "r2_window": None,
                "window_ceiling": None}
    return {"a": fit.a, "b": fit.b, "ceiling": fit.ceiling, "fit_rmse": fit.rmse, "r2": fit.r2,
            "r2_window": fit.r2_window, "window_ceiling": fit.window_ceiling}


def step_mean(metrics: list[dict], key: str, first: int | None = None, last: int | None = None) -> float | None:
    """Mean of ``key`` over the steps that logged it: all, the ``first`` n or the ``last`` n; None if none did.

    >>> rows = [{"step": 0}, {"step": 1, "H": 3.0}, {"step": 2, "H": 2.0}, {"step": 3, "H": 1.0}]
    >>> step_mean(rows, "H"), step_mean(rows, "H", first=2), step_mean(rows, "H", last=2), step_mean(rows, "x")
    (2.0, 2.5, 1.5, None)
    """
    values = [m[key] for m in metrics if m.get(key) is not None]
    values = values[:first] if first is not None else values[-last:] if last is not None else values
    return sum(values) / len(values) if values else None


def final_pass_at_ks(final: dict) -> dict[str, float]:
    """The final evaluation's sampled pass@k, every k it logged: eval/hard_pass@4 -> hard_pass@4.

    >>> final_pass_at_ks({"eval/hard_pass1": 0.5, "eval/hard_pass@4": 0.75, "eval/easy_pass@16": 1.0})
    {'hard_pass@4': 0.75, 'easy_pass@16': 1.0}
    """
    return {key[len("eval/"):]: value for key, value in final.items() if key.startswith("eval/") and "_pass@" in key}


def entropy_columns(run: dict) -> dict:
    """A run's entropy and token-share numbers: token entropy and top-20 % entropy over its first and
    last ENTROPY_STEPS steps; the share of tokens it acted on (intervention/selected_frac where the
    loss logs it, every token for an entropy bonus, else the clipped share) and the clipped share
    clip_ratio/region_mean, step means."""
    metrics = run["metrics"]
    clipped = step_mean(metrics, "clip_ratio/region_mean")
    selected = step_mean(metrics, "intervention/selected_frac")
    if selected is None and run.get("config", {}).get("loss", {}).get("entropy_coef", 0) > 0:
        selected = 1.0      # the entropy bonus acts on every token
    return {
        "initial_token_entropy": step_mean(metrics, "entropy", first=ENTROPY_STEPS),
        "final_token_entropy": step_mean(metrics, "entropy", last=ENTROPY_STEPS),
        "initial_top20_entropy": step_mean(metrics, "entropy/top20_mean", first=ENTROPY_STEPS),
        "final_top20_entropy": step_mean(metrics, "entropy/top20_mean", last=ENTROPY_STEPS),
        "acted_on": selected if selected is not None else clipped,
        "clipped": clipped,
    }


def changed_fields(run_dir: Path, cfg: Config) -> list[str]:
    """Dotted names of the fields whose value in ``run_dir``'s recorded config differs from ``cfg``'s
    ([] when nothing is recorded). Fields added to the config since the run fill in with defaults."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return []

    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    before = flat(config_from_dict(yaml.safe_load(saved.read_text()), str(saved)).to_dict())
    now = flat(cfg.to_dict())
    return [key for key in now if before.get(key) != now[key]]


def on_policy(config: dict) -> bool:
    """Whether a run's recorded config takes one optimizer step per rollout batch (importance ratio 1).

    >>> on_policy({"train": {"num_iterations": 1, "mini_batches": 1}}), on_policy({"train": {"mini_batches": 2}})
    (True, False)
    """
    train = config.get("train", {})
    return train.get("num_iterations", 1) == 1 and train.get("mini_batches", 1) == 1


def combined_overrides(best: str) -> list[str]:
    """Critique-GRPO with the named intervention's overrides."""
    return [o for o in METHODS[best] if o != "method=grpo"] + ["method=critique_grpo"]


def train_method(run_cfg: Config, run_dir: Path, show_progress: bool, threads: int = 0) -> float:
    """Train one method's run (reusing it only if it trained with ``run_cfg``); returns its wall seconds.
    ``threads`` > 0 sets torch's intra-op threads first (a worker of ``--jobs``)."""
    start = time.perf_counter()
    if threads:
        import torch

        torch.set_num_threads(threads)
    changed = changed_fields(run_dir, run_cfg)
    if changed:     # e.g. critique_grpo+best after another intervention became the best
        print(f"{run_dir}: trained with other settings ({', '.join(changed)}); training it again", flush=True)
        shutil.rmtree(run_dir)
    run_training(run_cfg, run_dir, show_progress)
    return time.perf_counter() - start


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def train_methods(method_cfgs: dict[str, Config], out: Path, show_progress: bool, jobs: int,
                  combined_cfg) -> dict[str, float]:
    """Train every method of ``method_cfgs``, then COMBINED from ``combined_cfg(finished names)`` when it
    is given; returns each run's wall seconds. With ``jobs`` > 1 the runs train in that many spawned
    processes, each with its share of the cores' torch threads; Critique-GRPO runs (the longest) start
    first, and COMBINED starts as soon as the runs it is chosen from have finished."""
    walls: dict[str, float] = {}
    if jobs <= 1:
        for name, run_cfg in method_cfgs.items():
            walls[name] = train_method(run_cfg, out / name, show_progress)
        if combined_cfg is not None:
            walls[COMBINED] = train_method(combined_cfg(list(walls)), out / COMBINED, show_progress)
        return walls
    threads = max(1, usable_cores() // jobs)
    longest_first = sorted(method_cfgs, key=lambda n: method_cfgs[n].method != "critique_grpo")
    context = multiprocessing.get_context("spawn")     # a fork would inherit the parent's torch threads
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        running = {pool.submit(train_method, method_cfgs[n], out / n, False, threads): n for n in longest_first}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                walls[name] = future.result()
                print(f"{out / name}: done in {walls[name]:.0f} s", flush=True)
                if combined_cfg is not None and COMBINED not in walls and not any(
                        n in INTERVENTIONS for n in running.values()):
                    walls[COMBINED] = 0.0       # submitted; its time replaces this when it finishes
                    chosen = combined_cfg([n for n in walls if n != COMBINED])
                    running[pool.submit(train_method, chosen, out / COMBINED, False, threads)] = COMBINED
    return walls


def run_compare(cfg: Config, out: Path, methods: list[str], show_progress: bool = True, config_name: str = "",
                command: str = "", jobs: int = 1) -> dict:
    """Train each method from one warm start (seed cfg.seed); write compare.json, compare.md, curves.png,
    entropy.png and entropy_reward.png. ``config_name`` (the --config it was launched with) is recorded
    and titles the plots; ``command`` (the command line) is recorded and heads the table. ``jobs``: runs
    trained at once, in separate processes sharing the cores (the warm start uses them all)."""
    unknown = [m for m in methods if m not in METHODS and m != COMBINED]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join([*METHODS, COMBINED])}")
    if COMBINED in methods and not any(m in INTERVENTIONS for m in methods):
        raise ValueError(f"{COMBINED} needs at least one of {', '.join(INTERVENTIONS)} in --methods")
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ws_dir = ensure_warm_start(cfg, out, show_progress)
    k = cfg.eval.pass_k

    def method_cfg(overrides: list[str]) -> Config:
        run_cfg = apply_overrides(copy.deepcopy(cfg), [f"model.name_or_path={ws_dir}", *overrides])
        if wants_critic_model(run_cfg) and run_cfg.method == "critique_grpo":
            run_cfg = apply_overrides(run_cfg, [f"critic.model={ensure_critic_model(run_cfg, out, show_progress)}"])
        return run_cfg

    summaries: dict[str, dict] = {}
    overrides_used: dict[str, list[str]] = {m: METHODS[m] for m in methods if m != COMBINED}
    best = None

    def summarize(name: str) -> dict:
        run = load_run(out / name)
        return {**method_summary(run, k), **final_pass_at_ks(run["final"]),
                "probe_entropy": run["final"].get("entropy/probe"),
                **entropy_law_row(out / name), **entropy_columns(run),
                "refine_success": step_mean(run["metrics"], "refine/success_rate"),
                "rescued_per_step": step_mean(run["metrics"], "refine/groups_rescued")}

    def combined_cfg(finished: list[str]) -> Config:
        nonlocal best
        best = best_intervention({name: summarize(name) for name in finished if name in INTERVENTIONS})
        overrides_used[COMBINED] = combined_overrides(best)
        return method_cfg(overrides_used[COMBINED])

    walls = train_methods({m: method_cfg(o) for m, o in overrides_used.items()}, out, show_progress, jobs,
                          combined_cfg if COMBINED in methods else None)
    for name in [m for m in methods if m != COMBINED] + [m for m in methods if m == COMBINED]:
        summaries[name] = {**summarize(name), "run_wall_seconds": walls[name]}
    runs = {name: load_run(out / name) for name in summaries}
    setting = f"seed {cfg.seed}, config {config_name}" if config_name else f"seed {cfg.seed}"
    plot_runs(runs, out / "curves.png", f"Entropy remedies, GRPO and Critique-GRPO from one warm start — {setting}")
    plot_entropy({name: [run] for name, run in runs.items()}, out / "entropy.png", f"Token entropy — {setting}")
    plot_entropy_reward({name: [run["dir"]] for name, run in runs.items()}, out / "entropy_reward.png",
                        f"Reward against entropy — {setting}")
    # From the runs' recorded configs: a finished run is reused whatever this command's config says.
    result = {"seed": cfg.seed, "config": config_name, "command": command, "k": k, "methods": summaries,
              "overrides": overrides_used, "best": best,
              "on_policy": all(on_policy(run["config"]) for run in runs.values()) if runs else
              cfg.train.num_iterations == 1 and cfg.train.mini_batches == 1,
              "train_seconds": sum(m["time/step"] for run in runs.values() for m in run["metrics"]
                                   if m.get("time/step") is not None),
              "wall_seconds": time.perf_counter() - start}
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    (out / "compare.md").write_text(compare_markdown(result))
    return result


def run_compare_seeds(cfg: Config, out: Path, methods: list[str], seeds: list[int], show_progress: bool = True,
                      config_name: str = "", command: str = "", jobs: int = 1) -> dict:
    """run_compare for each seed in out/seed{N} (its own warm start), then compare.json, compare.md,
    entropy.png, entropy_reward.png and methods.png in ``out`` over the seeds; returns compare.json's object."""
    results = []
    for seed in seeds:
        seed_cfg = copy.deepcopy(cfg)
        seed_cfg.seed = seed
        results.append(run_compare(seed_cfg, out / f"seed{seed}", methods, show_progress, config_name, command, jobs))
    result = aggregate(results)
    setting = f"seeds {', '.join(map(str, seeds))}" + (f", config {config_name}" if config_name else "")
    dirs = {name: [out / f"seed{seed}" / name for seed in seeds] for name in result["methods"]}
    plot_entropy({name: [load_run(d) for d in ds] for name, ds in dirs.items()}, out / "entropy.png",
                 f"Token entropy, mean over seeds (band: min–max) — {setting}")
    result["pooled_fit"] = plot_entropy_reward(dirs, out / "entropy_reward.png", f"Reward against entropy — {setting}")
    plot_methods(result, out / "methods.png", f"Final hard pass@1 and refinement success, mean ± std over seeds — {setting}")
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    (out / "compare.md").write_text(compare_markdown(result))
    return result


def stat(values: list) -> dict:
    """Mean and sample std (n - 1) of the values that are not None; std None under two values.

    >>> s = stat([0.1, 0.3, None])
    >>> round(s["mean"], 6), round(s["std"], 6), s["n"], s["values"]
    (0.2, 0.141421, 2, [0.1, 0.3, None])
    >>> stat([0.5]), stat([None])["mean"]
    ({'mean': 0.5, 'std': None, 'n': 1, 'values': [0.5]}, None)
    """
    present = [v for v in values if v is not None]
    return {"mean": statistics.mean(present) if present else None,
            "std": statistics.stdev(present) if len(present) > 1 else None, "n": len(present), "values": values}


PERCENT_COLUMNS = ("acted_on", "clipped")     # token shares: tiny here, so shown in percent


def mean_std(s: dict | None, percent: bool = False) -> str:
    """A table cell: mean ± std over seeds, the value alone for one seed, — for none.

    >>> mean_std(stat([0.1, 0.3])), mean_std(stat([0.25])), mean_std(stat([None])), mean_std(None)
    ('0.200 ± 0.141', '0.250', '—', '—')
    >>> mean_std(stat([0.0002, 0.0004]), percent=True)
    '0.03 % ± 0.01'
    """
    if s is None or s["mean"] is None:
        return "—"
    if percent:
        return f"{100 * s['mean']:.2f} %" + (f" ± {100 * s['std']:.2f}" if s["std"] is not None else "")
    return cell(float(s["mean"])) + (f" ± {s['std']:.3f}" if s["std"] is not None else "")


def aggregate(results: list[dict]) -> dict:
    """Per-seed run_compare results -> each method's numbers as {mean, std, n, values (per seed)}."""
    first = results[0]
    seeds = [r["seed"] for r in results]
    methods = {}
    for name in first["methods"]:
        per_seed = [r["methods"].get(name, {}) for r in results]
        keys = dict.fromkeys(key for s in per_seed for key in s)
        methods[name] = {key: stat([s.get(key) for s in per_seed]) for key in keys
                         if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                for v in (s.get(key) for s in per_seed))}
    overrides = {name: ov for name, ov in first["overrides"].items() if name != COMBINED}
    if COMBINED in first["overrides"]:
        overrides[COMBINED] = {str(r["seed"]): r["overrides"][COMBINED] for r in results}
    walls = {str(r["seed"]): r.get("wall_seconds") for r in results}
    return {"seeds": seeds, "config": first.get("config", ""), "command": first.get("command", ""), "k": first["k"],
            "methods": methods, "overrides": overrides,
            "best": {str(r["seed"]): r.get("best") for r in results} if COMBINED in first["methods"] else {},
            "on_policy": all(r["on_policy"] for r in results),
            "wall_seconds": walls, "total_wall_seconds": sum(w for w in walls.values() if w is not None),
            "train_seconds": {str(r["seed"]): r.get("train_seconds") for r in results}}


def table_columns(agg: dict) -> list[tuple[str, str]]:
    """(key, title) of the table's columns: the pass rates the runs logged, entropy, fit, token shares, time."""
    methods = agg["methods"].values()

    def logged(key):
        return any(m.get(key, {}).get("mean") is not None for m in methods)

    splits = [s for s in ("hard", "easy") if logged(f"{s}_pass1")]
    cols = [(f"{s}_pass1", column_title(f"{s}_pass1", agg["k"])) for s in splits]
    sampled = [(f"{s}_pass@{k}", f"{s} pass@{k} (sampled)") for s in splits for k in TABLE_KS if logged(f"{s}_pass@{k}")]
    cols += sampled or [(f"{s}_pass_at_k", column_title(f"{s}_pass_at_k", agg["k"])) for s in splits]
    n = ENTROPY_STEPS
    cols += [("initial_token_entropy", f"token entropy, first {n} steps"),
             ("final_token_entropy", f"token entropy, last {n} steps"),
             ("initial_top20_entropy", f"top-20% entropy, first {n}"), ("final_top20_entropy", f"top-20% entropy, last {n}"),
             ("ceiling", "ceiling b−a"), ("r2", "R² (steps)"), ("r2_window", f"R² ({WINDOW}-step means)"),
             ("acted_on", "acted on"), ("clipped", "clipped")]
    cols += [(key, title) for key, title in (("refine_success", "refinement success"),
                                              ("rescued_per_step", "groups rescued / step")) if logged(key)]
    return cols + [("seconds_per_step", column_title("seconds_per_step", agg["k"]))]


def as_aggregate(result: dict) -> dict:
    """A compare result over seeds as it is; one seed's (run_compare's) as an aggregate of one."""
    return result if "seeds" in result else aggregate([result])


def markdown_table(result: dict) -> str:
    """The table of compare.md with its header note (seeds, command) and its legend."""
    agg = as_aggregate(result)
    seeds = agg["seeds"]
    cols = table_columns(agg)
    spread = (f"mean ± sample std over seeds {', '.join(map(str, seeds))}, each method from its seed's warm start"
              if len(seeds) > 1 else f"seed {seeds[0]}, every method from one warm start")
    lines = [f"Each cell: {spread}." + (f" Command: `{agg['command']}`" if agg.get("command") else ""), ""]
    lines += ["| method | " + " | ".join(title for _, title in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, s in agg["methods"].items():
        lines.append(f"| {name} | " + " | ".join(mean_std(s.get(c), c in PERCENT_COLUMNS) for c, _ in cols) + " |")
    lines += ["", f"Token entropy: mean of `entropy` (nats, initial samples) over a run's first and last {ENTROPY_STEPS} "
              f"steps; top-20%: `entropy/top20_mean`, the mean of the 20 % highest token entropies. Ceiling b − a and "
              f"R²: the law R = −a·exp(H) + b fitted to each run's (entropy, training reward) per step; R² ({WINDOW}-step "
              f"means): fitted to means of {WINDOW} consecutive steps. Acted on: mean share of initial tokens the loss "
              "acted on (`intervention/selected_frac` where logged, every token for an entropy bonus, else the "
              "clipped share); clipped: "
              "`clip_ratio/region_mean`. Refinement success: mean over steps with refinements of the share of "
              "refinements that are correct (`refine/success_rate`); groups rescued / step: all-fail groups that "
              "gained a correct refinement. s / step: mean wall time of a training step.", ""]
    lines += [f"- `{name}`: `{' '.join(ov)}`" for name, ov in agg["overrides"].items() if name != COMBINED]
    if COMBINED in agg["overrides"]:
        chosen = "; ".join(f"seed {seed}: {agg['best'].get(seed)} (`{' '.join(ov)}`)"
                           for seed, ov in agg["overrides"][COMBINED].items())
        lines.append(f"- `{COMBINED}`: Critique-GRPO with the intervention whose GRPO-side run of the same seed ended "
                     f"with the highest hard greedy pass@1 — {chosen}")
    if agg["on_policy"]:
        # With one optimizer step per rollout batch the ratio is exactly 1: nothing is clipped and
        # |log pi - log pi_old| has zero gradient, so these remedies reduce to their base loss.
        lines += ["", ("One optimizer step per rollout batch (train.num_iterations = train.mini_batches = 1): the "
                       "importance ratio is 1, so clip-higher, GPPO and KL-Cov train exactly like their base method; "
                       "set train.mini_batches=2 to compare them.")]
    return "\n".join(lines) + "\n"


def compare_markdown(result: dict) -> str:
    """compare.md: the verdict of every method against GRPO (when it ran), over the seeds, then the table."""
    agg = as_aggregate(result)
    methods, seeds = agg["methods"], agg["seeds"]
    splits = [s for s in ("hard", "easy")
              if all(v is not None for m in methods.values() for v in m.get(f"{s}_pass1", {"values": [None]})["values"])]
    title = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    lines = [f"# Every method from one warm start ({title}" + (f", config {agg['config']})" if agg.get("config") else ")"), ""]
    if "grpo" in methods and len(methods) > 1 and splits:
        values = {name: {s: m[f"{s}_pass1"]["values"] for s in splits} for name, m in methods.items()}
        pairs = [(name, "grpo") for name in methods if name != "grpo"]
        lines += ["## Verdict against GRPO", "", *interpretation(values, pairs, splits, seeds_note(seeds)), ""]
    lines += [*(["![curves](curves.png)", ""] if len(seeds) == 1 else []),
              "![token entropy](entropy.png)", "", "![reward against entropy](entropy_reward.png)", ""]
    return "\n".join(lines) + "\n" + markdown_table(agg)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_entropy(runs: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """Token entropy against step, one line per method: the mean over its runs (one per seed) at the
    steps they all logged, shaded from their min to their max."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    for i, (name, method_runs) in enumerate(runs.items()):
        series = [{m["step"]: m["entropy"] for m in run["metrics"] if m.get("entropy") is not None} for run in method_runs]
        steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
        if not steps:
            continue
        values = np.array([[s[step] for step in steps] for s in series])
        ax.plot(steps, values.mean(axis=0), color=f"C{i}", label=name, marker="o" if len(steps) < 5 else None)
        if len(series) > 1:
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=f"C{i}", alpha=0.15, linewidth=0)
    ax.set_xlabel("RL step")
    ax.set_ylabel("token entropy (nats)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, ncols=2)
    if title:
        ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_methods(agg: dict, path: Path, title: str = "") -> Path:
    """Bars of each method's final hard greedy pass@1 and, for Critique-GRPO variants, its refinement
    success: mean over seeds, error bar ± sample std, one dot per seed (``agg``: aggregate's result)."""
    plt = _plt()
    names = list(agg["methods"])
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.3 * len(names) + 3), 4.8), layout="constrained")
    for ax, key, label in ((axes[0], "hard_pass1", "hard pass@1 (greedy, final)"),
                           (axes[1], "refine_success", "refinement success (correct / refinements)")):
        for i, name in enumerate(names):
            values = [v for v in agg["methods"][name].get(key, {}).get("values", []) if v is not None]
            if not values:
                continue
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            ax.bar(i, float(np.mean(values)), yerr=std, color=f"C{i}", alpha=0.6, capsize=4)
            ax.plot([i] * len(values), values, "k.", markersize=6)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_entropy_reward(run_dirs: dict[str, list[Path]], path: Path, title: str = "") -> dict[str, dict | None]:
    """Training reward against token entropy, per method: means of WINDOW steps of each of its runs as
    points (each step when no run has a full window), and the law R = -a·exp(H) + b fitted to the
    steps of all its runs, drawn over the entropy they span. Returns each method's fit (None: too few
    points)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    fits: dict[str, dict | None] = {}
    for i, (name, dirs) in enumerate(run_dirs.items()):
        try:
            series = [pairs_from_run(d) for d in dirs]
        except ValueError:
            fits[name] = None
            continue
        H, R = window_points(series, WINDOW)
        if not H:
            H, R = [h for E, _ in series for h in E], [r for _, A in series for r in A]
        ax.scatter(H, R, s=18, color=f"C{i}", alpha=0.7)
        label = name
        try:
            fit = fit_on_prefix(series, 1.0, WINDOW)
        except ValueError:
            fits[name] = None
        else:
            fits[name] = fit.to_dict()
            lo, hi = min(h for E, _ in series for h in E), max(h for E, _ in series for h in E)
            grid = np.linspace(lo, hi if hi > lo else lo + 1e-3, 100)
            ax.plot(grid, fit.predict(grid), color=f"C{i}")
            r2 = "—" if fit.r2 is None else f"{fit.r2:.2f}"
            label = f"{name}: ceiling {fit.ceiling:.3f}, R² {r2}"
        ax.plot([], [], color=f"C{i}", marker="o", label=label)
    ax.set_xlabel("token entropy H (nats)")
    ax.set_ylabel("training reward R")
    ax.grid(alpha=0.3)
    if fits:
        ax.legend(fontsize=8, ncols=2)
    if title:
        ax.set_title(f"{title}\npoints: means of {WINDOW} steps; lines: R = −a·exp(H) + b fitted to the steps", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fits
