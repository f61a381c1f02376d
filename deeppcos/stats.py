"""Small statistics shared by the audit and the evaluation: ROC AUC with ties counted half and
a bootstrap interval that resamples whole patients (or groups of linked patients).

Kept free of any model code so that both ``deeppcos.data`` and ``deeppcos.evaluation`` can use it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def weighted_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC AUC with ties counted half; ``weights`` (bootstrap counts) repeat samples."""
    y = np.asarray(y, dtype=np.float64)
    weights = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    _, inverse = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    return _auc_from_ranks(inverse, y, weights)


def _auc_from_ranks(inverse: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    pos = np.bincount(inverse, weights=weights * y)
    neg = np.bincount(inverse, weights=weights * (1.0 - y))
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


def bootstrap_auc_ci(
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 200,
) -> tuple[float, float]:
    """95% percentile interval, resampling whole patient groups with replacement."""
    codes, n_groups = group_codes(groups)
    _, inverse = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    y = np.asarray(y, dtype=np.float64)
    aucs = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        aucs.append(_auc_from_ranks(inverse, y, counts[codes].astype(np.float64)))
    values = np.array(aucs)
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def group_codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(pd.Series(groups))
    return codes, len(uniques)


def paired_auc_difference(
    y: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, float | list[float] | int]:
    """AUC(a) − AUC(b) on the same patients, with a paired percentile bootstrap 95% interval.

    Rows where either score is missing are left out (both models must score a patient for the
    comparison to be paired). The same resampled patients score both models in each replicate,
    so the interval is much narrower than the overlap of two separate intervals suggests.
    """
    y = np.asarray(y, dtype=np.float64)
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    keep = ~(np.isnan(y) | np.isnan(a) | np.isnan(b))
    y, a, b = y[keep], a[keep], b[keep]
    rank_a = np.unique(a, return_inverse=True)[1]
    rank_b = np.unique(b, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        weights = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype(float)
        diff = _auc_from_ranks(rank_a, y, weights) - _auc_from_ranks(rank_b, y, weights)
        if not np.isnan(diff):
            diffs.append(diff)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "difference": round(weighted_auc(y, a) - weighted_auc(y, b), 4),
        "ci": [round(float(low), 4), round(float(high), 4)],
        "n": int(keep.sum()),
        "n_boot": n_boot,
    }
