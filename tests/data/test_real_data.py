"""The real public data sets under ../shared/data load, with every defect handled loudly."""

from __future__ import annotations

import numpy as np
import pytest

from deeppcos.data import load_cohort
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("shared_data")


@pytest.fixture(scope="module")
def kaggle():
    return load_cohort(REPO / "configs" / "pcos-kaggle-tabular.yaml")


def _entry(cohort, action, row=None, column=None):
    return [
        e
        for e in cohort.report.by_action(action)
        if (row is None or e.row == row) and (column is None or e.column == column)
    ]


def test_all_541_women_load_177_with_pcos(kaggle) -> None:
    assert len(kaggle.patients) == 541
    assert int(kaggle.patients["label"].sum()) == 177
    assert kaggle.patients["patient_id"].is_unique


def test_text_cells_become_missing_with_row_and_column(kaggle) -> None:
    (amh,) = _entry(kaggle, "coerced", 306, "amh_ng_ml")
    assert amh.found == "a"
    (hcg,) = _entry(kaggle, "coerced", 124, "beta_hcg_2_miu_ml")
    assert hcg.found == "1.99."
    table = kaggle.patients
    assert np.isnan(table.loc[306, "amh_ng_ml"]) and np.isnan(table.loc[124, "beta_hcg_2_miu_ml"])


@pytest.mark.parametrize(
    ("row", "column", "found"),
    [
        (330, "fsh_iu_l", "5052"),
        (456, "lh_iu_l", "2018"),
        (192, "vitamin_d_25oh_ng_ml", "6014.66"),
        (162, "systolic_bp_mmhg", "12"),
        (201, "diastolic_bp_mmhg", "8"),
        (268, "amh_ng_ml", "66"),
        (297, "pulse_rate_bpm", "13"),
        (40, "endometrial_thickness_mm", "0"),
    ],
)
def test_impossible_values_are_flagged_and_nulled(kaggle, row, column, found) -> None:
    (entry,) = _entry(kaggle, "out_of_range", row, column)
    assert entry.found == found
    assert np.isnan(kaggle.patients.loc[row, column])


def test_formula_columns_are_recomputed_from_their_parts(kaggle) -> None:
    t = kaggle.patients
    assert t["bmi_kg_m2"].notna().sum() == 541
    np.testing.assert_allclose(t["bmi_kg_m2"], t["weight_kg"] / (t["height_cm"] / 100) ** 2)
    np.testing.assert_allclose(t.loc[1, "bmi_kg_m2"], 44.6 / 1.52**2)
    ratio = t["lh_iu_l"] / t["fsh_iu_l"]  # clinical LH/FSH, not the source's FSH/LH
    present = t["lh_fsh_ratio"].notna()
    np.testing.assert_allclose(t.loc[present, "lh_fsh_ratio"], ratio[present])
    # Ratios outside the plausible 0.05–20 are listed and nulled like any other value.
    assert len(_entry(kaggle, "out_of_range", column="lh_fsh_ratio")) == (~present).sum() - (
        ratio.isna().sum()
    )
    assert np.isnan(t.loc[456, "lh_fsh_ratio"])  # LH 2018 was nulled first
    np.testing.assert_allclose(
        t.loc[1, ["hip_circumference_cm", "waist_circumference_cm"]], [36 * 2.54, 30 * 2.54]
    )
    recomputed = {e.column for e in kaggle.report.by_action("recomputed")}
    assert {"BMI", "FSH/LH", "Waist:Hip Ratio", "bmi_kg_m2"} <= recomputed


def test_cycle_codes_and_menses_duration(kaggle) -> None:
    t = kaggle.patients
    assert set(t["cycle_irregular"].dropna()) == {0.0, 1.0}
    assert int((t["cycle_irregular"] == 1).sum()) == 151  # 150 code-4 rows and the code-5 row
    assert _entry(kaggle, "recoded", 513, "cycle_irregular")
    assert "cycle_length_days" not in t and "menses_duration_days" in t


def test_junk_column_dropped_and_labels_cross_checked(kaggle) -> None:
    (junk,) = kaggle.report.by_action("dropped_column")
    assert junk.column == "Unnamed: 44" and "row 181: '.'" in junk.message
    assert any("0 differ" in e.message for e in kaggle.report.by_action("note"))
    assert set(kaggle.summary()["ultrasound_features"]) >= {
        "follicle_count_left",
        "follicle_count_right",
    }


@pytest.mark.realdata
def test_ultrasound_folders_load_every_image() -> None:
    cohort = load_cohort(REPO / "configs" / "pcos-kaggle-ultrasound.yaml")
    assert len(cohort.images) == 3849
    assert cohort.images.groupby("label").size().to_dict() == {0: 2286, 1: 1563}
    assert len(cohort.patients) == 3849  # no ids: every file is its own patient
    assert set(cohort.images["file_format"]) == {"JPEG", "PNG"}
    assert {"rgb", "gray"} <= set(cohort.images["color_mode"])


@pytest.mark.realdata
def test_chest_xray_sample_loads_with_patients_and_views() -> None:
    cohort = load_cohort(REPO / "configs" / "chestxr8.yaml")
    assert len(cohort.images) == 1860
    assert cohort.patients["patient_id"].is_unique
    assert len(cohort.patients) < len(cohort.images)  # several images per patient
    assert set(cohort.images["view"]) == {"PA", "AP"}
    assert cohort.feature_columns == ["patient_age", "sex_male", "view_ap_fraction"]
    assert 0 < cohort.patients["label"].mean() < 0.5
    # The share of a patient's films taken AP, from the images table.
    ap = cohort.images.assign(ap=cohort.images["view"] == "AP").groupby("patient_id")["ap"].mean()
    patients = cohort.patients.set_index("patient_id")
    assert (patients["view_ap_fraction"] == ap.reindex(patients.index)).all()


@pytest.mark.realdata
def test_chest_xray_any_finding_label_and_its_shortcuts() -> None:
    """The data README warns that 'No Finding' patients are older and more often PA: the audit
    must flag age and the acquisition fields for this label."""
    from deeppcos.audit.checks import audit_cohort

    cohort = load_cohort(REPO / "configs" / "chestxr8-any-finding.yaml")
    no_finding = cohort.images["label"] == 0
    assert no_finding.sum() > 0 and (~no_finding).sum() > 0
    result = audit_cohort(cohort)
    flagged = {f.check for f in result.findings if f.severity in ("warning", "high")}
    assert "shortcut.patient_age" in flagged
    assert result.by_check("shortcut.all_properties")[0].severity == "high"


# --- PCOSGen ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pcosgen():
    return load_cohort(REPO / "configs" / "pcosgen.yaml")


def test_pcosgen_loads_with_its_conflicting_copies_left_out(pcosgen) -> None:
    """3,200 frames; 32 pairs of byte-identical frames labelled both ways are left out, each
    copy listed; 'Healthy' = 1 becomes label 0 (the label is 'unhealthy')."""
    copies = pcosgen.report.by_action("conflicting_copy")
    assert len(copies) == 64 and all(e.level == "excluded" for e in copies)
    assert len(pcosgen.images) == len(pcosgen.patients) == 3200 - 64
    assert pcosgen.patients["label"].value_counts().to_dict() == {1: 2265, 0: 871}
    assert pcosgen.spec.label_name == "unhealthy"


def test_pcosgen_audit_reports_the_copies_and_the_video_frame_clusters(pcosgen) -> None:
    from deeppcos.audit.checks import audit_cohort, duplicate_patient_groups
    from deeppcos.pipeline.training import development_split

    result = audit_cohort(pcosgen, seed=0)
    findings = {f.check: f for f in result.findings}
    copies = findings["labels.conflicting_copies"]
    assert copies.severity == "high" and copies.figures["excluded"] == 64
    assert findings["near.phash"].severity == "high"
    # Near-copies of different frames carry opposite labels as often as chance would have it.
    agreement = findings["labels.near_copy_agreement"]
    assert agreement.severity == "high" and agreement.figures["label_consistency"] < 0.1
    # At the config's 8 bits the neighbouring frames of a video share a group; never split.
    groups = duplicate_patient_groups(pcosgen, near_duplicate_threshold=8)
    assert groups.nunique() < groups.size / 5
    from deeppcos.config import load_config

    split, linked = development_split(load_config(REPO / "configs" / "pcosgen.yaml"), pcosgen)
    parts = split.assignments.reindex(linked.index)
    assert (parts.groupby(linked).nunique() == 1).all()
    # The config sets aside the three long uterus videos labelled both ways frame by frame:
    # their near-copies disagree as often as chance; no other group comes close.
    assert [r["patients"] for r in split.label_noise] == [643, 467, 461]
    assert all(abs(r["label_consistency"]) < 0.1 for r in split.label_noise)
    assert len(split.set_aside_ids) == 1571
    assert not set(split.set_aside_ids) & set(split.development_ids + split.test_ids)
    noisy = findings["labels.near_copy_agreement"].figures["noisy_groups"]
    assert noisy and sum(g["patients"] for g in noisy) <= 1571  # 2-bit fragments of the videos


def test_the_kaggle_ultrasound_set_has_no_label_noise_group() -> None:
    """Its copies are augmentations of a few scans, each labelled once: consistent groups."""
    from deeppcos.audit.checks import duplicate_links
    from deeppcos.audit.label_noise import group_label_consistency

    kaggle_us = load_cohort(REPO / "configs" / "pcos-kaggle-ultrasound.yaml")
    links = duplicate_links(kaggle_us)
    labels = kaggle_us.patients.set_index("patient_id")["label"]
    table = group_label_consistency(links.pairs, links.image_patients, links.groups, labels)
    assert table["pairs"].sum() > 1000 and not table["noisy"].any()


@pytest.mark.slow
def test_pcosgen_frames_reappear_in_the_kaggle_ultrasound_set(pcosgen) -> None:
    """The shared data's README: some PCOSGen frames also occur, re-encoded, in the Kaggle
    ultrasound set, some with opposite labels (measured: 400 near-copy pairs, 216 disagree)."""
    from deeppcos.audit.cross import cross_audit

    kaggle_us = load_cohort(REPO / "configs" / "pcos-kaggle-ultrasound.yaml")
    result = cross_audit(pcosgen, kaggle_us).summary()
    assert result["images_of_a_with_a_copy_in_b"] >= 150
    assert result["labels"]["labels_disagree"] >= 100
    assert result["labels"]["labels_agree"] >= 100
