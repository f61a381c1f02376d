"""Small statistics shared by the audit, the evaluation and the tuning: ROC AUC with ties counted
half, bootstrap resampling of whole patients (or groups of linked patients), and the one function
that turns bootstrap draws into a reported interval, ``bootstrap_interval``.

Intervals are BCa (bias-corrected and accelerated; Efron 1987, J. Am. Stat. Assoc. 82:171–185):
unlike the percentile interval they follow a statistic whose resamples are shifted or skewed
relative to its estimate. A statistic that resampling biases upwards by construction (ECE) is
reported bias-corrected instead, with the basic bootstrap interval. Whatever the method, an
interval that would not contain the reported value is not reported: ``ci`` is ``None`` and
``note`` says why.

Kept free of any model code so that both ``deeppcos.data`` and ``deeppcos.evaluation`` can use it.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

CI_LEVEL = 0.95
# At most this many jackknife values behind a BCa acceleration (see jackknife_weights).
MAX_JACKKNIFE_BLOCKS = 200
# Resamples where a statistic is undefined (no positive drawn, nobody called positive) are left
# out of its interval; when most are, the rest are a biased selection and too few to place
# 2.5% tails, so no interval is given.
MIN_DEFINED_SHARE = 0.5
MIN_DEFINED_DRAWS = 10

IntervalMethod = Literal["bca", "bias-corrected"]


class Interval(NamedTuple):
    """A reported value and its interval; ``ci`` is ``None`` with the reason in ``note``."""

    value: float
    ci: list[float] | None
    note: str | None = None
    bias_corrected: bool = False  # value is 2·estimate − mean(draws), not the estimate


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


# --- from bootstrap draws to a reported interval ----------------------------------------------


def bootstrap_interval(
    estimate: float,
    draws: np.ndarray,
    jackknife: np.ndarray | None = None,
    *,
    method: IntervalMethod = "bca",
    bounds: tuple[float, float] = (0.0, 1.0),
    level: float = CI_LEVEL,
) -> Interval:
    """The reported value and its ``level`` interval, from the estimate and its bootstrap draws.

    ``method="bca"``: the estimate itself with its BCa interval; ``jackknife`` (the statistic
    with one unit, or one block of units, left out: ``jackknife_weights``) gives the
    acceleration, taken as 0 without it. ``method="bias-corrected"``, for a statistic that
    resampling biases (ECE): the value ``2·estimate − mean(draws)`` with the basic bootstrap
    interval ``[2·estimate − q_high, 2·estimate − q_low]``, all clipped to ``bounds``.

    NaN draws (resamples where the statistic is undefined) are left out. ``ci`` is ``None``, and
    ``note`` says why, when the estimate is undefined, too few resamples define the statistic,
    the BCa correction is infinite, or the interval would not contain the reported value.
    """
    estimate = float(estimate)
    draws = np.asarray(draws, dtype=np.float64)
    finite = draws[np.isfinite(draws)]
    if not np.isfinite(estimate):
        return Interval(estimate, None, "the estimate is undefined on these data")
    if len(finite) < max(MIN_DEFINED_DRAWS, MIN_DEFINED_SHARE * len(draws)):
        return Interval(
            estimate,
            None,
            f"only {len(finite)} of {len(draws)} resamples define it (e.g. the others drew no "
            "positive): too few for an interval",
        )
    tail = (1 - level) / 2
    if method == "bca":
        return _bca(estimate, finite, jackknife, tail)
    value = 2 * estimate - finite.mean()
    q_low, q_high = np.percentile(finite, [100 * tail, 100 * (1 - tail)])
    low, high = 2 * estimate - q_high, 2 * estimate - q_low
    clipped = float(np.clip(value, *bounds))
    if high < bounds[0] - _tolerance(bounds[0]):
        # Clipping would report [0, 0]: certainty the data do not give.
        return Interval(
            clipped,
            None,
            "resampling raises the statistic by more than its own estimate, so the "
            f"bias-corrected interval lies wholly below {bounds[0]:g}; no interval is reported",
            bias_corrected=True,
        )
    low, high = np.clip([low, high], *bounds).tolist()
    return _checked(clipped, low, high, finite, "basic bootstrap")._replace(bias_corrected=True)


def _bca(estimate: float, draws: np.ndarray, jackknife: np.ndarray | None, tail: float) -> Interval:
    tolerance = _tolerance(estimate)
    below = np.count_nonzero(draws < estimate - tolerance)
    tied = np.count_nonzero(np.abs(draws - estimate) <= tolerance)
    # Ties count half, so a statistic whose draws all equal the estimate gets z0 = 0.
    share = (below + 0.5 * tied) / len(draws)
    if share in (0.0, 1.0):
        side = "below" if share == 1.0 else "above"
        return Interval(
            estimate,
            None,
            f"every resample lies {side} the estimate, so the BCa bias correction is infinite; "
            "no interval is reported",
        )
    normal = NormalDist()
    z0 = normal.inv_cdf(share)
    a = 0.0 if jackknife is None else acceleration(jackknife)
    quantiles = []
    for z in (normal.inv_cdf(tail), normal.inv_cdf(1 - tail)):
        denominator = 1 - a * (z0 + z)
        if denominator <= 0:
            return Interval(
                estimate,
                None,
                f"the jackknife acceleration ({a:.3g}) is too large for a BCa interval; "
                "no interval is reported",
            )
        quantiles.append(100 * normal.cdf(z0 + (z0 + z) / denominator))
    low, high = np.percentile(draws, quantiles)
    return _checked(estimate, float(low), float(high), draws, "BCa")


def _checked(value: float, low: float, high: float, draws: np.ndarray, method: str) -> Interval:
    """The safety net: an interval that excludes its own estimate is not reported."""
    tolerance = _tolerance(value)
    if low - tolerance <= value <= high + tolerance:
        # Float noise between the point and the resampled computation is no disagreement.
        return Interval(value, [min(low, value), max(high, value)])
    above = np.mean(draws > value)
    return Interval(
        value,
        None,
        f"the {method} interval {low:.3g}–{high:.3g} would exclude the estimate {value:.3g}: the "
        f"bootstrap distribution is too lopsided around it ({above:.0%} of resamples lie above); "
        "no interval is reported",
    )


def _tolerance(value: float) -> float:
    return 1e-9 * max(1.0, abs(value))


def acceleration(jackknife: np.ndarray) -> float:
    """BCa acceleration ``a = Σd³ / (6 (Σd²)^1.5)`` from jackknife values, ``d = mean − θ₍ᵢ₎``.

    Efron & Tibshirani (1993), An Introduction to the Bootstrap, §14.3. Undefined jackknife
    values are left out; 0 when fewer than 3 remain or they do not vary.
    """
    values = np.asarray(jackknife, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 3 or np.ptp(values) <= _tolerance(float(values.mean())):
        return 0.0
    d = values.mean() - values
    return float((d**3).sum() / (6 * (d**2).sum() ** 1.5))


def jackknife_weights(n_units: int, codes: np.ndarray | None = None) -> np.ndarray:
    """Weight rows over the data rows: all ones with one unit (or one block of units) zeroed.

    ``codes`` maps each row to its resampling unit (a group of linked patients); without it each
    row is a unit. Up to ``MAX_JACKKNIFE_BLOCKS`` units this is the ordinary delete-one
    jackknife. Beyond, units are dealt at random (fixed seed) into that many blocks and one
    block is deleted at a time, bounding the cost on large cohorts. The acceleration keeps its
    expectation: deleting a block B of m of n units moves the statistic by
    d_B ≈ (1/n) Σ_{j∈B} U_j (U: influence values, mean 0), so E Σ_B d_B³ = (n/m)·m·μ₃/n³ and
    E Σ_B d_B² = (n/m)·m·μ₂/n², and m cancels from a = Σd³ / (6 (Σd²)^1.5) ≈ μ₃ / (6 √n μ₂^1.5),
    the delete-one value (to a ratio of expectations; Efron 1987 writes a in this influence
    form, one sixth of their skewness over √n).
    """
    n_rows = n_units if codes is None else len(codes)
    n_blocks = min(n_units, MAX_JACKKNIFE_BLOCKS)
    if n_blocks == n_units:
        block = np.arange(n_units)
    else:
        block = np.random.default_rng(0).permutation(n_units) % n_blocks
    row_block = block if codes is None else block[codes]
    weights = np.ones((n_blocks, n_rows))
    weights[row_block, np.arange(n_rows)] = 0.0
    return weights


# --- AUC intervals ----------------------------------------------------------------------------


def bootstrap_auc_interval(
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 200,
) -> Interval:
    """AUC with its 95% BCa interval, resampling whole patient groups with replacement."""
    codes, n_groups = group_codes(groups)
    _, inverse = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    y = np.asarray(y, dtype=np.float64)
    draws = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        draws.append(_auc_from_ranks(inverse, y, counts[codes].astype(np.float64)))
    jackknife = [_auc_from_ranks(inverse, y, w) for w in jackknife_weights(n_groups, codes)]
    estimate = _auc_from_ranks(inverse, y, np.ones(len(y)))
    return bootstrap_interval(estimate, np.array(draws), np.array(jackknife))


def bootstrap_auc_ci(
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 200,
) -> tuple[float, float]:
    """95% BCa interval of the AUC, resampling whole patient groups with replacement.

    ``(nan, nan)`` where no interval is reported; ``bootstrap_auc_interval`` gives the reason.
    """
    ci = bootstrap_auc_interval(y, scores, groups, rng, n_boot).ci
    return (float("nan"), float("nan")) if ci is None else (ci[0], ci[1])


def group_codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(pd.Series(groups))
    return codes, len(uniques)


def paired_auc_difference(
    y: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, float | list[float] | int | str | None]:
    """AUC(a) − AUC(b) on the same patients, with a paired BCa bootstrap 95% interval.

    Rows where either score is missing are left out (both models must score a patient for the
    comparison to be paired). The same resampled patients score both models in each replicate,
    so the interval is much narrower than the overlap of two separate intervals suggests.
    ``ci`` is ``None`` where no interval can be reported, with the reason in ``ci_note``.
    """
    y = np.asarray(y, dtype=np.float64)
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    keep = ~(np.isnan(y) | np.isnan(a) | np.isnan(b))
    y, a, b = y[keep], a[keep], b[keep]
    rank_a = np.unique(a, return_inverse=True)[1]
    rank_b = np.unique(b, return_inverse=True)[1]

    def difference(weights: np.ndarray) -> float:
        return _auc_from_ranks(rank_a, y, weights) - _auc_from_ranks(rank_b, y, weights)

    rng = np.random.default_rng(seed)
    draws = [
        difference(np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype(float))
        for _ in range(n_boot)
    ]
    jackknife = [difference(w) for w in jackknife_weights(len(y))]
    interval = bootstrap_interval(difference(np.ones(len(y))), np.array(draws), np.array(jackknife))
    out: dict[str, float | list[float] | int | str | None] = {
        "difference": round(interval.value, 4),
        "ci": None if interval.ci is None else [round(c, 4) for c in interval.ci],
        "n": int(keep.sum()),
        "n_boot": n_boot,
    }
    if interval.note:
        out["ci_note"] = interval.note
    return out
