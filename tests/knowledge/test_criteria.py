"""The Rotterdam-criteria labeller: phenotypes, unknowns, guideline thresholds, AMH, leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deeppcos.exceptions import ConfigError, SchemaError
from deeppcos.knowledge.criteria import (
    MFG_SOUTH_INDIAN,
    PCOM_FNPO,
    SEVERITY_LEVELS,
    CriteriaRules,
    criteria_summary,
    label_cohort,
    label_criteria,
)
from tests.conftest import REPO

NA = np.nan
R2003 = CriteriaRules(guideline="rotterdam-2003")
R2023 = CriteriaRules(guideline="2023-international")


def _rows(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    frame.insert(0, "patient_id", [f"P{i}" for i in range(len(frame))])
    return frame


def _values(result, column: str) -> list:
    return [None if pd.isna(v) else v for v in result.frame[column]]


# A complete record: every criterion is judged (2023 rules unless said otherwise).
def _full(od: bool, ha: bool, pcom: bool) -> dict:
    return {
        "cycle_irregular": 1 if od else 0,
        "cycle_length_days": 50 if od else 28,
        "hirsutism_mfg_score": 9 if ha else 2,
        "total_testosterone_nmol_l": 2.2 if ha else 1.0,
        "follicle_count_left": 24 if pcom else 7,
        "follicle_count_right": 11 if pcom else 8,
        "ovarian_volume_left_ml": 11.0 if pcom else 6.0,
        "ovarian_volume_right_ml": 7.0,
    }


def test_every_phenotype_and_its_severity_grade():
    patients = _rows(
        _full(od=True, ha=True, pcom=True),  # A
        _full(od=True, ha=True, pcom=False),  # B
        _full(od=False, ha=True, pcom=True),  # C
        _full(od=True, ha=False, pcom=True),  # D
        _full(od=False, ha=False, pcom=True),  # isolated PCOM: not PCOS
        _full(od=False, ha=False, pcom=False),
    )
    result = label_criteria(patients, R2023)
    assert _values(result, "phenotype") == ["A", "B", "C", "D", None, None]
    assert _values(result, "severity") == ["severe", "moderate", "moderate", "mild", "none", "none"]
    assert _values(result, "rotterdam_pcos") == [True, True, True, True, False, False]
    assert _values(result, "n_criteria_met") == [3, 2, 2, 2, 1, 0]
    assert _values(result, "n_criteria_known") == [3] * 6
    assert list(result.frame["patient_id"]) == list(patients["patient_id"])
    severity = result.frame["severity"]
    assert severity.cat.ordered and list(severity.cat.categories) == SEVERITY_LEVELS
    codes = severity.cat.codes.tolist()  # the order is the convention: A > B, C > D > none
    assert codes[0] > codes[1] == codes[2] > codes[3] > codes[4]


def test_severity_levels_match_the_synthetic_generator():
    from deeppcos.data.synthetic import PHENOTYPES
    from deeppcos.data.synthetic import SEVERITY_LEVELS as SYNTHETIC_LEVELS

    assert SEVERITY_LEVELS == SYNTHETIC_LEVELS
    patterns = {p: _full(od=od, ha=ha, pcom=pc) for p, ((ha, od, pc), _, _) in PHENOTYPES.items()}
    result = label_criteria(_rows(*patterns.values()), R2023)
    assert _values(result, "severity") == [PHENOTYPES[p][2] for p in patterns]


def test_unknown_is_not_no():
    # No ultrasound columns at all: PCOM is unknown for everyone.
    patients = _rows(
        {"cycle_irregular": 1, "hirsutism_mfg_score": 2, "total_testosterone_nmol_l": 1.0},
        {"cycle_irregular": 1, "hirsutism_mfg_score": 9, "total_testosterone_nmol_l": 1.0},
        {"cycle_irregular": 0, "hirsutism_mfg_score": 2, "total_testosterone_nmol_l": 1.0},
        {"cycle_irregular": NA, "hirsutism_mfg_score": NA, "total_testosterone_nmol_l": NA},
    )
    result = label_criteria(patients, R2023)
    assert _values(result, "pcom") == [None] * 4
    # OD met only, PCOM unknown: 1 met + 1 unknown could reach 2.
    # OD + HA met: PCOS whatever PCOM is, but phenotype A or B, so no phenotype or grade.
    # Nothing met and only PCOM unknown: cannot reach 2 -> False, grade none.
    assert _values(result, "rotterdam_pcos") == [None, True, False, None]
    assert _values(result, "phenotype") == [None, None, None, None]
    assert _values(result, "severity") == [None, None, "none", None]
    assert _values(result, "n_criteria_known") == [2, 2, 2, 0]
    assert any("unknown for every patient" in c and "PCOM" in c for c in result.caveats)


def test_no_hirsutism_without_an_androgen_measurement_leaves_ha_unknown():
    patients = _rows(
        {"hirsutism_mfg_score": 2, "total_testosterone_nmol_l": NA},
        {"hirsutism_mfg_score": 2, "total_testosterone_nmol_l": 1.0},
        {"hirsutism_mfg_score": NA, "total_testosterone_nmol_l": 2.0},
    )
    result = label_criteria(patients, R2023)
    assert _values(result, "hyperandrogenism_clinical") == [False, False, None]
    assert _values(result, "hyperandrogenism_biochemical") == [None, False, True]
    assert _values(result, "hyperandrogenism") == [None, False, True]


@pytest.mark.parametrize(
    ("left", "right", "pcom_2003", "pcom_2023"),
    [
        (15, 3, True, False),  # FNPO 15: PCOM under 2003 (≥12), not under 2023 (≥20)
        (12, 3, True, False),
        (11, 11, False, False),
        (3, 20, True, True),  # one ovary is enough
        (19, NA, True, None),  # the other ovary could qualify under 2023
        (8, NA, None, None),
    ],
)
def test_follicle_thresholds_per_guideline(left, right, pcom_2003, pcom_2023):
    patients = _rows({"follicle_count_left": left, "follicle_count_right": right})
    assert _values(label_criteria(patients, R2003), "pcom") == [pcom_2003]
    assert _values(label_criteria(patients, R2023), "pcom") == [pcom_2023]


@pytest.mark.parametrize(
    ("volume", "pcom_2003", "pcom_2023"),
    [(10.0, False, True), (10.5, True, True), (9.9, False, False)],
)
def test_ovarian_volume_wording_per_guideline(volume, pcom_2003, pcom_2023):
    # 2003: ">10 cm³"; 2023: "≥10 mL" (clinical-reference §2.2, §2.4).
    patients = _rows({"ovarian_volume_left_ml": volume, "ovarian_volume_right_ml": 6.0})
    assert _values(label_criteria(patients, R2003), "pcom") == [pcom_2003]
    assert _values(label_criteria(patients, R2023), "pcom") == [pcom_2023]


def test_2023_uses_volume_only_when_fnpo_cannot_be_assessed():
    patients = _rows(
        {"follicle_count_left": 15, "follicle_count_right": 9, "ovarian_volume_left_ml": 12.0,
         "ovarian_volume_right_ml": 6.0},
        {"follicle_count_left": NA, "follicle_count_right": NA, "ovarian_volume_left_ml": 12.0,
         "ovarian_volume_right_ml": 6.0},
    )  # fmt: skip
    assert _values(label_criteria(patients, R2023), "pcom") == [False, True]
    # 2003: follicles "and/or" volume.
    assert _values(label_criteria(patients, R2003), "pcom") == [True, True]


def test_rules_resolve_and_record_each_guideline():
    assert R2003.pcom_follicles_per_ovary == PCOM_FNPO["rotterdam-2003"] == 12
    assert R2023.pcom_follicles_per_ovary == PCOM_FNPO["2023-international"] == 20
    assert (R2003.ovarian_volume_inclusive, R2023.ovarian_volume_inclusive) == (False, True)
    assert (R2003.hirsutism_mfg, R2023.hirsutism_mfg) == (8.0, 6.0)
    assert R2023.total_testosterone_upper_nmol_l == 1.6
    assert R2023.amh_ng_ml_threshold is None and not R2023.use_free_androgen_index
    recorded = label_criteria(_rows({"cycle_irregular": 1}), R2003).rules
    assert recorded["guideline"] == "rotterdam-2003"
    assert recorded["pcom_follicles_per_ovary"] == 12
    assert "§2.2" in recorded["sources"]["pcom_follicles_per_ovary"]
    assert CriteriaRules.from_dict(recorded) == R2003
    # An explicit value wins over the guideline's.
    assert (
        CriteriaRules(guideline="2023-international", pcom_follicles_per_ovary=25).to_dict()[
            "pcom_follicles_per_ovary"
        ]
        == 25
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"guideline": "nih-1990"},
        {"hirsutism_mfg": 0},
        {"total_testosterone_upper_nmol_l": -1.0},
        {"cycle_short_days": 40},
        {"guideline": "rotterdam-2003", "amh_ng_ml_threshold": 3.0},
        {"amh_ng_ml_threshold": "high"},
    ],
)
def test_invalid_rules_are_refused(kwargs):
    with pytest.raises(ConfigError):
        CriteriaRules(**kwargs)


def test_hirsutism_cut_off_is_configurable():
    patients = _rows({"hirsutism_mfg_score": 5}, {"hirsutism_mfg_score": 6})
    assert _values(label_criteria(patients, R2023), "hyperandrogenism_clinical") == [False, True]
    south_indian = CriteriaRules(hirsutism_mfg=MFG_SOUTH_INDIAN)
    assert _values(label_criteria(patients, south_indian), "hyperandrogenism_clinical") == [
        True,
        True,
    ]
    assert _values(label_criteria(patients, R2003), "hyperandrogenism_clinical") == [False, False]


def test_mfg_outranks_the_hair_growth_stand_in():
    patients = _rows(
        {"hirsutism_mfg_score": 2, "hair_growth": 1},
        {"hirsutism_mfg_score": NA, "hair_growth": 1},
        {"hirsutism_mfg_score": NA, "hair_growth": 0},
    )
    result = label_criteria(patients, R2023)
    assert _values(result, "hyperandrogenism_clinical") == [False, True, False]
    assert any("hair_growth" in c and "§3.2" in c for c in result.caveats)
    no_proxy = label_criteria(patients, CriteriaRules(use_hair_growth_proxy=False))
    assert _values(no_proxy, "hyperandrogenism_clinical") == [False, None, None]
    assert "hair_growth" not in no_proxy.columns_used


def test_cycle_rule_and_flag():
    patients = _rows(
        *({"cycle_length_days": d} for d in (20, 21, 35, 36, NA)),
        {"cycle_length_days": 28, "cycle_irregular": 1},
    )
    patients.loc[:4, "cycle_irregular"] = NA
    result = label_criteria(patients, R2023)
    assert _values(result, "ovulatory_dysfunction") == [True, False, False, True, None, True]


def test_testosterone_and_opt_in_free_androgen_index():
    patients = _rows(
        {"total_testosterone_nmol_l": 1.6, "shbg_nmol_l": 60.0},
        {"total_testosterone_nmol_l": 1.61, "shbg_nmol_l": 60.0},
        {"total_testosterone_nmol_l": 1.0, "shbg_nmol_l": 10.0},  # FAI 10 > 6.5
    )
    plain = label_criteria(patients, R2023)
    assert _values(plain, "hyperandrogenism_biochemical") == [False, True, False]
    assert "shbg_nmol_l" not in plain.columns_used
    with_fai = label_criteria(patients, CriteriaRules(use_free_androgen_index=True))
    assert _values(with_fai, "hyperandrogenism_biochemical") == [False, True, True]
    assert with_fai.columns_used == ["total_testosterone_nmol_l", "shbg_nmol_l"]
    assert any("low-weight" in c for c in with_fai.caveats)


def test_amh_is_ignored_unless_a_threshold_is_given():
    patients = _rows(
        {"amh_ng_ml": 12.0, "follicle_count_left": NA, "follicle_count_right": NA},
        {"amh_ng_ml": 1.0, "follicle_count_left": NA, "follicle_count_right": NA},
        {"amh_ng_ml": 12.0, "follicle_count_left": 5, "follicle_count_right": 5},
    )
    default = label_criteria(patients, R2023)
    assert _values(default, "pcom") == [None, None, False]
    assert "amh_ng_ml" not in default.columns_used
    assert any("no universal AMH cut-off" in c for c in default.caveats)
    explicit = label_criteria(patients, CriteriaRules(amh_ng_ml_threshold=5.0))
    # Ultrasound OR elevated AMH (2023, §2.4).
    assert _values(explicit, "pcom") == [True, False, True]
    assert "amh_ng_ml" in explicit.columns_used
    assert explicit.rules["amh_ng_ml_threshold"] == 5.0


def test_columns_used_lists_exactly_what_was_read():
    patients = _rows(
        {
            **_full(od=True, ha=True, pcom=True),
            "hair_growth": 1,
            "amh_ng_ml": 8.0,
            "bmi_kg_m2": 31.0,
            "lh_iu_l": 9.0,
            "menses_duration_days": 5,
            "label": 1,
        }
    )
    result = label_criteria(patients, R2023)
    assert result.columns_used == [
        "cycle_irregular",
        "cycle_length_days",
        "hirsutism_mfg_score",
        "hair_growth",
        "total_testosterone_nmol_l",
        "follicle_count_left",
        "follicle_count_right",
        "ovarian_volume_left_ml",
        "ovarian_volume_right_ml",
    ]
    # Derived features carry the same information and must leave the model's inputs too.
    assert set(result.exclude_from_inputs) == {
        *result.columns_used,
        "free_androgen_index",
        "follicle_count_max",
        "follicle_count_total",
    }
    minimal = label_criteria(_rows({"cycle_irregular": 1, "bmi_kg_m2": 22.0}), R2023)
    assert minimal.columns_used == ["cycle_irregular"]


def test_bad_inputs_are_refused_with_the_row():
    with pytest.raises(SchemaError, match="row 0"):
        label_criteria(pd.DataFrame({"cycle_irregular": [4, 2]}))
    with pytest.raises(SchemaError, match="numeric"):
        label_criteria(pd.DataFrame({"follicle_count_left": ["many", 3]}))
    with pytest.raises(SchemaError):
        label_criteria([{"cycle_irregular": 1}])  # type: ignore[arg-type]


def test_nullable_and_boolean_columns_are_read():
    patients = pd.DataFrame(
        {
            "cycle_irregular": pd.array([True, None, False], dtype="boolean"),
            "follicle_count_left": pd.array([25, None, 3], dtype="Int64"),
            "follicle_count_right": pd.array([1, None, 3], dtype="Int64"),
        }
    )
    result = label_criteria(patients, R2023)
    assert _values(result, "ovulatory_dysfunction") == [True, None, False]
    assert _values(result, "pcom") == [True, None, False]


def test_summary_counts_and_label_agreement():
    patients = _rows(
        _full(od=True, ha=True, pcom=True),
        _full(od=True, ha=True, pcom=False),
        _full(od=False, ha=False, pcom=False),
        {"cycle_irregular": 1},
    )
    result = label_criteria(patients, R2023)
    label = pd.Series([1, 0, 0, 1], name="pcos")
    summary = criteria_summary(result, label=label, severity=pd.Series(["severe"] * 4))
    assert summary["n_patients"] == 4
    assert summary["criteria"]["pcom"] == {"met": 1, "not_met": 2, "unknown": 1}
    assert summary["criteria"]["rotterdam_pcos"] == {"met": 2, "not_met": 1, "unknown": 1}
    assert summary["phenotype"]["A"] == 1 and summary["phenotype"]["B"] == 1
    assert summary["phenotype"]["pcos_unknown"] == 1
    assert summary["severity"] == {
        "none": 1, "mild": 0, "moderate": 1, "severe": 1, "unknown": 1,
    }  # fmt: skip
    agreement = summary["label_agreement"]
    assert agreement["confusion"]["1"] == {"met": 1, "unknown": 1}
    assert agreement["confusion"]["0"] == {"met": 1, "not_met": 1}
    assert agreement["label_0_2_or_more_met"] == 1
    assert agreement["label_1_fewer_than_2_met"] == 1
    assert agreement["n_decided"] == 3 and agreement["agreement_on_decided"] == pytest.approx(2 / 3)
    assert summary["severity_agreement"]["n_decided"] == 3


def test_pcom_agrees_with_the_synthetic_ground_truth(tmp_path):
    from deeppcos.data import load_cohort
    from deeppcos.data.synthetic import generate_cohort

    spec = generate_cohort(tmp_path, n_patients=80, seed=1, image_size=32,
                           with_ultrasound_columns=True)  # fmt: skip
    cohort = load_cohort(spec)
    result = label_cohort(cohort)
    truth = pd.read_csv(tmp_path / "truth.csv").set_index("patient_id")
    frame = result.frame.set_index("patient_id")
    known = frame["pcom"].notna()
    assert known.mean() > 0.7
    # The generator's PCOM is FNPO ≥20 in at least one ovary, as the 2023 rule reads it.
    expected = truth.loc[frame.index[known], "pcom"].astype(bool)
    assert (frame.loc[known, "pcom"].astype(bool) == expected).all()


@pytest.mark.realdata
def test_kaggle_table_matches_the_reference_proxies(shared_data):
    """Clinical-reference §3.4: with the crude proxies (cycle code ≠ 2, hair growth = 1, max
    follicle count ≥12), 80 of 177 PCOS-positive rows meet fewer than 2 of 3 and 16 negatives
    meet ≥2. Under Rotterdam 2003 our criteria are those proxies, so the counts should agree up
    to the loader's cleaning (a few rows); bounds are loose on purpose."""
    from deeppcos.data import load_cohort

    cohort = load_cohort(REPO / "configs" / "pcos-kaggle-tabular.yaml")
    result = label_cohort(cohort, R2003)
    assert result.columns_used == [
        "cycle_irregular",
        "hair_growth",
        "follicle_count_left",
        "follicle_count_right",
    ]
    assert any("kaggle-pcos follicle counts" in c and "§3.2" in c for c in result.caveats)
    summary = criteria_summary(result, label=cohort.patients["label"])
    agreement = summary["label_agreement"]
    assert sum(summary["label_agreement"]["confusion"]["1"].values()) == 177
    assert abs(agreement["label_1_fewer_than_2_met"] - 80) <= 5
    assert abs(agreement["label_0_2_or_more_met"] - 16) <= 5
    # No androgen column: hyperandrogenism is never known to be absent, so phenotype D (which
    # needs HA absent) cannot be assigned, and rows lacking hair growth stay unknown.
    assert summary["criteria"]["hyperandrogenism_biochemical"]["unknown"] == len(result.frame)
    assert summary["criteria"]["hyperandrogenism"]["not_met"] == 0
    assert summary["phenotype"]["D"] == 0
    # The 2023 count threshold (≥20) can only shrink PCOM and hence PCOS.
    strict = criteria_summary(label_cohort(cohort, R2023))
    assert strict["criteria"]["pcom"]["met"] < summary["criteria"]["pcom"]["met"]
    assert (
        strict["criteria"]["rotterdam_pcos"]["met"] <= summary["criteria"]["rotterdam_pcos"]["met"]
    )
