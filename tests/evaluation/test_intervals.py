"""Every reported interval contains its estimate, or is absent with the reason in words (issue 15).

The property runs over many small and awkward data sets; the rest pins the methods: BCa against
scipy's, the acceleration's formula, the ECE regression the issue reported, and the safety net.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from deeppcos.evaluation._resample import BinaryScorer
from deeppcos.evaluation.metrics import (
    METRICS,
    binary_metrics,
    classification_metrics,
    ordinal_metrics,
    subgroup_metrics,
)
from deeppcos.evaluation.subgroups import SUBGROUP_METRICS
from deeppcos.stats import (
    acceleration,
    bootstrap,
    bootstrap_interval,
    bootstrap_weights,
    jackknife_weights,
    paired_auc_difference,
)
from deeppcos.tuning.selection import _apply
from deeppcos.tuning.spaces import SelectionSettings

N_BOOT = 200


def assert_inside_or_explained(value: Any, ci: Any, reason: Any, where: str) -> None:
    if ci is None:
        assert isinstance(reason, str) and reason.strip(), f"{where}: no interval and no reason"
        return
    low, high = ci
    assert value is not None and low <= value <= high, f"{where}: {value} outside [{low}, {high}]"


# --- data sets -------------------------------------------------------------------------------


def labels(n: int, prevalence: float, rng: np.random.Generator) -> np.ndarray:
    y = (rng.random(n) < prevalence).astype(int)
    y[0] = 1  # at least one of each class: the one-class case has its own tests
    y[1] = 0
    return y


def scores(y: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    n = len(y)
    if kind == "perfect":
        return np.where(y == 1, 0.6 + 0.3 * rng.random(n), 0.1 + 0.3 * rng.random(n))
    if kind == "useless":
        return rng.random(n)
    if kind == "tied":  # a handful of distinct values shared across classes
        return np.clip(np.round(0.2 * y + 0.8 * rng.random(n), 1), 0, 1)
    if kind == "constant":
        return np.full(n, 0.5)
    return np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)  # informative


SIZES = (8, 30, 120, 400)
PREVALENCES = (0.5, 0.06)
KINDS = ("informative", "perfect", "useless", "tied", "constant")
CASES = list(itertools.product(SIZES, PREVALENCES, KINDS))


def case_id(case: tuple[int, float, str]) -> str:
    return "n{}-prev{}-{}".format(*case)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_interval_contains_its_estimate_or_says_why(case: tuple[int, float, str]) -> None:
    n, prevalence, kind = case
    for seed in (0, 1):
        rng = np.random.default_rng(seed * 1000 + n)
        y = labels(n, prevalence, rng)
        p = scores(y, kind, rng)
        where = f"{case_id(case)} seed {seed}"
        groups = rng.integers(0, max(2, n // 2), n)  # linked patients, 1 to several rows each
        for group_arr in (None, groups):
            m = classification_metrics(y, p, 0.5, seed=seed, n_boot=N_BOOT, groups=group_arr)
            for name in METRICS:
                entry = m[name]
                assert_inside_or_explained(
                    entry["value"], entry["ci"], entry.get("ci_note"), f"{where} {name}"
                )
            assert m["ece"]["plugin"] is not None and m["ece"]["value_method"] == "bias-corrected"
        b = binary_metrics(y, p, seed=seed, n_boot=N_BOOT)
        assert_inside_or_explained(b["roc_auc"], b["roc_auc_ci"], b.get("roc_auc_ci_note"), where)

        grades_true = np.minimum(3, (4 * p).astype(int)) if kind != "useless" else y * 3
        grades_pred = np.clip(grades_true + rng.integers(-1, 2, n), 0, 3)
        o = ordinal_metrics(grades_true, grades_pred, 4, seed=seed, n_boot=N_BOOT)
        for name in ("quadratic_kappa", "macro_f1"):
            entry = o[name]
            assert_inside_or_explained(
                entry["value"], entry["ci"], entry.get("ci_note"), f"{where} {name}"
            )

        other = np.clip(p + rng.normal(0, 0.2, n), 0, 1)
        d = paired_auc_difference(y, p, other, seed=seed, n_boot=N_BOOT)
        assert_inside_or_explained(d["difference"], d["ci"], d.get("ci_note"), f"{where} paired")


@pytest.mark.parametrize("n", [40, 150, 600])
@pytest.mark.parametrize("prevalence", [0.5, 0.08])
def test_every_subgroup_row_contains_its_estimate_or_says_why(n: int, prevalence: float) -> None:
    rng = np.random.default_rng(n)
    y = labels(n, prevalence, rng)
    frame = pd.DataFrame(
        {
            "y": y,
            "p": scores(y, "tied", rng),
            # Tiny levels (a few patients) next to big ones.
            "site": rng.choice(["A", "B", "C", "tiny"], n, p=[0.45, 0.35, 0.17, 0.03]),
            "band": rng.choice(["x", "y"], n),
        }
    )
    table = subgroup_metrics(frame, ["site", "band"], "y", "p", 0.5, min_size=3, n_boot=N_BOOT)
    for _, row in table.iterrows():
        for metric in SUBGROUP_METRICS:
            low, high, value = row[f"{metric}_low"], row[f"{metric}_high"], row[metric]
            where = f"{row['group']}={row['level']} {metric}"
            assert np.isnan(low) == np.isnan(high), where
            if np.isnan(low):
                assert row["note"].strip(), f"{where}: no interval and no note"
            else:
                assert low <= value <= high, f"{where}: {value} outside [{low}, {high}]"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_folds", [2, 3, 5, 10, 30])
def test_the_mean_fold_gain_interval_contains_the_mean(seed: int, n_folds: int) -> None:
    rng = np.random.default_rng(seed)
    # Skewed gains (one fold far off) and plain noisy ones.
    gains = rng.normal(0.01, 0.02, n_folds)
    if seed % 2:
        gains[0] += 0.2
    rule = SelectionSettings(rule="bootstrap", n_boot=500)
    out = _apply(gains, rule)
    assert_inside_or_explained(out["mean"], out["ci"], out["reason"], f"gains {gains}")


# --- the ECE regression (issue 15) -----------------------------------------------------------


def calibrated_noisy(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """100 patients whose labels are drawn from their own probabilities: calibrated, but noisy."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, 100)
    return (rng.random(100) < p).astype(int), p


def test_ece_interval_contains_its_value_where_the_percentile_one_did_not() -> None:
    y, p = calibrated_noisy()
    m = classification_metrics(y, p, 0.5, seed=0, n_boot=1000)
    ece = m["ece"]
    # The old report: the percentile interval of the same 1000 resamples, around the plug-in.
    scorer = BinaryScorer(y, p, 0.5)
    rng = np.random.default_rng(0)
    draws = np.concatenate([scorer(w)["ece"] for w in bootstrap_weights(100, 1000, rng)])
    old_low = np.percentile(draws, 2.5)
    assert ece["plugin"] == pytest.approx(scorer(np.ones((1, 100)))["ece"][0])
    assert ece["plugin"] < old_low  # the issue: the estimate outside its own interval
    # Now: the bias-corrected value inside its basic interval, below the plug-in.
    low, high = ece["ci"]
    assert 0 <= low <= ece["value"] <= high <= 1
    assert ece["value"] == pytest.approx(max(0.0, 2 * ece["plugin"] - draws.mean()))
    assert high == pytest.approx(2 * ece["plugin"] - np.percentile(draws, 2.5))
    assert (ece["value_method"], ece["ci_method"]) == ("bias-corrected", "basic bootstrap")


def test_ece_without_resamples_is_the_plug_in() -> None:
    y, p = calibrated_noisy()
    ece = classification_metrics(y, p, 0.5, n_boot=0)["ece"]
    assert ece["value"] == ece["plugin"] and ece["ci"] is None
    assert ece["value_method"] == "plug-in" and "ci_note" not in ece


def test_an_ece_interval_that_clipping_would_collapse_is_not_reported() -> None:
    # Every bin exactly calibrated: plug-in ECE 0, every resample above it. [0, 0] would claim
    # certainty that the data do not give.
    y = np.r_[[1, 0, 0, 0, 0] * 6, [1] * 21 + [0] * 9]
    p = np.r_[np.full(30, 0.2), np.full(30, 0.7)]
    ece = classification_metrics(y, p, 0.5, n_boot=500)["ece"]
    assert ece["plugin"] == pytest.approx(0.0, abs=1e-12) and ece["value"] == 0.0
    assert ece["ci"] is None and "below 0" in ece["ci_note"]


# --- BCa itself ------------------------------------------------------------------------------


def test_bca_of_a_skewed_mean_matches_scipy() -> None:
    x = np.random.default_rng(7).lognormal(0.0, 1.0, size=30)

    def mean(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"mean": weights @ x / weights.sum(axis=1)}

    ours = bootstrap(mean, len(x), seed=1, n_boot=20_000)["mean"]
    kwargs = {"n_resamples": 20_000, "random_state": 2}
    theirs = scipy_stats.bootstrap((x,), np.mean, method="BCa", **kwargs).confidence_interval
    percentile = scipy_stats.bootstrap((x,), np.mean, method="percentile", **kwargs)
    # Monte Carlo spread of either bound over seeds here is about 0.007 (checked with 4 seeds).
    assert ours["value"] == pytest.approx(x.mean())
    assert ours["ci"] == pytest.approx([theirs.low, theirs.high], abs=0.025)
    # ... and the test tells BCa from percentile: on data this skewed they differ by more.
    assert theirs.high - percentile.confidence_interval.high > 0.06


def test_acceleration_is_the_skewness_of_the_jackknife_and_zero_when_symmetric() -> None:
    x = np.random.default_rng(3).exponential(size=60)
    loo = (x.sum() - x) / (len(x) - 1)  # jackknife of the mean
    u = x - x.mean()
    assert acceleration(loo) == pytest.approx((u**3).sum() / (6 * (u**2).sum() ** 1.5))
    assert acceleration(loo) > 0.01  # right skew: positive acceleration
    symmetric = np.r_[u, -u]
    loo = (symmetric.sum() - symmetric) / (len(symmetric) - 1)
    assert acceleration(loo) == pytest.approx(0.0, abs=1e-12)
    assert acceleration(np.full(10, 0.3)) == 0.0


def test_block_jackknife_keeps_the_acceleration_of_the_delete_one() -> None:
    x = np.random.default_rng(4).exponential(size=3000)
    weights = jackknife_weights(len(x))
    assert weights.shape == (200, 3000) and (weights.sum(axis=0) == 199).all()
    blocks = weights @ x / weights.sum(axis=1)
    loo = (x.sum() - x) / (len(x) - 1)
    assert acceleration(blocks) == pytest.approx(acceleration(loo), rel=0.35)


def test_jackknife_deletes_whole_groups() -> None:
    codes = np.array([0, 0, 1, 2, 2, 2])
    weights = jackknife_weights(3, codes)
    assert weights.tolist() == [[0, 0, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0]]


def test_bias_correction_z0_counts_ties_half() -> None:
    # All draws equal to the estimate: z0 = 0, no acceleration -> the interval is the point.
    assert bootstrap_interval(0.7, np.full(100, 0.7)).ci == [0.7, 0.7]
    # Half the draws tied, the rest split evenly: still centred, so the plain quantiles.
    draws = np.r_[np.full(50, 0.5), np.linspace(0.4, 0.49, 25), np.linspace(0.51, 0.6, 25)]
    ci = bootstrap_interval(0.5, draws).ci
    assert ci == pytest.approx(np.percentile(draws, [2.5, 97.5]).tolist())


def test_the_safety_net_withholds_intervals_that_exclude_their_estimate() -> None:
    # 99% of resamples above the estimate: z0 = -2.33 drives the BCa upper bound into the 1%
    # below it, so the "interval" would not contain the estimate.
    draws = np.r_[np.full(5, -0.5), 1 + np.random.default_rng(0).random(495)]
    interval = bootstrap_interval(0.0, draws)
    assert interval.ci is None and "would exclude the estimate" in interval.note
    assert "99% of resamples lie above" in interval.note
    one_side = bootstrap_interval(0.0, 1 + np.random.default_rng(0).random(100))
    assert one_side.ci is None and "every resample lies above" in one_side.note
    few = bootstrap_interval(0.5, np.r_[np.full(60, np.nan), np.linspace(0.4, 0.6, 40)])
    assert few.ci is None and "only 40 of 100 resamples" in few.note
    assert "undefined" in bootstrap_interval(math.nan, np.zeros(10)).note


def test_withheld_intervals_reach_the_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # Real data rarely trip the safety net (the property test above found no case), so the
    # plumbing is checked with a bootstrap that withholds one interval.
    from deeppcos.evaluation import metrics, subgroups
    from deeppcos.stats import Interval

    def withholding(*args: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
        scores = bootstrap(*args, **kwargs)
        scores["specificity"] = {**scores["specificity"], "ci": None, "ci_note": "lopsided"}
        return scores

    monkeypatch.setattr(subgroups, "bootstrap", withholding)
    rng = np.random.default_rng(0)
    y = labels(100, 0.5, rng)
    frame = pd.DataFrame({"y": y, "p": scores(y, "informative", rng), "site": "A"})
    table = subgroup_metrics(frame, ["site"], "y", "p", 0.5, n_boot=100)
    assert table["specificity_low"].isna().all() and table["specificity_high"].isna().all()
    assert (table["note"] == "specificity: lopsided").all()
    assert table["roc_auc_low"].notna().all()

    monkeypatch.setattr(
        metrics, "bootstrap_auc_interval", lambda *a, **k: Interval(0.8, None, "lopsided")
    )
    m = binary_metrics(y, frame["p"], n_boot=100)
    assert m["roc_auc_ci"] is None and m["roc_auc_ci_note"] == "lopsided"
    assert "roc_auc_ci_note" not in binary_metrics(y, frame["p"], n_boot=0)
