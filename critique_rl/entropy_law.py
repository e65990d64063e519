"""The entropy–reward law R = -a·exp(H) + b (Cui et al., 2025), fitted by least squares.

At H = 0 the law predicts the ceiling b - a: the accuracy a run saturates at once its entropy
is spent.

    >>> import numpy as np
    >>> H = np.linspace(0.1, 1.5, 30)
    >>> fit = fit_entropy_law(H, -0.2 * np.exp(H) + 0.9)
    >>> round(fit.a, 3), round(fit.b, 3), round(fit.ceiling, 3)
    (0.2, 0.9, 0.7)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from critique_rl.metrics import read_metrics


@dataclass
class EntropyLawFit:
    a: float
    b: float
    ceiling: float          # b - a: predicted accuracy at zero entropy
    rmse: float             # on the fitted points
    points: int
    heldout_rmse: float | None = None   # on the later points, when fitted on a prefix
    heldout_points: int = 0

    def predict(self, entropy):
        return -self.a * np.exp(np.asarray(entropy, dtype=float)) + self.b

    def to_dict(self) -> dict:
        return asdict(self)


def fit_entropy_law(entropy, accuracy) -> EntropyLawFit:
    """Least-squares fit of R = -a·exp(H) + b to paired points (at least 3)."""
    H, R = np.asarray(entropy, dtype=float), np.asarray(accuracy, dtype=float)
    if H.shape != R.shape or H.size < 3:
        raise ValueError(f"the entropy–reward fit needs at least 3 (entropy, accuracy) pairs, got {H.size}")
    # The law is linear in (a, b) given exp(H): start from the linear least-squares solution.
    design = np.stack([-np.exp(H), np.ones_like(H)], axis=1)
    start = np.linalg.lstsq(design, R, rcond=None)[0]
    result = least_squares(lambda p: -p[0] * np.exp(H) + p[1] - R, start)
    a, b = map(float, result.x)
    rmse = float(np.sqrt(np.mean(result.fun ** 2)))
    return EntropyLawFit(a, b, b - a, rmse, int(H.size))


def fit_on_prefix(series, fraction: float) -> EntropyLawFit:
    """Fit on the first ``fraction`` of each (entropy, accuracy) series, in step order; score the rest.

    Each run is cut on its own, so with several runs the held-out points are every run's later
    steps, not the last run's. Example: runs of 10 and 20 steps at fraction 0.5 fit on 5 + 10
    points and score 5 + 10.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"--fit-fraction must be in (0, 1], got {fraction}")
    fit_H, fit_R, held_H, held_R = [], [], [], []
    for H, R in series:
        cut = math.ceil(fraction * len(H) - 1e-9)   # 0.7 * 10 is 7.000000000000001, not 8 points
        fit_H.extend(H[:cut])
        fit_R.extend(R[:cut])
        held_H.extend(H[cut:])
        held_R.extend(R[cut:])
    if fraction < 1 and len(fit_H) < 3:
        raise ValueError(f"--fit-fraction {fraction} leaves {len(fit_H)} points to fit; the fit needs at least 3")
    fit = fit_entropy_law(fit_H, fit_R)
    if held_H:
        fit.heldout_rmse = float(np.sqrt(np.mean((fit.predict(held_H) - np.asarray(held_R)) ** 2)))
        fit.heldout_points = len(held_H)
    return fit


def pairs_from_run(run_dir: Path, accuracy_key: str = "reward") -> tuple[list[float], list[float]]:
    """(entropy, accuracy) per step of a run: steps that logged both keys, in step order."""
    rows = [m for m in read_metrics(run_dir) if m.get("entropy") is not None and m.get(accuracy_key) is not None]
    if not rows:
        raise ValueError(f"{run_dir}/metrics.jsonl: no step logs both 'entropy' and {accuracy_key!r}")
    return [m["entropy"] for m in rows], [m[accuracy_key] for m in rows]


def pairs_from_jsonl(path: Path) -> tuple[list[float], list[float]]:
    """Pairs from a file of {"entropy": H, "accuracy": R} objects, one per line (blank lines skipped)."""
    H, R = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            h, r = float(row["entropy"]), float(row["accuracy"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}:{number}: expected an object with numeric 'entropy' and 'accuracy' ({err})") from None
        if not (math.isfinite(h) and math.isfinite(r)):
            raise ValueError(f"{path}:{number}: entropy and accuracy must be finite, got {h}, {r}")
        H.append(h)
        R.append(r)
    if not H:
        raise ValueError(f"{path}: no points (the file is empty)")
    return H, R


def plot_fit(entropy, accuracy, fit: EntropyLawFit, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(entropy, accuracy, s=10, alpha=0.6, label="steps")
    grid = np.linspace(0.0, max(max(entropy), 1e-3) * 1.05, 100)
    ax.plot(grid, fit.predict(grid), color="C1",
            label=f"R = -{fit.a:.3g}·exp(H) + {fit.b:.3g}; ceiling {fit.ceiling:.3f}")
    ax.set_xlabel("policy entropy H (nats)")
    ax.set_ylabel("accuracy R")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
