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


WINDOW = 10          # steps averaged into one point of the window fit
HELDOUT_STEPS = 30   # the last steps of each run whose mean accuracy the prefix fit predicts


@dataclass
class EntropyLawFit:
    a: float
    b: float
    ceiling: float          # b - a: predicted accuracy at zero entropy
    rmse: float             # on the fitted points
    points: int
    heldout_rmse: float | None = None   # on the later points, when fitted on a prefix
    heldout_points: int = 0
    r2: float | None = None             # coefficient of determination on the fitted points
    # The law fitted to window means (``window`` consecutive steps of a run averaged into one point):
    window: int = 0
    window_points: int = 0
    window_a: float | None = None
    window_b: float | None = None
    window_ceiling: float | None = None
    r2_window: float | None = None
    # Fitted on a prefix: predicted minus actual mean accuracy over each run's last held-out steps.
    heldout_mean_error: float | None = None
    heldout_predicted_mean: float | None = None
    heldout_actual_mean: float | None = None
    heldout_mean_points: int = 0

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
    return EntropyLawFit(a, b, b - a, rmse, int(H.size), r2=r_squared(R, R + result.fun))


def r_squared(actual, predicted) -> float | None:
    """Coefficient of determination 1 - SS_res / SS_tot; None when the actual values are all equal.

    >>> r_squared([1, 2, 3, 4], [1, 2, 3, 4])
    1.0
    >>> r_squared([1, 2, 3, 4], [2.5, 2.5, 2.5, 2.5])      # the mean itself: no better than the mean
    0.0
    >>> r_squared([1, 2, 3, 4], [1, 3, 3, 3])              # SS_res = 0 + 1 + 0 + 1 = 2, SS_tot = 5
    0.6
    >>> r_squared([0.5, 0.5, 0.5], [0.4, 0.5, 0.6]) is None
    True
    """
    y, f = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot <= 1e-12 * max(1.0, float(np.sum(y ** 2))):
        return None
    return 1.0 - float(np.sum((y - f) ** 2)) / ss_tot


def window_means(values, window: int) -> list[float]:
    """Means of consecutive windows of ``window`` values; a last window shorter than that is dropped.

    >>> window_means([1, 2, 3, 4, 5, 6, 7], 3)
    [2.0, 5.0]
    >>> window_means([1, 2], 3)
    []
    """
    if window < 1:
        raise ValueError(f"--window must be at least 1, got {window}")
    v = np.asarray(values, dtype=float)
    full = v.size // window * window
    return v[:full].reshape(-1, window).mean(axis=1).tolist()


def window_points(series, window: int) -> tuple[list[float], list[float]]:
    """(entropy, accuracy) window means of each run on its own, pooled: a window never spans two runs."""
    H = [h for E, _ in series for h in window_means(E, window)]
    R = [r for _, A in series for r in window_means(A, window)]
    return H, R


def mean_prediction(fit: EntropyLawFit, entropy, accuracy) -> tuple[float, float, float]:
    """(predicted - actual, predicted, actual) mean accuracy over points: the law is applied to each
    point's entropy, then averaged (not applied to the mean entropy: exp is not linear).

    >>> fit = EntropyLawFit(a=0.2, b=0.9, ceiling=0.7, rmse=0.0, points=3)
    >>> [round(x, 6) for x in mean_prediction(fit, [0.0, 0.0], [0.6, 0.8])]   # predicted 0.7 at H = 0
    [0.0, 0.7, 0.7]
    >>> [round(x, 6) for x in mean_prediction(fit, [0.0, math.log(2)], [0.5, 0.5])]  # (0.7 + 0.5) / 2
    [0.1, 0.6, 0.5]
    """
    predicted = float(np.mean(fit.predict(entropy)))
    actual = float(np.mean(np.asarray(accuracy, dtype=float)))
    return predicted - actual, predicted, actual


def fit_on_prefix(series, fraction: float, window: int = WINDOW, heldout_steps: int = HELDOUT_STEPS) -> EntropyLawFit:
    """Fit on the first ``fraction`` of each (entropy, accuracy) series, in step order; score the rest.

    Each run is cut on its own, so with several runs the held-out points are every run's later
    steps, not the last run's. Example: runs of 10 and 20 steps at fraction 0.5 fit on 5 + 10
    points and score 5 + 10.

    Also fits the law to window means of the fitted steps (``window`` steps a point, each run on
    its own; the window_* fields and r2_window, left None under 3 windows) and, when steps are
    held out, compares the predicted and actual mean accuracy over the last ``heldout_steps`` of
    each run (fewer when fewer are held out): heldout_mean_error = predicted - actual.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"--fit-fraction must be in (0, 1], got {fraction}")
    if heldout_steps < 1:
        raise ValueError(f"--heldout-steps must be at least 1, got {heldout_steps}")
    fitted, held, tails = [], [], []
    for H, R in series:
        H, R = list(H), list(R)
        cut = math.ceil(fraction * len(H) - 1e-9)   # 0.7 * 10 is 7.000000000000001, not 8 points
        fitted.append((H[:cut], R[:cut]))
        held.append((H[cut:], R[cut:]))
        tail = max(cut, len(H) - heldout_steps)
        tails.append((H[tail:], R[tail:]))
    fit_H, fit_R = [h for H, _ in fitted for h in H], [r for _, R in fitted for r in R]
    held_H, held_R = [h for H, _ in held for h in H], [r for _, R in held for r in R]
    if fraction < 1 and len(fit_H) < 3:
        raise ValueError(f"--fit-fraction {fraction} leaves {len(fit_H)} points to fit; the fit needs at least 3")
    fit = fit_entropy_law(fit_H, fit_R)
    if held_H:
        fit.heldout_rmse = float(np.sqrt(np.mean((fit.predict(held_H) - np.asarray(held_R)) ** 2)))
        fit.heldout_points = len(held_H)
        tail_H, tail_R = [h for H, _ in tails for h in H], [r for _, R in tails for r in R]
        fit.heldout_mean_error, fit.heldout_predicted_mean, fit.heldout_actual_mean = mean_prediction(fit, tail_H, tail_R)
        fit.heldout_mean_points = len(tail_H)
    fit.window = window
    win_H, win_R = window_points(fitted, window)
    fit.window_points = len(win_H)
    if len(win_H) >= 3:
        windowed = fit_entropy_law(win_H, win_R)
        fit.window_a, fit.window_b, fit.window_ceiling, fit.r2_window = windowed.a, windowed.b, windowed.ceiling, windowed.r2
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


def plot_fit(entropy, accuracy, fit: EntropyLawFit, path: Path, windows: tuple | None = None) -> Path:
    """Points, the fitted curve and, given ``windows`` = (entropy, accuracy) window means, those
    means and the curve fitted to them (from ``fit``'s window_* fields)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    r2 = f", R² {fit.r2:.3f}" if fit.r2 is not None else ""
    ax.scatter(entropy, accuracy, s=10, alpha=0.4, color="C0", label="steps")
    grid = np.linspace(0.0, max(max(entropy), 1e-3) * 1.05, 100)
    ax.plot(grid, fit.predict(grid), color="C1",
            label=f"R = -{fit.a:.3g}·exp(H) + {fit.b:.3g}; ceiling {fit.ceiling:.3f}{r2}")
    if windows is not None and len(windows[0]):
        ax.scatter(*windows, s=40, marker="D", color="C2", edgecolor="black", zorder=3,
                   label=f"means of {fit.window} steps")
        if fit.window_a is not None:
            r2w = f", R² {fit.r2_window:.3f}" if fit.r2_window is not None else ""
            ax.plot(grid, -fit.window_a * np.exp(grid) + fit.window_b, color="C2", linestyle="--",
                    label=f"fit to the means: ceiling {fit.window_ceiling:.3f}{r2w}")
    ax.set_xlabel("policy entropy H (nats)")
    ax.set_ylabel("accuracy R")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
