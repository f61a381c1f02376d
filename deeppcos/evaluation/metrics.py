"""Metrics with patient-level bootstrap confidence intervals.

Every score is computed on one prediction per patient, so resampling rows resamples patients
(pass ``groups`` to resample linked patients together). Intervals are 95% BCa bootstrap
intervals (bias-corrected and accelerated, the acceleration from a jackknife over the same
patients or groups), which follow a statistic whose resamples are shifted or skewed, unlike the
percentile interval; resamples are drawn, and intervals made, by the statistics core
``deeppcos.stats`` shared with the audit and the tuning. The point estimate is the metric on the
data as given, not the bootstrap mean — except ECE, see below. An interval that would not
contain its estimate is never reported: the entry's ``ci`` is ``None`` and ``ci_note`` says why
(likewise when too few resamples define the metric).

Decision rule everywhere: a patient is called positive when ``p >= threshold``.

Stable keys (scripts read them from ``metrics.json``):

``binary_metrics(y, p)`` (used by training for the out-of-fold summary)
    ``n``, ``positives``, ``roc_auc``, ``roc_auc_ci`` ([low, high] or ``None``), ``pr_auc``,
    ``brier``, ``log_loss``; ``note`` when only one class is present; ``roc_auc_ci_note`` when
    ``roc_auc_ci`` is ``None`` for another reason than that or ``n_boot == 0``.

``classification_metrics(y, p, threshold)``
    One entry per metric in ``METRICS`` — ``roc_auc``, ``pr_auc`` (average precision),
    ``accuracy``, ``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``f1``, ``brier``, ``ece`` —
    each ``{"value": float | None, "ci": [low, high] | None}``; ``None`` where undefined (e.g.
    sensitivity without positives) or, for ``ci``, when ``n_boot == 0``; ``ci_note`` (reason in
    words) where a bootstrap was run but no interval is reported. A proportion at exactly
    0 or 1 (e.g. every positive found) gets the Wilson score interval instead of the collapsed
    bootstrap one, and its entry says so: ``"ci_method": "wilson"``. ``ece`` also carries
    ``plugin`` (the ECE of the data as given), ``value_method`` (``"bias-corrected"``, or
    ``"plug-in"`` without resamples) and ``"ci_method": "basic bootstrap"``. Plus ``threshold``,
    ``n``, ``positives``, ``tp``, ``fp``, ``tn``, ``fn`` (counts at the threshold), ``excluded``
    (rows dropped for a missing label or probability), ``ece_bins`` (10), ``bootstrap``
    (``{"n_boot", "seed", "level", "unit", "method"}``) and ``note`` when only one class is
    present.

``ordinal_metrics(true_grades, predicted_grades, n_levels)``
    ``quadratic_kappa`` and ``macro_f1`` as ``{"value", "ci"}``; ``confusion`` (list of rows:
    true grade, columns: predicted grade), ``labels``, ``n``, ``n_levels``, ``excluded``,
    ``bootstrap``.

``subgroup_metrics(...)`` returns a DataFrame; its columns are listed in
``deeppcos.evaluation.subgroups``.

ECE (expected calibration error) uses 10 equal-width bins of the predicted probability —
[0, 0.1), [0.1, 0.2), …, [0.9, 1.0] — and is ``sum_b (n_b / N) * |observed rate_b - mean p_b|``.
It is biased upwards on small samples (even a perfectly calibrated model shows a positive ECE from
sampling noise alone), and a resample, drawn from the data, is noisier still: its percentile
interval can lie wholly above the estimate. So ``ece`` reports the bootstrap bias-corrected value
``max(0, 2·plugin − mean of the resamples)`` with the basic bootstrap interval
``[2·plugin − q97.5, 2·plugin − q2.5]`` clipped to [0, 1]. Read it together with the reliability
diagram and its bin counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.evaluation._resample import (
    BinaryScorer,
    OrdinalScorer,
    calibration_bin_index,
    clean_binary,
    wilson_for_boundaries,
)
from deeppcos.evaluation.subgroups import age_band, bmi_band, subgroup_metrics
from deeppcos.stats import CI_LEVEL, bootstrap, bootstrap_auc_interval

__all__ = [
    "METRICS",
    "N_BOOTSTRAP",
    "POINT_METRICS",
    "age_band",
    "binary_confusion_matrix",
    "binary_metrics",
    "bmi_band",
    "calibration_table",
    "classification_metrics",
    "ordinal_metrics",
    "point_metrics",
    "subgroup_metrics",
    "threshold_for_sensitivity",
]

N_BOOTSTRAP = 1000
BINARY_CI_METHOD = "BCa; ECE: bias-corrected with the basic interval; Wilson at 0 or 1"
ECE_BINS = 10
METRICS = (
    "roc_auc",
    "pr_auc",
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "brier",
    "ece",
)
# Threshold-free metrics with a point value from ``point_metrics`` (the tuning scores with these).
POINT_METRICS = ("roc_auc", "pr_auc", "brier", "ece", "log_loss")


def binary_metrics(
    y_true: np.ndarray | Any,
    probability: np.ndarray | Any,
    *,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
) -> dict[str, Any]:
    """Discrimination and calibration of P(label = 1); rows with a missing value are left out."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(probability, dtype=float)
    keep = ~(np.isnan(y) | np.isnan(p))
    y, p = y[keep].astype(int), p[keep]
    out: dict[str, Any] = {"n": len(y), "positives": int(y.sum())}
    if len(np.unique(y)) < 2:
        out.update(
            {
                "roc_auc": None,
                "roc_auc_ci": None,
                "pr_auc": None,
                "brier": None,
                "log_loss": None,
                "note": "needs both classes",
            }
        )
        return out
    # n_boot=0 (per-fold figures) asks for no interval: None, not [NaN, NaN], keeps JSON valid.
    ci, ci_note = None, {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        interval = bootstrap_auc_interval(y, p, None, rng, n_boot)
        ci = None if interval.ci is None else [round(c, 4) for c in interval.ci]
        ci_note = {"roc_auc_ci_note": interval.note} if interval.note else {}
    point = point_metrics(y, p, ("roc_auc", "pr_auc", "brier", "log_loss"))
    out.update(
        {
            "roc_auc": round(point["roc_auc"], 4),
            "roc_auc_ci": ci,
            **ci_note,
            "pr_auc": round(point["pr_auc"], 4),
            "brier": round(point["brier"], 4),
            "log_loss": round(point["log_loss"], 4),
        }
    )
    return out


def point_metrics(
    y: np.ndarray | Any, p: np.ndarray | Any, names: Sequence[str] = POINT_METRICS
) -> dict[str, float]:
    """Values of the threshold-free metrics ``names`` (of ``POINT_METRICS``) on the data as given.

    The same computation as the ``value`` of ``classification_metrics`` (ECE: its plug-in value,
    ``ece_bins`` bins) and ``binary_metrics`` (log loss: probabilities clipped to
    [1e-7, 1 − 1e-7]); NaN where undefined (an AUC without both classes, anything on no rows).
    No interval: the tuning scores its folds with these. Labels 0/1 and probabilities in [0, 1]
    without missing values.
    """
    unknown = sorted(set(names) - set(POINT_METRICS))
    if unknown:
        raise ValueError(f"point_metrics: unknown metric(s) {unknown}; choose from {POINT_METRICS}")
    y = np.asarray(y, dtype=np.float64)
    scorer = BinaryScorer(y, np.asarray(p, dtype=np.float64), n_bins=ECE_BINS)
    ones = np.ones((1, len(y)))
    values: dict[str, np.ndarray] = {}
    if {"roc_auc", "pr_auc"} & set(names):
        values.update(scorer.ranking(ones))
    if {"brier", "ece"} & set(names):
        values.update(scorer.calibration(ones))
    if "log_loss" in names:
        values["log_loss"] = scorer.log_loss(ones)
    return {name: float(values[name][0]) for name in names}


# --- choosing and applying a threshold ------------------------------------------------------


def threshold_for_sensitivity(y: Any, p: Any, target: float = 0.95) -> float:
    """The highest threshold whose sensitivity on ``(y, p)`` is at least ``target``.

    Meant for out-of-fold predictions: choose the operating point there, then report it on data
    that did not choose it (on the data it was chosen on the sensitivity is at least ``target``
    by construction, so it is optimistic there).

    The answer is always one of the positives' scores: sensitivity only changes at those, and
    the highest qualifying threshold is the one that calls the fewest negatives positive, i.e.
    the best specificity for the required sensitivity. Ties: with the rule ``p >= threshold``
    every patient scoring exactly the threshold is called positive — all tied positives count
    (so the sensitivity reached may exceed the target) and so do tied negatives. Rows with a
    missing label or score are left out.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1]; received {target!r}")
    y, p, _ = clean_binary(y, p, probabilities=False)
    positives = np.sort(p[y == 1])[::-1]
    if not len(positives):
        raise ValueError("threshold_for_sensitivity needs at least one positive; received none")
    # The tolerance keeps float products such as 0.95 * 100 = 95.00000000000001 from asking
    # for one positive too many.
    needed = max(1, math.ceil(target * len(positives) - 1e-9))
    return float(positives[needed - 1])


def classification_metrics(
    y: Any,
    p: Any,
    threshold: float,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
    *,
    groups: Any = None,
) -> dict[str, Any]:
    """Every binary metric of ``METRICS`` with a 95% patient bootstrap interval.

    Keys are documented in the module docstring. ``groups`` (one value per row, optional)
    resamples linked patients together. Probabilities must lie in [0, 1] (Brier and ECE are
    meaningless otherwise); rows with a missing label or probability are left out and counted
    in ``excluded``.
    """
    y_arr, p_arr, keep = clean_binary(y, p, probabilities=True, groups=groups)
    group_arr = None if groups is None else np.asarray(groups, dtype=object)[keep]
    scorer = BinaryScorer(y_arr, p_arr, float(threshold), ECE_BINS)
    scores = bootstrap(
        scorer, len(y_arr), seed=seed, n_boot=n_boot, groups=group_arr, debiased=("ece",)
    )
    scores = wilson_for_boundaries(scores, scorer.proportions())
    tp, fp, tn, fn = (round(float(c)) for c in scorer.cells.sum(axis=0))
    out: dict[str, Any] = {name: scores[name] for name in METRICS}
    out.update(
        threshold=float(threshold),
        n=len(y_arr),
        positives=int(y_arr.sum()),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        excluded=int((~keep).sum()),
        ece_bins=ECE_BINS,
        bootstrap=_bootstrap_info(n_boot, seed, groups, BINARY_CI_METHOD),
    )
    if len(np.unique(y_arr)) < 2:
        out["note"] = "needs both classes: AUCs and sensitivity or specificity are undefined"
    return out


def binary_confusion_matrix(metrics: dict[str, Any]) -> np.ndarray:
    """``[[tn, fp], [fn, tp]]`` from classification_metrics (rows: true 0/1; columns: called)."""
    return np.array([[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]])


def calibration_table(y: Any, p: Any, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Per equal-width bin: ``lower``, ``upper``, ``n``, ``mean_predicted``, ``observed_rate``.

    The bins behind ``ece`` and the reliability diagram; empty bins have n = 0 and NaN means.
    """
    y_arr, p_arr, _ = clean_binary(y, p, probabilities=True)
    index = calibration_bin_index(p_arr, n_bins)
    n = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p_arr, minlength=n_bins) / n
        rate = np.bincount(index, weights=y_arr, minlength=n_bins) / n
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame(
        {
            "lower": edges[:-1],
            "upper": edges[1:],
            "n": n,
            "mean_predicted": mean_p,
            "observed_rate": rate,
        }
    )


# --- ordinal severity -----------------------------------------------------------------------


def ordinal_metrics(
    y_true_grades: Any,
    y_pred_grades: Any,
    n_levels: int,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
    *,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Quadratic weighted kappa and macro F1 of ordered grades, with bootstrap intervals.

    Grades are integer codes ``0 .. n_levels - 1`` or pandas ordered categoricals (their codes
    are used, and their categories become ``labels``). A row with either grade missing is left
    out. Kappa weights a disagreement by the squared distance between grades, so calling a
    ``severe`` case ``none`` costs more than calling it ``moderate``; ``labels`` name the levels
    in ``confusion``.
    """
    true, true_names = _grade_codes(y_true_grades, n_levels, "y_true_grades")
    predicted, pred_names = _grade_codes(y_pred_grades, n_levels, "y_pred_grades")
    if len(true) != len(predicted):
        raise ValueError(f"grades differ in length: {len(true)} true vs {len(predicted)} predicted")
    keep = ~(np.isnan(true) | np.isnan(predicted))
    true, predicted = true[keep].astype(int), predicted[keep].astype(int)
    scorer = OrdinalScorer(true, predicted, n_levels)
    scores = bootstrap(scorer, len(true), seed=seed, n_boot=n_boot)
    confusion = scorer.confusion(np.ones((1, len(true))))[0].astype(int)
    names = list(labels or true_names or pred_names or [str(i) for i in range(n_levels)])
    if len(names) != n_levels:
        raise ValueError(f"labels name {len(names)} levels; n_levels is {n_levels}")
    return {
        **scores,
        "confusion": confusion.tolist(),
        "labels": names,
        "n": len(true),
        "n_levels": n_levels,
        "excluded": int((~keep).sum()),
        "bootstrap": _bootstrap_info(n_boot, seed, None, "BCa"),
    }


# --- helpers --------------------------------------------------------------------------------


def _grade_codes(values: Any, n_levels: int, name: str) -> tuple[np.ndarray, list[str] | None]:
    """Float codes (NaN = missing) and category names when ``values`` is categorical."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(series.dtype, pd.CategoricalDtype):
        if len(series.cat.categories) != n_levels:
            raise ValueError(
                f"{name} has {len(series.cat.categories)} categories "
                f"{list(series.cat.categories)}; n_levels is {n_levels}"
            )
        codes = series.cat.codes.to_numpy().astype(float)
        codes[codes < 0] = np.nan
        return codes, [str(c) for c in series.cat.categories]
    codes = pd.to_numeric(series, errors="raise").to_numpy(dtype=float)
    present = codes[~np.isnan(codes)]
    bad = present[(present != np.round(present)) | (present < 0) | (present >= n_levels)]
    if len(bad):
        raise ValueError(
            f"{name} must be integer grades 0..{n_levels - 1} or missing; found {bad[:5].tolist()}"
        )
    return codes, None


def _bootstrap_info(n_boot: int, seed: int, groups: Any, method: str) -> dict[str, Any]:
    return {
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": CI_LEVEL,
        "unit": "patient" if groups is None else "group of linked patients",
        "method": method,
    }
