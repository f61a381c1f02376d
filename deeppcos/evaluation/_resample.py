"""The evaluation's metrics as statistics of resample weights, and their input checks.

Resampling itself lives in the statistics core, ``deeppcos.stats`` (one way to draw patient or
group resamples as weights, one way to turn draws into an interval): the scorers here are what
it resamples. Each scorer is prepared once per data set and scores a block of resample weights
(rows: resamples, columns: patients) with a handful of matrix products, so 1000 resamples of
600 patients take a few tens of milliseconds; the point estimate is the same code with all
weights 1, and the jackknife behind the BCa acceleration the same code again.

``bootstrap`` and ``bootstrap_weights`` are re-exported from ``deeppcos.stats`` for older
imports; there is no second implementation here.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.stats import CI_LEVEL, RankedScores, ratio
from deeppcos.stats import bootstrap as bootstrap
from deeppcos.stats import bootstrap_weights as bootstrap_weights


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


def calibration_bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1]: bin i holds [i/n, (i+1)/n); the last one also holds 1.0.

    ``floor(p * n)`` rather than ``np.digitize`` on ``linspace`` edges: the edges carry float
    error (0.30000000000000004), which would put p = 0.3 in the bin below.
    """
    return np.minimum(np.floor(p * n_bins).astype(int), n_bins - 1)


class BinaryScorer:
    """All binary metrics of P(label = 1) for a block of resample weights.

    Prepared once per data set (ranks, cells of the confusion matrix, calibration bins); each
    call is a handful of matrix products over the weights. ``threshold`` only matters for the
    threshold metrics.
    """

    THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")

    def __init__(
        self, y: np.ndarray, p: np.ndarray, threshold: float = 0.5, n_bins: int = 10
    ) -> None:
        y = np.asarray(y, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        self.y, self.n_bins = y, n_bins
        self.ranked = RankedScores(y, p)
        called = (p >= threshold).astype(np.float64)
        # Columns tp, fp, tn, fn: one product with the weights gives the four counts per resample.
        self.cells = np.column_stack(
            [y * called, (1 - y) * called, (1 - y) * (1 - called), y * (1 - called)]
        )
        onehot = np.eye(n_bins)[calibration_bin_index(p, n_bins)]
        self.calibration_sums = np.hstack([onehot * y[:, None], onehot * p[:, None]])
        self.squared_error = (p - y) ** 2
        clipped = np.clip(p, 1e-7, 1 - 1e-7)
        self.log_losses = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        out = self.ranking(weights)
        out.update(self.at_threshold(weights))
        out.update(self.calibration(weights))
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
        return self.ranked.ranking(weights)

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

    def calibration(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Brier score and ECE (equal-width bins; see ``deeppcos.evaluation.metrics``)."""
        total = weights.sum(axis=1)
        sums = weights @ self.calibration_sums
        observed, predicted = sums[:, : self.n_bins], sums[:, self.n_bins :]
        # sum_b (n_b / N) |mean_y_b - mean_p_b| = sum_b |sum_y_b - sum_p_b| / N
        return {
            "brier": ratio(weights @ self.squared_error, total),
            "ece": ratio(np.abs(observed - predicted).sum(axis=1), total),
        }

    def log_loss(self, weights: np.ndarray) -> np.ndarray:
        """Mean negative log likelihood, probabilities clipped to [1e-7, 1 - 1e-7]."""
        return ratio(weights @ self.log_losses, weights.sum(axis=1))


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
