import numpy as np
import pandas as pd
import pytest

from deeppcos.evaluation.metrics import (
    age_band,
    bmi_band,
    classification_metrics,
    subgroup_metrics,
)


@pytest.fixture
def cohort() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 400
    y = rng.integers(0, 2, n)
    site = rng.choice(["A", "B"], n).astype(object)
    site[:12] = "C"  # a site too small for an interval
    site[12:20] = None  # site unknown
    # Site B is harder: its probabilities carry less signal.
    signal = np.where(site == "B", 0.1, 0.4)
    p = np.clip(signal * y + rng.random(n) * (1 - signal), 0, 1)
    return pd.DataFrame({"y": y, "p": p, "site": site, "age": rng.uniform(18, 45, n)})


def test_subgroup_values_and_gaps_are_right(cohort: pd.DataFrame) -> None:
    table = subgroup_metrics(cohort, ["site"], "y", "p", threshold=0.5, n_boot=200)
    assert table["group"].tolist() == ["all", "site", "site", "site", "site"]
    assert table["level"].tolist() == ["all", "A", "B", "C", "missing"]
    assert table["n"].tolist() == [400, *cohort["site"].value_counts().loc[["A", "B", "C"]], 8]
    overall = table.iloc[0]
    for _, row in table.iloc[1:].iterrows():
        missing = row["level"] == "missing"
        part = cohort[cohort["site"].isna() if missing else cohort["site"] == row["level"]]
        m = classification_metrics(part["y"], part["p"], 0.5, n_boot=0)
        for metric in ("roc_auc", "sensitivity", "specificity"):
            assert row[metric] == pytest.approx(m[metric]["value"])
            assert row[f"{metric}_gap"] == pytest.approx(row[metric] - overall[metric])
    site_b = table[table["level"] == "B"].iloc[0]
    assert site_b["roc_auc_gap"] < -0.05  # the harder site shows up as a negative gap
    assert site_b["roc_auc_low"] < site_b["roc_auc"] < site_b["roc_auc_high"]


def test_small_groups_are_flagged_without_an_interval(cohort: pd.DataFrame) -> None:
    table = subgroup_metrics(cohort, ["site"], "y", "p", threshold=0.5, min_size=20, n_boot=100)
    small = table[table["n"] < 20]
    assert set(small["level"]) == {"C", "missing"}
    assert small["roc_auc_low"].isna().all() and small["sensitivity_high"].isna().all()
    assert small["note"].str.contains("< 20").all()
    assert small["roc_auc"].notna().all()  # point estimates are still reported
    assert (table.loc[table["n"] >= 20, "note"] == "").all()


def test_bands_order_levels_and_rows_without_labels_drop_out(cohort: pd.DataFrame) -> None:
    cohort = cohort.assign(age_band=age_band(cohort["age"]))
    cohort.loc[0, "p"] = np.nan
    table = subgroup_metrics(cohort, ["age_band"], "y", "p", 0.5, n_boot=50)
    assert table["level"].tolist() == ["all", "<25", "25–29", "30–34", "≥35"]
    assert table.attrs["excluded"] == 1 and table.loc[0, "n"] == 399


def test_age_bands() -> None:
    assert [age_band(a) for a in (18, 24.99, 25, 29.9, 30, 34.5, 35, 48)] == [
        "<25", "<25", "25–29", "25–29", "30–34", "30–34", "≥35", "≥35",
    ]  # fmt: skip
    assert age_band(None) is None and age_band(np.nan) is None
    series = age_band(pd.Series([20, np.nan, 40], index=[7, 8, 9]))
    assert series.index.tolist() == [7, 8, 9] and series.isna().tolist() == [False, True, False]
    assert series.cat.ordered


def test_bmi_bands_follow_who() -> None:
    values = (15.0, 18.49, 18.5, 24.9, 24.99, 25.0, 29.99, 30.0, 42.0)
    assert [bmi_band(v) for v in values] == [
        "<18.5", "<18.5", "18.5–24.9", "18.5–24.9", "18.5–24.9", "25–29.9", "25–29.9", "≥30", "≥30",
    ]  # fmt: skip
    assert bmi_band(np.array([22.0, np.nan])).tolist() == ["18.5–24.9", np.nan]


def test_unknown_columns_are_named() -> None:
    with pytest.raises(KeyError, match="bmi_band"):
        subgroup_metrics(pd.DataFrame({"y": [0, 1], "p": [0.1, 0.9]}), ["bmi_band"], "y", "p", 0.5)
