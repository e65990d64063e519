"""Every entropy remedy against GRPO and Critique-GRPO, from one warm start, seed and budget.

Each method is a named set of config overrides on top of the base config. The combined method
``critique_grpo+best`` adds to Critique-GRPO the intervention whose GRPO run ended with the
highest hard greedy pass@1 (ties: higher hard pass@k, then table order).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from critique_rl.config import Config, apply_overrides
from critique_rl.entropy_law import fit_entropy_law, pairs_from_run
from critique_rl.pipeline import ensure_warm_start, run_training
from critique_rl.report import cell, column_title, interpretation, load_run, method_summary, plot_runs, seeds_note

# Clip-Cov's covariance window [1, 5] and KL-Cov's top-covariance choice assume std-normalised
# advantages (REFERENCE.md §2), so those two run with scale_rewards=group; grpo_std is GRPO with
# the same scaling, the control that tells the remedy's effect from the scaling's.
METHODS: dict[str, list[str]] = {
    "grpo": ["method=grpo"],
    "critique_grpo": ["method=critique_grpo"],
    "grpo_std": ["method=grpo", "loss.scale_rewards=group"],
    "clip_higher": ["method=grpo", "loss.epsilon_high=0.28"],
    "clip_cov": ["method=grpo", "loss.intervention=clip_cov", "loss.scale_rewards=group"],
    "kl_cov": ["method=grpo", "loss.intervention=kl_cov", "loss.scale_rewards=group"],
    "gppo": ["method=grpo", "loss.intervention=gppo", "loss.epsilon_high=0.28"],
    "top_entropy": ["method=grpo", "loss.intervention=top_entropy_quantile"],
}
INTERVENTIONS = ["clip_higher", "clip_cov", "kl_cov", "gppo", "top_entropy"]
COMBINED = "critique_grpo+best"


def best_intervention(summaries: dict[str, dict]) -> str:
    ranked = [m for m in INTERVENTIONS if m in summaries]
    if not ranked:
        raise ValueError(f"{COMBINED} needs at least one of {', '.join(INTERVENTIONS)} in --methods")
    return max(ranked, key=lambda m: (summaries[m]["hard_pass1"], summaries[m]["hard_pass_at_k"], -ranked.index(m)))


def entropy_law_row(run_dir: Path) -> dict:
    try:
        fit = fit_entropy_law(*pairs_from_run(run_dir))
        return {"a": fit.a, "b": fit.b, "ceiling": fit.ceiling, "fit_rmse": fit.rmse}
    except ValueError:
        return {"a": None, "b": None, "ceiling": None, "fit_rmse": None}


def run_compare(cfg: Config, out: Path, methods: list[str], show_progress: bool = True, config_name: str = "") -> dict:
    """Train each method from one warm start; write compare.json, compare.md and curves.png.
    ``config_name`` (the --config it was launched with) is recorded and titles the plot."""
    unknown = [m for m in methods if m not in METHODS and m != COMBINED]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join([*METHODS, COMBINED])}")
    out.mkdir(parents=True, exist_ok=True)
    ws_dir = ensure_warm_start(cfg, out, show_progress)
    k = cfg.eval.pass_k
    summaries: dict[str, dict] = {}
    overrides_used: dict[str, list[str]] = {}
    for name in [m for m in methods if m != COMBINED] + [m for m in methods if m == COMBINED]:
        if name == COMBINED:
            best = best_intervention(summaries)
            overrides = [o for o in METHODS[best] if o != "method=grpo"] + ["method=critique_grpo"]
        else:
            overrides = METHODS[name]
        run_cfg = apply_overrides(copy.deepcopy(cfg), [f"model.name_or_path={ws_dir}", *overrides])
        run_training(run_cfg, out / name, show_progress)
        run = load_run(out / name)
        summaries[name] = {**method_summary(run, k), "probe_entropy": run["final"].get("entropy/probe"),
                           **entropy_law_row(out / name)}
        overrides_used[name] = overrides
    setting = f"seed {cfg.seed}, config {config_name}" if config_name else f"seed {cfg.seed}"
    plot_runs({name: load_run(out / name) for name in summaries}, out / "curves.png",
              f"Entropy remedies, GRPO and Critique-GRPO from one warm start — {setting}")
    result = {"seed": cfg.seed, "config": config_name, "k": k, "methods": summaries, "overrides": overrides_used,
              "on_policy": cfg.train.num_iterations == 1 and cfg.train.mini_batches == 1}
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    (out / "compare.md").write_text(compare_markdown(result))
    return result


def markdown_table(result: dict) -> str:
    k = result["k"]
    cols = [(c, column_title(c, k)) for c in ("hard_pass1", "easy_pass1", "hard_pass_at_k", "final_entropy")]
    cols += [("probe_entropy", "probe entropy"), ("a", "a"), ("b", "b"), ("ceiling", "ceiling b−a"),
             ("seconds_per_step", column_title("seconds_per_step", k))]
    lines = ["| method | overrides | " + " | ".join(title for _, title in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for name, s in result["methods"].items():
        lines.append(f"| {name} | `{' '.join(result['overrides'][name])}` | " + " | ".join(cell(s[c]) for c, _ in cols) + " |")
    if result["on_policy"]:
        # With one optimizer step per rollout batch the ratio is exactly 1: nothing is clipped and
        # |log pi - log pi_old| has zero gradient, so these remedies reduce to their base loss.
        lines += ["", ("One optimizer step per rollout batch (train.num_iterations = train.mini_batches = 1): the "
                       "importance ratio is 1, so clip-higher, GPPO and KL-Cov train exactly like their base method; "
                       "set train.mini_batches=2 to compare them.")]
    return "\n".join(lines) + "\n"


def compare_markdown(result: dict) -> str:
    """compare.md: the verdict of every method against GRPO (when it ran), then the table."""
    methods = result["methods"]
    splits = [s for s in ("hard", "easy") if all(m.get(f"{s}_pass1") is not None for m in methods.values())]
    lines = [f"# Every method from one warm start (seed {result['seed']}"
             + (f", config {result['config']})" if result.get("config") else ")"), ""]
    if "grpo" in methods and len(methods) > 1 and splits:
        values = {name: {s: [m[f"{s}_pass1"]] for s in splits} for name, m in methods.items()}
        pairs = [(name, "grpo") for name in methods if name != "grpo"]
        lines += ["## Verdict against GRPO", "", *interpretation(values, pairs, splits, seeds_note([result["seed"]])), ""]
    return "\n".join(lines) + "\n" + markdown_table(result)
