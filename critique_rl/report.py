"""Plots, a Markdown report and a summary of one or more runs, with a verdict written from the numbers."""

from __future__ import annotations

import json
import re
import statistics
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from critique_rl.config import flatten  # noqa: E402
from critique_rl.metrics import read_metrics  # noqa: E402

# A difference of greedy pass@1 smaller than this is called a tie: it is about the seed-to-seed
# std of easy pass@1 on the embedded default (0.015 over 3 seeds, README), i.e. 3-4 problems of 200.
TIE = 0.02
EARLY_KEY = re.compile(r"(\w+)_pass1_step(\d+)")   # summary key of greedy pass@1 at the early evaluation

METHOD_LABELS = {"grpo": "GRPO", "critique_grpo": "Critique-GRPO", "grpo_equal_compute": "GRPO at equal compute"}

TRAINING_PANELS = [
    ("reward", "train reward", "mean reward of the initial samples"),
    ("entropy", "policy entropy", "mean token entropy (nats)"),
    ("frac_all_fail", "all-fail groups", "fraction of groups with no success"),
    ("refine/success_rate", "refinements (Critique-GRPO)", "fraction of refinements correct"),
]


def run_dirs(paths: list[str | Path]) -> list[Path]:
    """The run directories ``paths`` name: a run directory (it holds metrics.jsonl) as is, a folder of
    runs (a pipeline's output) as the runs in it, a pipeline's in its order (grpo, critique_grpo,
    grpo_equal_compute), other runs by name. Anything else is a FileNotFoundError naming it."""
    order = list(METHOD_LABELS)
    found = []
    for path in map(Path, paths):
        if (path / "metrics.jsonl").is_file():
            found.append(path)
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such directory")
        runs = sorted((d for d in path.iterdir() if (d / "metrics.jsonl").is_file()),
                      key=lambda d: (order.index(d.name) if d.name in order else len(order), d.name))
        if not runs:
            raise FileNotFoundError(f"{path}: neither a run directory (no metrics.jsonl) nor a folder of runs "
                                    "(no subdirectory holds one)")
        found += runs
    return found


def load_run(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    final_path, config_path = run_dir / "final_eval.json", run_dir / "config.yaml"
    return {"dir": run_dir, "metrics": read_metrics(run_dir),
            "final": json.loads(final_path.read_text()) if final_path.is_file() else {},
            "config": yaml.safe_load(config_path.read_text()) or {} if config_path.is_file() else {}}


def eval_names(metrics: list[dict]) -> list[str]:
    """The evaluation sets of a run, 'hard' first (the split RL is judged on), else in log order.

    >>> eval_names([{"step": 0, "eval/easy_pass1": 1.0, "eval/hard_pass1": 0.0}, {"eval/easy_pass1": 1.0}])
    ['hard', 'easy']
    """
    names = [k[len("eval/"):-len("_pass1")] for m in metrics for k in m if k.startswith("eval/") and k.endswith("_pass1")]
    return sorted(dict.fromkeys(names), key=lambda n: n != "hard")


def column_title(key: str, k: int) -> str:
    """A summary key as a table column.

    >>> [column_title(c, 4) for c in ("hard_pass1", "easy_pass_at_k", "initial_hard_pass1", "hard_pass1_step50")]
    ['hard pass@1 (greedy)', 'easy pass@4 (sampled)', 'hard pass@1 before RL', 'hard pass@1 at step 50 (greedy)']
    """
    fixed = {"steps": "steps", "final_entropy": "final entropy", "seconds_per_step": "s / step"}
    if key in fixed:
        return fixed[key]
    if (early := EARLY_KEY.fullmatch(key)) is not None:
        return f"{early[1]} pass@1 at step {early[2]} (greedy)"
    if key.startswith("initial_") and key.endswith("_pass1"):
        return f"{key[len('initial_'):-len('_pass1')]} pass@1 before RL"
    if key.endswith("_pass_at_k"):
        return f"{key[:-len('_pass_at_k')]} pass@{k} (sampled)"
    if key.endswith("_pass1"):
        return f"{key[:-len('_pass1')]} pass@1 (greedy)"
    return key


def num(v: float) -> str:
    """A pass rate with the precision it has (200 problems: steps of 0.005), at least 2 decimals.

    >>> num(0.395), num(0.23), num(0.0), num(1.0)
    ('0.395', '0.23', '0.00', '1.00')
    """
    text = f"{v:.3f}"
    return text[:-1] if text.endswith("0") else text


def difference(a: float, b: float) -> str:
    """a - b signed, or 'tie' when it is under TIE.

    >>> difference(0.26, 0.0), difference(0.2, 0.25), difference(0.995, 0.985)
    ('+0.26', '-0.05', 'tie')
    """
    return "tie" if abs(a - b) < TIE else ("+" if a > b else "-") + num(abs(a - b))


def split_verdict(split: str, cand: str, base: str, cand_values: list[float], base_values: list[float]) -> str:
    """One split's verdict on greedy pass@1 of two methods, from per-seed values paired by position.

    >>> split_verdict("hard", "Critique-GRPO", "GRPO", [0.26], [0.0])
    'hard: Critique-GRPO wins by +0.26 (Critique-GRPO 0.26 vs GRPO 0.00)'
    >>> split_verdict("easy", "Critique-GRPO", "GRPO", [0.995], [0.985])
    'easy: tie (Critique-GRPO 0.995 vs GRPO 0.985)'
    >>> split_verdict("hard", "C", "G", [0.395, 0.27, 0.43], [0.23, 0.0, 0.0])
    'hard: C wins by +0.288 ± 0.133 (C 0.365 vs G 0.077, means over 3 seeds; C ahead in 3 of 3 seeds)'
    >>> split_verdict("hard", "C", "G", [0.375, 0.285, 0.46], [0.0, 0.28, 0.445])
    'hard: no consistent winner; C ahead on average by +0.132 ± 0.211 (C 0.373 vs G 0.242, means over 3 seeds) but only in 1 of 3 seeds'
    """
    deltas = [c - b for c, b in zip(cand_values, base_values, strict=True)]
    mean = statistics.mean(deltas)
    values = f"{cand} {num(statistics.mean(cand_values))} vs {base} {num(statistics.mean(base_values))}"
    if len(deltas) > 1:
        values += f", means over {len(deltas)} seeds"
    if abs(mean) < TIE:
        spread = f", difference {mean:+.3f} ± {num(statistics.stdev(deltas))}" if len(deltas) > 1 else ""
        return f"{split}: tie ({values}{spread})"
    winner = cand if mean > 0 else base
    if len(deltas) == 1:
        return f"{split}: {winner} wins by +{num(abs(mean))} ({values})"
    ahead = sum(d >= TIE if mean > 0 else d <= -TIE for d in deltas)
    spread = f"+{num(abs(mean))} ± {num(statistics.stdev(deltas))}"
    if ahead == len(deltas):
        return f"{split}: {winner} wins by {spread} ({values}; {winner} ahead in {ahead} of {len(deltas)} seeds)"
    # A mean carried by some seeds only is no win: say so rather than let the mean speak for all.
    return (f"{split}: no consistent winner; {winner} ahead on average by {spread} ({values}) but only in "
            f"{ahead} of {len(deltas)} seeds")


def verdict_values(method: dict, splits: list[str]) -> dict[str, list[float]]:
    """What the verdict compares, per split (one seed's values): final greedy pass@1, and for the
    first split also at the early evaluation ('hard at step 50') when the summary has it.

    >>> verdict_values({"hard_pass1": 0.3, "easy_pass1": 1.0, "hard_pass1_step50": 0.2}, ["hard", "easy"])
    {'hard': [0.3], 'easy': [1.0], 'hard at step 50': [0.2]}
    """
    values = {s: [method.get(f"{s}_pass1")] for s in splits}
    for key, value in method.items():
        if (early := EARLY_KEY.fullmatch(key)) is not None:
            values[f"{early[1]} at step {early[2]}"] = [value]
    return values


def pair_verdict(cand: str, base: str, values: dict[str, dict[str, list[float]]], splits: list[str]) -> str:
    """'cand vs base: <verdict of each split>', values[label][split] being per-seed greedy pass@1."""
    parts = [split_verdict(s, cand, base, values[cand][s], values[base][s]) for s in splits]
    return f"**{cand} vs {base}** — " + "; ".join(parts) + "."


def seeds_note(seeds: list[int], more_seeds: str = "") -> str:
    """What the number of seeds allows one to conclude; ``more_seeds`` says how to get more."""
    if len(seeds) == 1:
        return (f"One seed ({seeds[0]}): the seed-to-seed spread is unknown (the README's results table gives it for "
                f"the embedded default); {more_seeds or 'rerun with two more seeds'} before trusting a difference.")
    return (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): a difference is the mean of the per-seed "
            "differences ± their sample std.")


def interpretation(values: dict[str, dict[str, list[float]]], pairs: list[tuple[str, str]], splits: list[str],
                   seeds_line: str) -> list[str]:
    """Markdown bullet lines: for each (candidate, baseline) pair who wins on which split, by how much;
    then ``seeds_line`` (see seeds_note) and the tie rule."""
    lines = [f"- {pair_verdict(c, b, values, splits)}" for c, b in pairs]
    return lines + [f"- {seeds_line}",
                    f"- Greedy pass@1 on the held-out splits; a difference under {TIE} is called a tie."]


def continuations(runs: dict[str, dict]) -> dict[str, tuple[str, int]]:
    """Runs that continue an earlier one (their log starts with all of its log): label -> (source, last shared step).

    Their shared steps are the source's own, so they are drawn from where they part.
    """
    found = {}
    for label, run in runs.items():
        sources = [(len(other["metrics"]), other_label) for other_label, other in runs.items()
                   if other_label != label and 1 < len(other["metrics"]) < len(run["metrics"])
                   and run["metrics"][:len(other["metrics"])] == other["metrics"]]
        if sources:
            n, source = max(sources)
            found[label] = (source, runs[source]["metrics"][n - 1]["step"])
    return found


def _series(run: dict, key: str, after: int | None = None) -> list[tuple[int, float]]:
    """(step, value) of ``key``; with ``after``, the points past that step and the last one before, so a
    continuation's line starts where its source's ends."""
    points = [(m["step"], m[key]) for m in run["metrics"] if m.get(key) is not None]
    final = run["final"]
    if final.get(key) is not None and (not points or points[-1][0] < final["step"]):
        points.append((final["step"], final[key]))      # the final evaluation, when it falls between eval.every steps
    if after is None:
        return points
    shared = [p for p in points if p[0] <= after]
    return shared[-1:] + [p for p in points if p[0] > after]


def plot_runs(runs: dict[str, dict], path: Path, title: str = "") -> Path:
    """Held-out accuracy and training signals of the labelled runs, one colour per run, legend below."""
    names = list(dict.fromkeys(n for run in runs.values() for n in eval_names(run["metrics"])))
    panels = [(f"eval/{n}_pass1", f"{n} split (held-out)", "greedy pass@1") for n in names[:2]] + TRAINING_PANELS
    continued = continuations(runs)
    # A run whose every panel repeats an earlier run's (e.g. a remedy that is a no-op) is hidden
    # under it whatever the style, so the legend says so.
    same = {}
    for i, (label, run) in enumerate(runs.items()):
        for other in list(runs)[:i]:
            if other not in same and all(_series(run, key) == _series(runs[other], key) for key, _, _ in panels):
                same[label] = other
                break
    fig, axes = plt.subplots(2, 3, figsize=(15, 9), layout="constrained")
    handles = {}
    for ax, (key, panel_title, ylabel) in zip(axes.flat, panels):
        for i, (label, run) in enumerate(runs.items()):
            points = _series(run, key, continued[label][1] if label in continued else None)
            if points:
                xs, ys = zip(*points)
                # Earlier runs are drawn wider, so a later run on the same values leaves them visible as an outline.
                width = 1.2 + 1.0 * (len(runs) - 1 - i) / max(len(runs) - 1, 1)
                (line,) = ax.plot(xs, ys, color=f"C{i}", linestyle="--" if label in continued else "-", linewidth=width,
                                  marker="o" if key.startswith("eval/") else None, markersize=2 + 1.5 * width)
                handles.setdefault(label, line)
        ax.set_title(panel_title)
        ax.set_xlabel("RL step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no run logged {key}", ha="center", va="center", transform=ax.transAxes, color="0.4")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    legend = {}
    for label, line in handles.items():
        text = label
        if label in continued:
            text += f" (continues {continued[label][0]} after step {continued[label][1]})"
        if label in same:
            text += f" (same curves as {same[label]})"
        legend[text] = line
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(len(legend), 3), frameon=False)
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 140)), fontsize=13)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def early_step(runs: list[dict]) -> int | None:
    """The evaluation step nearest a third of the shortest run: how fast a method leaves the plateau
    shows there, before luck lets a slower one catch up. None when the runs share no evaluation step.

    >>> early_step([{"metrics": [{"step": s, "eval/hard_pass1": 0.0} for s in (0, 25, 50, 75, 100, 125, 150)]}])
    50
    """
    shared = set.intersection(*({m["step"] for m in run["metrics"] if any(k.startswith("eval/") for k in m)}
                                for run in runs)) - {0} if runs else set()
    if not shared:
        return None
    shortest = min(max(m["step"] for m in run["metrics"]) for run in runs)
    return min(sorted(shared), key=lambda s: abs(s - shortest / 3))


def method_summary(run: dict, k: int, early: int | None = None) -> dict:
    """A run's numbers for the table and summary.json; ``early``: also greedy pass@1 at that step."""
    final, metrics = run["final"], run["metrics"]
    trained = [m for m in metrics if "entropy" in m]
    steps = final.get("step", trained[-1]["step"] if trained else 0)
    step_times = [m["time/step"] for m in trained]
    names = eval_names(metrics)
    at_early = next((m for m in metrics if m["step"] == early and any(k.startswith("eval/") for k in m)), {})
    return {
        **{f"{n}_pass1": final.get(f"eval/{n}_pass1") for n in names},
        **({f"{n}_pass1_step{early}": at_early.get(f"eval/{n}_pass1") for n in names[:1]} if at_early else {}),
        **{f"{n}_pass_at_k": final.get(f"eval/{n}_pass@{k}") for n in names},
        "k": k,
        **{f"initial_{n}_pass1": metrics[0].get(f"eval/{n}_pass1") if metrics else None for n in names},
        "final_entropy": trained[-1]["entropy"] if trained else None,
        "steps": steps,
        "seconds_per_step": sum(step_times) / len(step_times) if step_times else None,
    }


def cell(v) -> str:
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def config_differences(configs: dict[str, dict]) -> list[tuple[str, list]]:
    """The dotted keys whose values differ between the labelled configs, with each one's value (None: absent).

    >>> config_differences({"a": {"method": "grpo", "train": {"steps": 3, "lr": 1}}, "b": {"method": "grpo", "train": {"steps": 6, "lr": 1}}})
    [('train.steps', [3, 6])]
    """
    flat = [flatten(c) for c in configs.values()]
    keys = dict.fromkeys(key for f in flat for key in f)
    return [(key, [f.get(key) for f in flat]) for key in keys
            if len({json.dumps(f.get(key), sort_keys=True) for f in flat}) > 1]


def _setting(v) -> str:
    """A config value as a table cell (None: absent from that config)."""
    text = v if isinstance(v, str) else json.dumps(v)
    return "—" if v is None else "`" + text.replace("|", "\\|") + "`"


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def write_report(runs: dict[str, Path], out_dir: Path, k: int, *, labels: dict[str, str] | None = None,
                 title: str = "critique-rl report", config_name: str = "", notes: str = "",
                 pairs: list[tuple[str, str]] | None = None, more_seeds: str = "", extra: dict | None = None) -> dict:
    """Write ``curves.png``, ``report.md`` and ``summary.json`` for the runs (key -> run directory).

    ``labels`` name the keys in the report (default: the keys); ``pairs`` are the (candidate,
    baseline) keys the verdict compares (default: every run against the first); ``more_seeds``
    says how to run more seeds. summary.json holds ``extra`` and, under ``methods``, each run's
    numbers by key.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = {key: (labels or {}).get(key, key) for key in runs}
    loaded = {labels[key]: load_run(d) for key, d in runs.items()}
    seeds = sorted({run["config"].get("seed") for run in loaded.values()} - {None})
    setting = ", ".join(filter(None, [f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}" if seeds else "",
                                      f"config {config_name}" if config_name else ""]))
    plot_runs(loaded, out_dir / "curves.png", f"{title} — {setting}" if setting else title)
    early = early_step(list(loaded.values()))
    methods = {key: method_summary(loaded[labels[key]], k, early) for key in runs}
    summary = {**(extra or {}), "methods": methods}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))

    splits = list(dict.fromkeys(n for run in loaded.values() for n in eval_names(run["metrics"])))
    values = {labels[key]: verdict_values(m, splits) for key, m in methods.items()}
    splits = list(next(iter(values.values()))) if values else splits
    pairs = pairs if pairs is not None else [(key, next(iter(runs))) for key in list(runs)[1:]]
    # A verdict needs both numbers; a run without a final evaluation is left out of it.
    pairs = [(c, b) for c, b in pairs if all(v[0] is not None for key in (c, b) for v in values[labels[key]].values())]
    lines = [f"# {title}", ""]
    if setting:
        lines += [setting[0].upper() + setting[1:] + ".", ""]
    if notes:
        lines += [notes, ""]
    if pairs and splits:
        seeds_line = seeds_note(seeds, more_seeds) if len(seeds) == 1 else \
            f"The runs have different seeds ({', '.join(map(str, seeds))}): each difference mixes method and seed."
        lines += ["## Verdict", "", *interpretation(values, [(labels[c], labels[b]) for c, b in pairs], splits, seeds_line), ""]
    lines += ["![curves](curves.png)", "", "## Final evaluation", ""]
    cols = ["steps", *dict.fromkeys(c for s in methods.values() for c in s if c not in ("steps", "k"))]
    lines += ["| run | " + " | ".join(column_title(c, k) for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {labels[key]} | " + " | ".join(cell(s.get(c)) for c in cols) + " |" for key, s in methods.items()]
    lines += ["", f"pass@{k} (sampled): the chance that one of {k} answers sampled at the evaluation temperature is "
              "correct, estimated from `eval.pass_n` samples per problem; at step N: greedy pass@1 at the evaluation nearest a "
              "third of the shortest run (how fast a run leaves a plateau); before RL: greedy pass@1 of the warm start; "
              "final entropy: mean token entropy (nats) of the last step's samples; s / step: mean wall time of a "
              "training step.", ""]
    lines += config_section({label: run["config"] for label, run in loaded.items()},
                            {label: run["dir"] / "config.yaml" for label, run in loaded.items()}, out_dir)
    (out_dir / "report.md").write_text("\n".join(lines))
    return summary


def config_section(configs: dict[str, dict], paths: dict[str, Path], out_dir: Path) -> list[str]:
    """Markdown: the settings in which the labelled configs differ, and where the full configs are."""
    where = ", ".join(f"`{_relative(p, out_dir)}`" for p in paths.values())
    lines = ["## Config differences", ""]
    diffs = config_differences(configs)
    if len(configs) < 2:
        return lines + [f"One run; its full config: {where}.", ""]
    if not diffs:
        return lines + [f"The runs have identical configs: {where}.", ""]
    lines += ["| setting | " + " | ".join(configs) + " |", "|---" * (len(configs) + 1) + "|"]
    lines += [f"| `{key}` | " + " | ".join(_setting(v) for v in vals) + " |" for key, vals in diffs]
    return lines + ["", f"Every other setting is the same in all runs; the full configs: {where}.", ""]
