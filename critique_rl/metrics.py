"""Per-step metrics (one JSON object per line) and a readable samples log.

``metrics.jsonl`` is always written; ``MetricsLogger`` fans the same rows out to the backends of
``log.report_to`` (TensorBoard, W&B, MLflow: ``critique_rl.tracking``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from critique_rl import tracking
from critique_rl.checkpoint import CheckpointError, what_is_intact


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class LogWriteError(CheckpointError):
    """A log of the run could not be written (e.g. the disk is full); it exits like a failed checkpoint."""


class MetricsLogger:
    """metrics.jsonl and samples.jsonl in ``run_dir``, plus the backends of ``cfg.log.report_to``.

    The backends' libraries are imported here (a missing one fails before any training step);
    their runs start at the first ``log`` and end at ``close``. A backend that fails while logging
    is reported and dropped: metrics.jsonl stays the complete record.
    """

    def __init__(self, run_dir: Path, cfg=None):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        self.samples_path = run_dir / "samples.jsonl"
        self.cfg = cfg
        if cfg is not None:
            tracking.require(cfg.log)
        self.trackers: list | None = None      # opened at the first log
        self.resume_step: int | None = None

    def log(self, metrics: dict) -> None:
        row = {k: _clean(v) for k, v in metrics.items()}
        self._append(self.metrics_path, metrics.get("step"), [row])
        self._fan_out(row)

    def log_final(self, final: dict) -> None:
        """The final evaluation: final_eval.json, and to the backends at its step."""
        path = self.run_dir / "final_eval.json"
        try:
            write_atomic(path, json.dumps(final, indent=2))
        except OSError as err:
            raise LogWriteError(f"could not write {path}: {err}; {what_is_intact(self.run_dir)}") from None
        self._fan_out({k: _clean(v) for k, v in final.items()})

    def _append(self, path: Path, step, records: list[dict]) -> None:
        """Append ``records`` as JSON lines; on a write error (a full disk) the file is cut back to
        its old length, so that no torn line is left for readers, and LogWriteError is raised."""
        data = memoryview("".join(json.dumps(r) + "\n" for r in records).encode())
        try:
            with path.open("ab", buffering=0) as f:      # unbuffered: the error comes from this write
                start = f.tell()
                try:
                    while data:
                        data = data[f.write(data):]
                except OSError:
                    f.truncate(start)     # needs no space
                    raise
        except OSError as err:
            raise LogWriteError(f"could not append step {step} to {path}: {err}; {what_is_intact(self.run_dir)}") from None

    def _fan_out(self, row: dict) -> None:
        if self.cfg is None or row.get("step") is None:
            return
        if self.trackers is None:
            self.trackers = tracking.open_trackers(self.run_dir, self.cfg, self.resume_step)
        for tracker in list(self.trackers):
            try:
                tracker.log(row, int(row["step"]))
            except Exception as err:   # noqa: BLE001 - one backend's outage must not stop training
                print(f"warning: {type(tracker).__name__} failed at step {row['step']} ({type(err).__name__}: {err}); "
                      "no more metrics go to it, metrics.jsonl has them all", file=sys.stderr)
                self.trackers.remove(tracker)
                _close_quietly(tracker, err)

    def close(self, error: BaseException | None = None) -> None:
        """Flush and end the backends' runs (``error``: how training ended, for their run status)."""
        for tracker in self.trackers or []:
            _close_quietly(tracker, error)
        self.trackers = None

    def samples(self, step: int, groups: list[dict]) -> None:
        self._append(self.samples_path, step, [{"step": step, "prompt": i, **g} for i, g in enumerate(groups)])

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (a resumed run redoes them), and a line torn by a crash."""
        self.resume_step = step
        for path in (self.metrics_path, self.samples_path):
            if path.exists():
                kept = [line for line in path.read_text().splitlines() if _step_of(line) is not None and _step_of(line) <= step]
                write_atomic(path, "".join(line + "\n" for line in kept))


def _close_quietly(tracker, error: BaseException | None) -> None:
    try:
        tracker.close(error)
    except Exception as err:   # noqa: BLE001 - closing the others matters more
        print(f"warning: closing {type(tracker).__name__} failed ({type(err).__name__}: {err})", file=sys.stderr)


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
    parts = [f"step {m['step']:>4}", f"reward {m['reward']:.3f}"]
    if m.get("accuracy/train_hard") is not None:
        parts.append(f"hard {m['accuracy/train_hard']:.2f}")
    parts.append(f"all-fail {m['frac_all_fail']:.2f}")
    if "entropy" in m:
        parts.append(f"H {m['entropy']:.3f}")
    if "refine/success_rate" in m:
        parts.append(f"refine ok {m['refine/success_rate']:.2f} rescued {int(m['refine/groups_rescued'])}")
    if "critic/fallbacks" in m:     # model critics: a dead critic must not pass for a useless refinement
        parts.append(f"fallback {int(m['critic/fallbacks'])}/{int(m['refine/critiques'])}")
    evals = [(k[len("eval/"):-len("_pass1")], v) for k, v in m.items() if k.startswith("eval/") and k.endswith("_pass1")]
    if evals:
        parts.append("eval " + " ".join(f"{name} {v:.2f}" for name, v in evals))
    parts.append(f"{m['time/step']:.2f}s")
    return " | ".join(parts)
