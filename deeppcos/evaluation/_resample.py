"""Vectorised patient bootstrap shared by the metrics, the subgroup table and the plots.

A bootstrap resample is represented by a *weight* per row: how many times that patient was drawn.
Every statistic below is a weighted sum over rows, so one matrix product scores a whole block of
resamples at once — 1000 resamples of 600 patients take a few tens of milliseconds instead of a
Python loop over 1000 calls to scikit-learn. The point estimate is the same code with all
weights 1, so point value and interval can never drift apart; the jackknife behind the BCa
acceleration is the same code again, with one unit's weights set to 0.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.stats import CI_LEVEL, Interval, bootstrap_interval, group_codes, jackknife_weights

# Cells of one weight block (~32 MB as float64): bounds memory on large cohorts while keeping
# blocks big enough that the per-block overhead is negligible at the usual 1000 x few hundred.
_BLOCK_CELLS = 4_000_000

Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]


def bootstrap_weights(
    n: int, n_boot: int, rng: np.random.Generator, groups: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Blocks of resample weights, shape (block, n): draw patients (or groups) with replacement.

    With ``groups`` (e.g. patients linked by duplicate images) whole groups are drawn and every
    row of a drawn group gets that group's count, so linked rows stay together.
    """
    codes, n_units = (None, n) if groups is None else group_codes(groups)
    block = max(1, _BLOCK_CELLS // max(n, 1))
    done = 0
    while done < n_boot:
        size = min(block, n_boot - done)
        draws = rng.integers(0, n_units, size=(size, n_units))
        # Offsetting each resample's draws lets one bincount count all of them at once.
        flat = (draws + n_units * np.arange(size)[:, None]).ravel()
        counts = np.bincount(flat, minlength=size * n_units).reshape(size, n_units)
        counts = counts.astype(np.float64)
        yield counts if codes is None else counts[:, codes]
        done += size


def bootstrap(
    statistic: Statistic,
    n: int,
    *,
    seed: int,
    n_boot: int,
    groups: np.ndarray | None = None,
    debiased: Collection[str] = (),
) -> dict[str, dict[str, Any]]:
    """``{name: {"value": point, "ci": [low, high] | None}}`` for every statistic returned.

    BCa interval at ``CI_LEVEL``, its acceleration from a jackknife over the resampling units
    (patients, or groups of linked patients). Statistics named in ``debiased`` (values in
    [0, 1] that resampling biases upwards: ECE) are reported bias-corrected with the basic
    interval, the plug-in value kept under ``"plugin"``. Resamples where a statistic is
    undefined (e.g. PPV when nobody is called positive) are left out of its interval. Where no
    interval can be reported, ``ci`` is ``None`` and ``ci_note`` says why; with ``n_boot=0``
    none was asked for and there is no note. See ``deeppcos.stats.bootstrap_interval``.
    """
    point = statistic(np.ones((1, n)))
    if n_boot <= 0 or n == 0:
        return {k: _entry(Interval(v[0], None), v[0], k in debiased) for k, v in point.items()}
    rng = np.random.default_rng(seed)
    blocks = [statistic(w) for w in bootstrap_weights(n, n_boot, rng, groups)]
    codes, n_units = (None, n) if groups is None else group_codes(groups)
    jackknife = jackknife_weights(n_units, codes)
    step = max(1, _BLOCK_CELLS // n)
    jack_blocks = [statistic(jackknife[i : i + step]) for i in range(0, len(jackknife), step)]
    out = {}
    for name, value in point.items():
        draws = np.concatenate([b[name] for b in blocks])
        if name in debiased:
            interval = bootstrap_interval(value[0], draws, method="bias-corrected")
        else:
            jack = np.concatenate([b[name] for b in jack_blocks])
            interval = bootstrap_interval(value[0], draws, jack)
        out[name] = _entry(interval, value[0], name in debiased)
    return out


def _entry(interval: Interval, plugin: float, debiased: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"value": _finite(interval.value), "ci": interval.ci}
    if interval.note:
        out["ci_note"] = interval.note
    if debiased:
        out["plugin"] = _finite(plugin)
        out["value_method"] = "bias-corrected" if interval.bias_corrected else "plug-in"
        if interval.ci is not None:
            out["ci_method"] = "basic bootstrap"
    return out


def _finite(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def wilson_for_boundaries(
    scores: dict[str, dict[str, Any]], proportions: dict[str, tuple[int, int]]
) -> dict[str, dict[str, Any]]:
    """Replace a bootstrap interval that collapsed at 0 or 1 by the Wilson score interval.

    When every positive is found (sensitivity 21/21), every resample finds them all too and the
    bootstrap returns [1, 1] — false certainty. The Wilson interval on the counts (21/21:
    0.85–1.00) says honestly how little 21 patients pin down. Marked ``ci_method``. It also
    stands in where the bootstrap gave no interval (``ci_note``); not where none was asked for.
    """
    for name, (successes, total) in proportions.items():
        entry_ = scores.get(name)
        if entry_ is None or total == 0 or 0 < successes < total:
            continue
        if entry_["ci"] is None and "ci_note" not in entry_:
            continue  # n_boot = 0: no interval asked for
        entry_.pop("ci_note", None)
        entry_["ci"] = wilson_interval(successes, total)
        entry_["ci_method"] = "wilson"
    return scores


def wilson_interval(successes: int, total: int, level: float = CI_LEVEL) -> list[float]:
    z = NormalDist().inv_cdf(0.5 + level / 2)
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    half /= 1 + z * z / total
    # At 0/n and n/n the bound on that side is exactly 0 or 1; float error would leave 1e-17.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return [float(low), float(high)]


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise division with NaN (undefined) where the denominator is 0."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def calibration_bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1]: bin i holds [i/n, (i+1)/n); the last one also holds 1.0.

    ``floor(p * n)`` rather than ``np.digitize`` on ``linspace`` edges: the edges carry float
    error (0.30000000000000004), which would put p = 0.3 in the bin below.
    """
    return np.minimum(np.floor(p * n_bins).astype(int), n_bins - 1)


class BinaryScorer:
    """All binary metrics of P(label = 1) for a block of resample weights.

    Prepared once per data set (ranks, cells of the confusion matrix, calibration bins); each
    call is a handful of matrix products over the weights.
    """

    THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")

    def __init__(self, y: np.ndarray, p: np.ndarray, threshold: float, n_bins: int = 10) -> None:
        y = y.astype(np.float64)
        self.y, self.n_bins = y, n_bins
        self.order = np.argsort(p, kind="stable")
        sorted_p = p[self.order]
        # Start of each run of equal scores: ties share one ROC/PR step, as in scikit-learn.
        self.starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
        called = (p >= threshold).astype(np.float64)
        # Columns tp, fp, tn, fn: one product with the weights gives the four counts per resample.
        self.cells = np.column_stack(
            [y * called, (1 - y) * called, (1 - y) * (1 - called), y * (1 - called)]
        )
        onehot = np.eye(n_bins)[calibration_bin_index(p, n_bins)]
        self.calibration = np.hstack([onehot * y[:, None], onehot * p[:, None]])
        self.squared_error = (p - y) ** 2

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        out = self.ranking(weights)
        out.update(self.at_threshold(weights))
        total = weights.sum(axis=1)
        out["brier"] = weights @ self.squared_error / total
        sums = weights @ self.calibration
        observed, predicted = sums[:, : self.n_bins], sums[:, self.n_bins :]
        # sum_b (n_b / N) |mean_y_b - mean_p_b| = sum_b |sum_y_b - sum_p_b| / N
        out["ece"] = np.abs(observed - predicted).sum(axis=1) / total
        return out

    def proportions(self) -> dict[str, tuple[int, int]]:
        """(successes, total) behind each threshold metric on the data as given."""
        tp, fp, tn, fn = (round(float(c)) for c in self.cells.sum(axis=0))
        return {
            "accuracy": (tp + tn, tp + fp + tn + fn),
            "sensitivity": (tp, tp + fn),
            "specificity": (tn, tn + fp),
            "ppv": (tp, tp + fp),
            "npv": (tn, tn + fn),
        }

    def ranking(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """ROC AUC (ties count half) and average precision (scikit-learn's step-wise PR AUC)."""
        pos = np.add.reduceat((weights * self.y)[:, self.order], self.starts, axis=1)
        neg = np.add.reduceat((weights * (1 - self.y))[:, self.order], self.starts, axis=1)
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        below = np.cumsum(neg, axis=1) - neg
        auc = ratio((pos * (below + 0.5 * neg)).sum(axis=1), n_pos * n_neg)
        # Average precision: walk thresholds from the highest score down; each step adds its
        # share of recall times the precision at that step.
        pos_desc, neg_desc = pos[:, ::-1], neg[:, ::-1]
        tp, fp = np.cumsum(pos_desc, axis=1), np.cumsum(neg_desc, axis=1)
        precision = np.nan_to_num(ratio(tp, tp + fp))
        ap = ratio((pos_desc * precision).sum(axis=1), n_pos)
        return {"roc_auc": auc, "pr_auc": ap}

    def at_threshold(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        tp, fp, tn, fn = (weights @ self.cells).T
        return {
            "accuracy": ratio(tp + tn, tp + fp + tn + fn),
            "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp),
            "npv": ratio(tn, tn + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
        }


class OrdinalScorer:
    """Quadratic weighted kappa and macro F1 from the weighted confusion matrix per resample."""

    def __init__(self, true: np.ndarray, predicted: np.ndarray, n_levels: int) -> None:
        self.k = n_levels
        self.pairs = np.eye(n_levels * n_levels)[true * n_levels + predicted]
        level = np.arange(n_levels)
        # Same weights as scikit-learn's cohen_kappa_score(weights="quadratic"); its scale cancels.
        self.penalty = (level[:, None] - level[None, :]) ** 2.0

    def confusion(self, weights: np.ndarray) -> np.ndarray:
        return (weights @ self.pairs).reshape(-1, self.k, self.k)

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        matrix = self.confusion(weights)
        rows, cols = matrix.sum(axis=2), matrix.sum(axis=1)
        total = rows.sum(axis=1)
        expected = ratio(rows[:, :, None] * cols[:, None, :], total[:, None, None])
        observed_cost = (self.penalty * matrix).sum(axis=(1, 2))
        expected_cost = (self.penalty * expected).sum(axis=(1, 2))
        kappa = 1 - ratio(observed_cost, expected_cost)
        diagonal = matrix[:, np.arange(self.k), np.arange(self.k)]
        # Per-level F1 = 2 TP / (true + predicted); a level absent from both truth and prediction
        # is undefined and left out of the mean (scikit-learn's default label set does the same).
        per_level = ratio(2 * diagonal, rows + cols)
        counted = np.isfinite(per_level).sum(axis=1)
        macro = ratio(np.nansum(per_level, axis=1), counted.astype(np.float64))
        return {"quadratic_kappa": kappa, "macro_f1": macro}


def clean_binary(
    y: Any, p: Any, *, probabilities: bool, groups: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (int) and probabilities without missing rows, and the mask of rows kept."""
    y_arr, p_arr = as_float(y), as_float(p)
    if y_arr.shape != p_arr.shape:
        raise ValueError(
            f"labels and probabilities must have one length; got {len(y_arr)} and {len(p_arr)}"
        )
    if groups is not None and len(groups) != len(y_arr):
        raise ValueError(f"groups has {len(groups)} values for {len(y_arr)} rows")
    keep = ~(np.isnan(y_arr) | np.isnan(p_arr))
    if not keep.any():
        raise ValueError(
            f"no row has both a label and a probability ({len(keep)} rows received); "
            "metrics need at least one"
        )
    y_arr, p_arr = y_arr[keep], p_arr[keep]
    if not np.isin(y_arr, (0, 1)).all():
        found = sorted(set(y_arr.tolist()) - {0.0, 1.0})[:5]
        raise ValueError(f"labels must be 0/1 (or missing); found {found}")
    if probabilities and len(p_arr) and (p_arr.min() < 0 or p_arr.max() > 1):
        raise ValueError(
            f"probabilities must lie in [0, 1]; found {p_arr.min():.4g} to {p_arr.max():.4g}. "
            "Pass calibrated probabilities, not logits or raw scores."
        )
    return y_arr.astype(int), p_arr, keep


def as_float(values: Any) -> np.ndarray:
    """1-D float array with NaN for missing; accepts lists, arrays and (nullable) pandas Series."""
    series = pd.to_numeric(pd.Series(values), errors="raise")
    return series.to_numpy(dtype=float, na_value=np.nan)
