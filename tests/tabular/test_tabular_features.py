"""Derived features (hand-checked numbers) and the choice of model inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deeppcos.data import ultrasound_features
from deeppcos.tabular import (
    derivable_columns,
    derive_features,
    is_ultrasound_feature,
    select_features,
)

PARTS = {
    "weight_kg": [60.0, 81.0],
    "height_cm": [150.0, 180.0],
    "waist_circumference_cm": [80.0, 90.0],
    "hip_circumference_cm": [100.0, 100.0],
    "lh_iu_l": [10.0, 3.0],
    "fsh_iu_l": [5.0, 6.0],
    "total_testosterone_nmol_l": [2.0, 1.5],
    "shbg_nmol_l": [40.0, 60.0],
    "fasting_glucose_mg_dl": [90.0, 81.0],
    "fasting_insulin_uiu_ml": [9.0, 10.0],
    "follicle_count_left": [12.0, 4.0],
    "follicle_count_right": [25.0, np.nan],
}


def test_each_formula_by_hand() -> None:
    out = derive_features(pd.DataFrame(PARTS))
    # 60 kg ÷ 1.5² m² = 26.67; 81 ÷ 1.8² = 25.
    assert out["bmi_kg_m2"].tolist() == pytest.approx([26.6667, 25.0], abs=1e-4)
    assert out["waist_hip_ratio"].tolist() == pytest.approx([0.8, 0.9])
    assert out["lh_fsh_ratio"].tolist() == pytest.approx([2.0, 0.5])  # LH ÷ FSH, not FSH ÷ LH
    assert out["free_androgen_index"].tolist() == pytest.approx([5.0, 2.5])  # 100 × 2 ÷ 40
    assert out["homa_ir"].tolist() == pytest.approx([2.0, 2.0])  # 90 × 9 ÷ 405; 81 × 10 ÷ 405
    assert out["follicle_count_max"].iloc[0] == 25.0
    assert out["follicle_count_total"].iloc[0] == 37.0
    # One ovary not counted: neither summary is known.
    assert np.isnan(out["follicle_count_max"].iloc[1])
    assert np.isnan(out["follicle_count_total"].iloc[1])


def test_only_gaps_are_filled_and_values_held_are_kept() -> None:
    frame = pd.DataFrame(
        {"weight_kg": [60.0, 60.0, np.nan], "height_cm": [150.0, 150.0, 150.0]}
    ).assign(bmi_kg_m2=[30.0, np.nan, np.nan])
    out = derive_features(frame)
    assert out["bmi_kg_m2"].iloc[0] == 30.0  # the source's value stays
    assert out["bmi_kg_m2"].iloc[1] == pytest.approx(26.6667, abs=1e-4)  # the gap is filled
    assert np.isnan(out["bmi_kg_m2"].iloc[2])  # a part is missing: still unknown
    assert frame["bmi_kg_m2"].isna().sum() == 2  # the input is not modified


def test_nothing_is_added_without_its_parts_and_bad_denominators_stay_missing() -> None:
    out = derive_features(pd.DataFrame({"lh_iu_l": [5.0], "amh_ng_ml": [3.0]}))
    assert list(out.columns) == ["lh_iu_l", "amh_ng_ml"]
    zero = derive_features(pd.DataFrame({"lh_iu_l": [5.0, 5.0], "fsh_iu_l": [0.0, 0.01]}))
    # FSH 0 is a keying error; LH/FSH = 500 lies outside the catalog's plausible 0.05–20.
    assert zero["lh_fsh_ratio"].isna().all()


def test_ultrasound_features_are_the_catalogs_plus_the_derived_follicle_summaries() -> None:
    for name in ultrasound_features():
        assert is_ultrasound_feature(name)
    assert is_ultrasound_feature("follicle_count_max")
    assert is_ultrasound_feature("follicle_count_total")
    for name in ("amh_ng_ml", "bmi_kg_m2", "lh_fsh_ratio", "not_a_feature"):
        assert not is_ultrasound_feature(name)


def test_select_features_adds_derivable_ones_and_can_drop_the_scan() -> None:
    columns = ["amh_ng_ml", "weight_kg", "height_cm", "follicle_count_left", "follicle_count_right"]
    assert derivable_columns(columns) == [
        *columns,
        "bmi_kg_m2",
        "follicle_count_max",
        "follicle_count_total",
    ]
    assert select_features(columns, exclude_ultrasound=False) == derivable_columns(columns)
    assert select_features(columns, exclude_ultrasound=True) == [
        "amh_ng_ml",
        "weight_kg",
        "height_cm",
        "bmi_kg_m2",
    ]
