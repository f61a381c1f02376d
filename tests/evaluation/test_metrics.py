import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from deeppcos.evaluation.metrics import (
    METRICS,
    binary_confusion_matrix,
    binary_metrics,
    calibration_table,
    classification_metrics,
    ordinal_metrics,
    threshold_for_sensitivity,
)


def scored(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative probabilities rounded to 2 decimals, so ties occur."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1).round(2)
    return y, p


# --- binary_metrics (used by training) -------------------------------------------------------


def test_metrics_match_sklearn_and_have_a_sane_interval() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    m = binary_metrics(y, p, seed=1)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-4)
    low, high = m["roc_auc_ci"]
    assert low < m["roc_auc"] < high and high - low < 0.2
    assert m["n"] == 300 and m["positives"] == int(y.sum())


def test_missing_predictions_are_left_out_and_one_class_is_reported() -> None:
    m = binary_metrics([0, 1, 1, 0], [0.1, np.nan, 0.8, 0.3])
    assert m["n"] == 3
    assert binary_metrics([1, 1], [0.2, 0.9])["roc_auc"] is None


def test_binary_metrics_without_bootstrap_gives_no_interval() -> None:
    y, p = scored(50)
    assert binary_metrics(y, p, n_boot=0)["roc_auc_ci"] is None


# --- classification_metrics -------------------------------------------------------------------


def test_classification_metrics_equal_sklearn() -> None:
    y, p = scored(400)
    m = classification_metrics(y, p, 0.5, n_boot=0)
    called = (p >= 0.5).astype(int)
    expected = {
        "roc_auc": roc_auc_score(y, p),
        "pr_auc": average_precision_score(y, p),
        "accuracy": accuracy_score(y, called),
        "sensitivity": recall_score(y, called),
        "specificity": recall_score(y, called, pos_label=0),
        "ppv": precision_score(y, called),
        "npv": precision_score(y, called, pos_label=0),
        "f1": f1_score(y, called),
        "brier": brier_score_loss(y, p),
    }
    for name, value in expected.items():
        assert m[name]["value"] == pytest.approx(value, abs=1e-12), name
        assert m[name]["ci"] is None
    tn, fp, fn, tp = confusion_matrix(y, called).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert binary_confusion_matrix(m).tolist() == confusion_matrix(y, called).tolist()
    assert (m["n"], m["positives"], m["threshold"]) == (400, int(y.sum()), 0.5)
    assert set(METRICS) <= set(m)


def test_intervals_contain_the_estimate_and_shrink_with_n() -> None:
    widths = {}
    for n in (150, 2400):
        y, p = scored(n, seed=n)
        m = classification_metrics(y, p, 0.5, seed=3, n_boot=400)
        for name in METRICS:
            low, high = m[name]["ci"]
            assert low <= m[name]["value"] <= high, (n, name)
        widths[n] = {name: np.diff(m[name]["ci"])[0] for name in METRICS}
    for name in METRICS:
        # 16x the patients: intervals about 4x narrower; demand at least 2x.
        assert widths[2400][name] < widths[150][name] / 2, name


def test_bootstrap_is_seeded_and_fast() -> None:
    y, p = scored(600)
    start = time.perf_counter()
    first = classification_metrics(y, p, 0.4, seed=7, n_boot=1000)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"1000 resamples of 600 patients took {elapsed:.2f} s"
    assert classification_metrics(y, p, 0.4, seed=7, n_boot=1000) == first
    assert classification_metrics(y, p, 0.4, seed=8, n_boot=1000) != first


def test_groups_of_one_patient_match_the_patient_bootstrap() -> None:
    y, p = scored(200)
    plain = classification_metrics(y, p, 0.5, n_boot=200)
    grouped = classification_metrics(y, p, 0.5, n_boot=200, groups=np.arange(200))
    assert grouped["roc_auc"] == plain["roc_auc"]
    assert grouped["bootstrap"]["unit"] != plain["bootstrap"]["unit"]


def test_linked_patients_widen_the_interval() -> None:
    # Every patient duplicated: resampling rows treats 400 rows as 400 patients; resampling the
    # 200 linked pairs knows there are only 200.
    y, p = scored(200)
    y2, p2, pairs = np.r_[y, y], np.r_[p, p], np.r_[np.arange(200), np.arange(200)]
    rows = classification_metrics(y2, p2, 0.5, n_boot=500)
    linked = classification_metrics(y2, p2, 0.5, n_boot=500, groups=pairs)
    assert np.diff(linked["roc_auc"]["ci"])[0] > 1.2 * np.diff(rows["roc_auc"]["ci"])[0]


def test_missing_rows_are_excluded_and_counted() -> None:
    m = classification_metrics([0, 1, 1, np.nan, 0], [0.1, 0.9, np.nan, 0.5, 0.7], 0.5, n_boot=50)
    assert (m["n"], m["excluded"]) == (3, 2)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 1, 0)


def test_one_class_gives_undefined_values_not_errors() -> None:
    m = classification_metrics([1, 1, 1], [0.2, 0.6, 0.9], 0.5, n_boot=50)
    assert m["roc_auc"]["value"] is None and m["specificity"]["value"] is None
    assert m["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert "both classes" in m["note"]


def test_perfect_sensitivity_gets_a_wilson_interval_not_a_collapsed_one() -> None:
    y = np.r_[np.ones(21), np.zeros(30)]
    p = np.r_[np.full(21, 0.9), np.linspace(0, 0.95, 30)]
    m = classification_metrics(y, p, 0.5, n_boot=200)
    assert m["sensitivity"]["value"] == 1.0
    assert m["sensitivity"]["ci"] == [pytest.approx(21 / (21 + 1.959964**2), abs=1e-6), 1.0]
    assert m["sensitivity"]["ci_method"] == "wilson"
    assert "ci_method" not in m["specificity"]


def test_bad_inputs_say_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="0/1"):
        classification_metrics([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        classification_metrics([0, 1], [-2.0, 3.0], 0.5)
    with pytest.raises(ValueError, match="one length"):
        classification_metrics([0, 1, 1], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="no row has both"):
        classification_metrics([1, np.nan], [np.nan, 0.5], 0.5)


# --- calibration -------------------------------------------------------------------------------


def test_ece_is_zero_when_every_bin_is_calibrated() -> None:
    # In the 0.2 bin 1 of 5 is positive, in the 0.7 bin 7 of 10: observed = predicted per bin.
    y = np.r_[[1, 0, 0, 0, 0], [1] * 7 + [0] * 3]
    p = np.r_[np.full(5, 0.2), np.full(10, 0.7)]
    m = classification_metrics(y, p, 0.5, n_boot=0)
    assert m["ece"]["value"] == pytest.approx(0.0, abs=1e-12)


def test_ece_is_large_when_miscalibrated() -> None:
    y = np.r_[np.ones(50), np.zeros(50)]
    m = classification_metrics(y, np.full(100, 0.95), 0.5, n_boot=0)
    assert m["ece"]["value"] == pytest.approx(0.45)
    table = calibration_table(y, np.full(100, 0.95))
    assert table["n"].tolist() == [0] * 9 + [100]
    assert table.loc[9, "observed_rate"] == 0.5


def test_calibration_bins_are_half_open_with_one_in_the_last() -> None:
    table = calibration_table([0, 1, 1, 0], [0.0, 0.3, 1.0, 0.2999])
    assert table["n"].tolist() == [1, 0, 1, 1, 0, 0, 0, 0, 0, 1]


# --- threshold_for_sensitivity ----------------------------------------------------------------


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 1.0])
def test_threshold_reaches_the_target_and_is_the_highest_that_does(target: float) -> None:
    y, p = scored(300, seed=5)
    threshold = threshold_for_sensitivity(y, p, target)
    m = classification_metrics(y, p, threshold, n_boot=0)
    assert m["sensitivity"]["value"] >= target
    higher = p[p > threshold].min()
    assert classification_metrics(y, p, higher, n_boot=0)["sensitivity"]["value"] < target


def test_threshold_ties_count_every_tied_patient_as_positive() -> None:
    # 4 positives, two tied at 0.6: 75% needs 3 of 4, and the 3rd-highest is one of the tie.
    y = [1, 1, 1, 1, 0, 0]
    p = [0.9, 0.6, 0.6, 0.2, 0.6, 0.1]
    assert threshold_for_sensitivity(y, p, 0.75) == 0.6
    m = classification_metrics(y, p, 0.6, n_boot=0)
    assert m["sensitivity"]["value"] == 0.75 and m["fp"] == 1


def test_threshold_is_not_fooled_by_float_products() -> None:
    # 0.95 * 100 is 95.00000000000001 in floating point: must still need 95 positives, not 96.
    y = np.ones(100)
    p = np.arange(100) / 100
    assert threshold_for_sensitivity(y, p, 0.95) == 0.05


def test_threshold_needs_positives_and_a_sane_target() -> None:
    with pytest.raises(ValueError, match="positive"):
        threshold_for_sensitivity([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="target"):
        threshold_for_sensitivity([0, 1], [0.1, 0.2], target=0)


# --- ordinal_metrics ---------------------------------------------------------------------------


def grades(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, n)
    return true, np.clip(true + rng.integers(-1, 2, n), 0, 3)


def test_kappa_and_macro_f1_equal_sklearn() -> None:
    true, predicted = grades(300)
    m = ordinal_metrics(true, predicted, 4, n_boot=300)
    kappa = cohen_kappa_score(true, predicted, weights="quadratic", labels=range(4))
    assert m["quadratic_kappa"]["value"] == pytest.approx(kappa, abs=1e-12)
    assert m["macro_f1"]["value"] == pytest.approx(f1_score(true, predicted, average="macro"))
    assert m["confusion"] == confusion_matrix(true, predicted, labels=range(4)).tolist()
    for name in ("quadratic_kappa", "macro_f1"):
        low, high = m[name]["ci"]
        assert low <= m[name]["value"] <= high


def test_ordinal_missing_grades_are_excluded_and_categoricals_read() -> None:
    levels = ["none", "mild", "moderate", "severe"]
    true = pd.Series(pd.Categorical(["none", "mild", None, "severe", "moderate"], levels, True))
    predicted = [0, 2, 1, 3, np.nan]
    m = ordinal_metrics(true, predicted, 4, n_boot=50)
    assert (m["n"], m["excluded"], m["labels"]) == (3, 2, levels)
    kappa = cohen_kappa_score([0, 1, 3], [0, 2, 3], weights="quadratic", labels=range(4))
    assert m["quadratic_kappa"]["value"] == pytest.approx(kappa)


def test_ordinal_rejects_grades_outside_the_levels() -> None:
    with pytest.raises(ValueError, match=r"0\.\.2"):
        ordinal_metrics([0, 1, 3], [0, 1, 2], 3)
