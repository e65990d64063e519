"""Per-step metrics (one JSON object per line) and a readable samples log."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / "metrics.jsonl"
        self.samples_path = run_dir / "samples.jsonl"

    def log(self, metrics: dict) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in metrics.items()}) + "\n")

    def samples(self, step: int, groups: list[dict]) -> None:
        with self.samples_path.open("a") as f:
            for i, g in enumerate(groups):
                f.write(json.dumps({"step": step, "prompt": i, **g}) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (a resumed run redoes them), and a line torn by a crash."""
        for path in (self.metrics_path, self.samples_path):
            if path.exists():
                kept = [line for line in path.read_text().splitlines() if _step_of(line) is not None and _step_of(line) <= step]
                write_atomic(path, "".join(line + "\n" for line in kept))


def _step_of(line: str) -> int | None:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl; is this a run directory?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def one_line_summary(m: dict) -> str:
    parts = [f"step {m['step']:>4}", f"reward {m['reward']:.3f}", f"hard {m['accuracy/train_hard']:.2f}",
             f"all-fail {m['frac_all_fail']:.2f}", f"H {m['entropy']:.3f}"]
    if "refine/success_rate" in m:
        parts.append(f"refine ok {m['refine/success_rate']:.2f} rescued {int(m['refine/groups_rescued'])}")
    if "eval/hard_pass1" in m:
        parts.append(f"eval easy {m['eval/easy_pass1']:.2f} hard {m['eval/hard_pass1']:.2f}")
    parts.append(f"{m['time/step']:.2f}s")
    return " | ".join(parts)
