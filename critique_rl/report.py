"""Plots, a Markdown report and a summary of one or more runs on shared axes."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from critique_rl.metrics import read_metrics  # noqa: E402

TRAINING_PANELS = [
    ("reward", "train reward (initial samples)"),
    ("entropy", "mean token entropy (nats)"),
    ("frac_all_fail", "fraction of all-fail groups"),
    ("refine/success_rate", "refinement success rate"),
]


def load_run(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    final_path = run_dir / "final_eval.json"
    return {"dir": run_dir, "metrics": read_metrics(run_dir),
            "final": json.loads(final_path.read_text()) if final_path.is_file() else {},
            "config": (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""}


def eval_names(metrics: list[dict]) -> list[str]:
    """The evaluation sets of a run, in the order its log first names them (eval/<name>_pass1).

    >>> eval_names([{"step": 0, "eval/easy_pass1": 1.0, "eval/hard_pass1": 0.0}, {"eval/easy_pass1": 1.0}])
    ['easy', 'hard']
    """
    names = [k[len("eval/"):-len("_pass1")] for m in metrics for k in m if k.startswith("eval/") and k.endswith("_pass1")]
    return list(dict.fromkeys(names))


def plot_runs(runs: dict[str, dict], path: Path) -> Path:
    names = list(dict.fromkeys(n for run in runs.values() for n in eval_names(run["metrics"])))
    # Held-out accuracy first (the two first evaluation sets), then the training signals.
    panels = [(f"eval/{n}_pass1", f"{n} greedy pass@1 (held-out)") for n in names[:2]] + TRAINING_PANELS
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    # One colour and line style per run across all panels; later runs dashed so overlaps stay visible.
    styles = {label: (f"C{i}", "-" if i < 2 else "--") for i, label in enumerate(runs)}
    for ax, (key, title) in zip(axes.flat, panels):
        for label, run in runs.items():
            points = [(m["step"], m[key]) for m in run["metrics"] if m.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                color, line = styles[label]
                ax.plot(xs, ys, label=label, color=color, linestyle=line,
                        marker="o" if key.startswith("eval/") else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def method_summary(run: dict, k: int) -> dict:
    final, metrics = run["final"], run["metrics"]
    trained = [m for m in metrics if "entropy" in m]
    steps = final.get("step", trained[-1]["step"] if trained else 0)
    step_times = [m["time/step"] for m in trained]
    names = eval_names(metrics)
    return {
        **{f"{n}_pass1": final.get(f"eval/{n}_pass1") for n in names},
        **{f"{n}_pass_at_k": final.get(f"eval/{n}_pass@{k}") for n in names},
        "k": k,
        **{f"initial_{n}_pass1": metrics[0].get(f"eval/{n}_pass1") if metrics else None for n in names},
        "final_entropy": trained[-1]["entropy"] if trained else None,
        "steps": steps,
        "seconds_per_step": sum(step_times) / len(step_times) if step_times else None,
    }


def _fmt(v) -> str:
    return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def write_report(runs: dict[str, Path], out_dir: Path, k: int, title: str = "critique-rl report",
                 notes: str = "", extra: dict | None = None) -> dict:
    """Write ``curves.png``, ``report.md`` and ``summary.json`` for the labelled runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = {label: load_run(d) for label, d in runs.items()}
    plot_runs(loaded, out_dir / "curves.png")
    methods = {label: method_summary(run, k) for label, run in loaded.items()}
    summary = {**(extra or {}), "methods": methods}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))

    cols = ["steps", *dict.fromkeys(c for s in methods.values() for c in s if c not in ("steps", "k"))]
    lines = [f"# {title}", "", notes, "", "![curves](curves.png)", "", f"## Final evaluation (pass@k with k = {k})", "",
             "| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(_fmt(s.get(c)) for c in cols) + " |" for label, s in methods.items()]
    lines += ["", "## Configs", ""]
    for label, run in loaded.items():
        lines += [f"### {label} (`{run['dir']}`)", "", "```yaml", run["config"].rstrip(), "```", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return summary
