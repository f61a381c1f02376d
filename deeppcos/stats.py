"""The statistics core shared by the audit, the evaluation and the tuning.

One way to draw resamples and one way to turn them into a reported interval:

- ``bootstrap_weights`` draws every bootstrap resample, of patients or of groups of linked
  patients, as a *weight* per row (how many times that row was drawn), in blocks: any statistic
  written as weighted sums scores a whole block of resamples with a few matrix products.
- ``bootstrap_draws`` / ``bootstrap_intervals`` / ``bootstrap`` run a statistic of such weights
  on the data as given (all weights 1: point value and interval can never drift apart), on the
  resamples, and on the jackknife behind the BCa acceleration (one unit's weights set to 0).
- ``bootstrap_interval`` turns an estimate and its draws into the reported interval.

Intervals are BCa (bias-corrected and accelerated; Efron 1987, J. Am. Stat. Assoc. 82:171–185):
unlike the percentile interval they follow a statistic whose resamples are shifted or skewed
relative to its estimate. A statistic that resampling biases upwards by construction (ECE) is
reported bias-corrected instead, with the basic bootstrap interval. Whatever the method, an
interval that would not contain the reported value is not reported: ``ci`` is ``None`` and
``note`` says why.

Also here: ROC AUC with ties counted half (``RankedScores``, ``weighted_auc``), scored the same
way on one data set or on a block of resamples, and the AUC intervals built on it.

Kept free of any model code so that both ``deeppcos.data`` and ``deeppcos.evaluation`` can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from statistics import NormalDist
from typing import Any, Literal, NamedTuple

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
# Cells of one weight block (~32 MB as float64): bounds memory on large cohorts while keeping
# blocks big enough that the per-block overhead is negligible at the usual 1000 x few hundred.
_BLOCK_CELLS = 4_000_000

IntervalMethod = Literal["bca", "bias-corrected"]
# A statistic of resample weights: (resamples, rows) -> {name: one value per resample}.
Statistic = Callable[[np.ndarray], dict[str, np.ndarray]]
Seed = int | np.random.Generator


class Interval(NamedTuple):
    """A reported value and its interval; ``ci`` is ``None`` with the reason in ``note``."""

    value: float
    ci: list[float] | None
    note: str | None = None
    bias_corrected: bool = False  # value is 2·estimate − mean(draws), not the estimate


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise division with NaN (undefined) where the denominator is 0."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


# --- ROC AUC, on the data or on a block of resamples --------------------------------------------


class RankedScores:
    """Labels and scores sorted once, tied scores grouped: ranking statistics of weight blocks.

    ``counts(weights)`` gives, per resample, the weighted positives and negatives at each
    distinct score (ascending); ties share one ROC/PR step, as in scikit-learn.
    """

    def __init__(self, y: np.ndarray, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        self.order = np.argsort(scores, kind="stable")
        ranked = scores[self.order]
        tied = (ranked[1:] == ranked[:-1]) | (np.isnan(ranked[1:]) & np.isnan(ranked[:-1]))
        self.starts = np.flatnonzero(np.r_[True, ~tied]) if len(ranked) else np.zeros(0, int)
        self.has_ties = len(self.starts) < len(ranked)
        self.y = np.asarray(y, dtype=np.float64)[self.order]

    def counts(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ordered = weights[:, self.order]
        pos = ordered * self.y
        neg = np.subtract(ordered, pos, out=ordered)
        if self.has_ties:
            pos = np.add.reduceat(pos, self.starts, axis=1)
            neg = np.add.reduceat(neg, self.starts, axis=1)
        return pos, neg

    def auc(self, weights: np.ndarray) -> np.ndarray:
        """ROC AUC per resample (ties count half); NaN where a class is absent."""
        return self.ranking(weights, precision=False)["roc_auc"]

    def ranking(self, weights: np.ndarray, *, precision: bool = True) -> dict[str, np.ndarray]:
        """``roc_auc`` and, with ``precision``, ``pr_auc`` (scikit-learn's average precision).

        Written in place on a few (resamples x scores) arrays: this is the bootstrap's hot loop.
        """
        pos, neg = self.counts(weights)
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        # Negatives scoring below each score; a tied negative counts half.
        below = np.cumsum(neg, axis=1)
        below -= neg
        wins = _rowwise_dot(pos, below) + 0.5 * _rowwise_dot(pos, neg)
        out = {"roc_auc": ratio(wins, n_pos * n_neg)}
        if precision:
            # Walking thresholds from the highest score down, each step adds its share of recall
            # times the precision there; at a score, tp and fp count every row at or above it.
            fp = np.subtract(n_neg[:, None], below, out=below)
            tp = np.cumsum(pos, axis=1)
            tp -= pos
            np.subtract(n_pos[:, None], tp, out=tp)
            called = np.add(fp, tp, out=fp)
            # tp / called; where nothing is called tp is 0 too, and stays as the precision.
            step_precision = np.divide(tp, called, out=tp, where=called > 0)
            out["pr_auc"] = ratio(_rowwise_dot(pos, step_precision), n_pos)
        return out


def _rowwise_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def weighted_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC AUC with ties counted half; ``weights`` (bootstrap counts) repeat samples."""
    y = np.asarray(y, dtype=np.float64)
    weights = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(RankedScores(y, scores).auc(weights[None, :])[0])


# --- drawing resamples ------------------------------------------------------------------------


def group_codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's resampling unit as a code 0..k-1, and k."""
    codes, uniques = pd.factorize(pd.Series(groups))
    return codes, len(uniques)


def bootstrap_weights(
    n: int, n_boot: int, rng: Seed, groups: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Blocks of resample weights, shape (block, n): draw patients (or groups) with replacement.

    The one place resamples are drawn. With ``groups`` (e.g. patients linked by duplicate
    images) whole groups are drawn and every row of a drawn group gets that group's count, so
    linked rows stay together. Each block is one ``rng.integers(0, units, (block, units))``
    call: resample ``b`` of a block is row ``b`` of those draws, counted.
    """
    rng = np.random.default_rng(rng)
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


# --- from a statistic of weights to intervals ----------------------------------------------------


class Draws(NamedTuple):
    """A statistic on the data as given, on each resample, and on each jackknife deletion."""

    estimate: dict[str, float]
    draws: dict[str, np.ndarray]  # empty when no resample was asked for
    jackknife: dict[str, np.ndarray]

    def interval(self, name: str, *, debiased: bool = False) -> Interval:
        estimate = self.estimate[name]
        if not len(self.draws[name]):
            return Interval(estimate, None)  # none asked for: no interval, and no note
        if debiased:
            return bootstrap_interval(estimate, self.draws[name], method="bias-corrected")
        return bootstrap_interval(estimate, self.draws[name], self.jackknife[name])


def bootstrap_draws(
    statistic: Statistic,
    n: int,
    *,
    seed: Seed,
    n_boot: int,
    groups: np.ndarray | None = None,
) -> Draws:
    """``statistic`` on the data (weights 1), on ``n_boot`` resamples and on the jackknife.

    Resamples come from ``bootstrap_weights`` (seeded by ``seed``: an int, or a generator the
    draws continue), the jackknife from ``jackknife_weights`` over the same units (patients,
    or groups of linked patients); both are scored in blocks that bound memory.
    """
    point = statistic(np.ones((1, n)))
    estimate = {name: float(values[0]) for name, values in point.items()}
    if n_boot <= 0 or n == 0:
        empty = {name: np.zeros(0) for name in point}
        return Draws(estimate, empty, dict(empty))
    blocks = [statistic(w) for w in bootstrap_weights(n, n_boot, seed, groups)]
    codes, n_units = (None, n) if groups is None else group_codes(groups)
    jackknife = jackknife_weights(n_units, codes)
    step = max(1, _BLOCK_CELLS // n)
    jack_blocks = [statistic(jackknife[i : i + step]) for i in range(0, len(jackknife), step)]
    return Draws(
        estimate,
        {name: np.concatenate([b[name] for b in blocks]) for name in point},
        {name: np.concatenate([b[name] for b in jack_blocks]) for name in point},
    )


def bootstrap_intervals(
    statistic: Statistic,
    n: int,
    *,
    seed: Seed,
    n_boot: int,
    groups: np.ndarray | None = None,
    debiased: Collection[str] = (),
) -> dict[str, Interval]:
    """The ``Interval`` of every statistic returned (see ``bootstrap``)."""
    resampled = bootstrap_draws(statistic, n, seed=seed, n_boot=n_boot, groups=groups)
    return {name: resampled.interval(name, debiased=name in debiased) for name in resampled.draws}


def bootstrap(
    statistic: Statistic,
    n: int,
    *,
    seed: Seed,
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
    none was asked for and there is no note. Values undefined on the data are ``None``.
    """
    resampled = bootstrap_draws(statistic, n, seed=seed, n_boot=n_boot, groups=groups)
    out = {}
    for name, plugin in resampled.estimate.items():
        interval = resampled.interval(name, debiased=name in debiased)
        out[name] = _entry(interval, plugin, name in debiased)
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


# --- AUC intervals ----------------------------------------------------------------------------


def bootstrap_auc_interval(
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None,
    rng: Seed,
    n_boot: int = 200,
) -> Interval:
    """AUC with its 95% BCa interval, resampling whole patient groups with replacement."""
    ranked = RankedScores(y, scores)

    def statistic(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"roc_auc": ranked.auc(weights)}

    n = len(ranked.y)
    return bootstrap_intervals(statistic, n, seed=rng, n_boot=n_boot, groups=groups)["roc_auc"]


def bootstrap_auc_ci(
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None,
    rng: Seed,
    n_boot: int = 200,
) -> tuple[float, float]:
    """95% BCa interval of the AUC, resampling whole patient groups with replacement.

    ``(nan, nan)`` where no interval is reported; ``bootstrap_auc_interval`` gives the reason.
    """
    ci = bootstrap_auc_interval(y, scores, groups, rng, n_boot).ci
    return (float("nan"), float("nan")) if ci is None else (ci[0], ci[1])


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
    ranked_a, ranked_b = RankedScores(y, a), RankedScores(y, b)

    def difference(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"difference": ranked_a.auc(weights) - ranked_b.auc(weights)}

    interval = bootstrap_intervals(difference, len(y), seed=seed, n_boot=n_boot)["difference"]
    out: dict[str, float | list[float] | int | str | None] = {
        "difference": round(interval.value, 4),
        "ci": None if interval.ci is None else [round(c, 4) for c in interval.ci],
        "n": int(keep.sum()),
        "n_boot": n_boot,
    }
    if interval.note:
        out["ci_note"] = interval.note
    return out
