"""The synthetic cohort: files, determinism, Rotterdam consistency, plausible values, missingness
and images that carry the follicle count."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from deeppcos.data.synthetic import SEVERITY_LEVELS, generate_cohort

FEATURES = [
    "age_years", "weight_kg", "height_cm", "bmi_kg_m2", "waist_circumference_cm",
    "hip_circumference_cm", "waist_hip_ratio", "cycle_irregular", "cycle_length_days", "lh_iu_l",
    "fsh_iu_l", "lh_fsh_ratio", "amh_ng_ml", "total_testosterone_nmol_l", "shbg_nmol_l",
    "free_androgen_index", "tsh_miu_l", "prolactin_ng_ml", "fasting_glucose_mg_dl",
    "fasting_insulin_uiu_ml", "vitamin_d_25oh_ng_ml", "progesterone_ng_ml", "hirsutism_mfg_score",
    "acne", "acanthosis_nigricans", "weight_gain", "alopecia", "systolic_bp_mmhg",
    "diastolic_bp_mmhg",
]  # fmt: skip
ULTRASOUND = [
    "follicle_count_left", "follicle_count_right", "ovarian_volume_left_ml",
    "ovarian_volume_right_ml",
]  # fmt: skip
TRUTH = [
    "patient_id", "ovulatory_dysfunction", "hyperandrogenism", "pcom", "phenotype", "fnpo_left",
    "fnpo_right", "ovarian_volume_left_ml", "ovarian_volume_right_ml",
]  # fmt: skip

# Plausible ranges ("values outside are almost certainly entry or unit errors") from
# /work/shared/clinical-reference.md §1a-1e. Binary columns are checked separately.
PLAUSIBLE = {
    "age_years": (10, 60),
    "weight_kg": (25, 250),
    "height_cm": (120, 210),
    "bmi_kg_m2": (10, 80),
    "waist_circumference_cm": (45, 180),
    "hip_circumference_cm": (50, 200),
    "waist_hip_ratio": (0.5, 1.5),
    "systolic_bp_mmhg": (60, 260),
    "diastolic_bp_mmhg": (30, 160),
    "cycle_length_days": (10, 365),
    "lh_iu_l": (0, 250),
    "fsh_iu_l": (0, 250),
    "lh_fsh_ratio": (0.05, 20),
    "amh_ng_ml": (0.01, 30),
    "total_testosterone_nmol_l": (0, 15),
    "shbg_nmol_l": (2, 300),
    "free_androgen_index": (0, 60),
    "tsh_miu_l": (0.005, 150),
    "prolactin_ng_ml": (0.5, 1000),
    "fasting_glucose_mg_dl": (30, 600),
    "fasting_insulin_uiu_ml": (0.5, 300),
    "vitamin_d_25oh_ng_ml": (1, 150),
    "progesterone_ng_ml": (0.02, 60),
    "hirsutism_mfg_score": (0, 36),
    "follicle_count_left": (0, 100),
    "follicle_count_right": (0, 100),
    "ovarian_volume_left_ml": (0.5, 60),
    "ovarian_volume_right_ml": (0.5, 60),
}
BINARY = ["cycle_irregular", "acne", "acanthosis_nigricans", "weight_gain", "alopecia"]
SEVERITY_OF_PHENOTYPE = {"": "none", "D": "mild", "B": "moderate", "C": "moderate", "A": "severe"}


def _read(out: Path, name: str) -> pd.DataFrame:
    # keep_default_na=False so an empty phenotype stays "" rather than NaN.
    return pd.read_csv(out / name, keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def cohort300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cohort large enough for rates and averages; 64 px keeps it around a second."""
    out = tmp_path_factory.mktemp("syn300")
    generate_cohort(out, n_patients=300, seed=7, image_size=64, with_ultrasound_columns=True)
    return out


def test_writes_every_file_with_the_promised_columns(tmp_path: Path) -> None:
    spec_path = generate_cohort(tmp_path, n_patients=40, seed=1, image_size=64)

    assert spec_path == tmp_path / "cohort.yaml"
    patients = _read(tmp_path, "patients.csv")
    assert list(patients.columns) == ["patient_id", "pcos", "severity", "site", *FEATURES]
    assert len(patients) == 40 and patients["patient_id"].is_unique
    assert patients["patient_id"].iloc[0] == "SYN-00001"
    assert set(patients["site"]) <= {"site_a", "site_b", "site_c"}
    assert list(_read(tmp_path, "truth.csv").columns) == TRUTH

    images = _read(tmp_path, "images.csv")
    assert list(images.columns) == ["image_id", "patient_id", "path", "side"]
    assert images["image_id"].is_unique and set(images["side"]) <= {"left", "right"}
    assert set(images["patient_id"]) <= set(patients["patient_id"])
    for rel in images["path"]:
        assert rel.startswith("images/") and rel.endswith(".png")
        pixels = cv2.imread(str(tmp_path / rel), cv2.IMREAD_UNCHANGED)
        assert pixels.dtype == np.uint8 and pixels.shape == (64, 64)  # 8-bit grayscale
        assert pixels[0, 0] == 0 and pixels[0, -1] == 0  # black outside the fan
        assert pixels.max() > 60  # not blank


def test_cohort_yaml_is_the_documented_spec(tmp_path: Path) -> None:
    spec_path = generate_cohort(tmp_path, n_patients=12, seed=3, image_size=32)

    assert yaml.safe_load(spec_path.read_text(encoding="utf-8")) == {
        "name": "synthetic",
        "description": "Synthetic PCOS cohort (deeppcos generator, seed 3, 12 patients)",
        "format": "tables",
        "label_name": "pcos",
        "patients": {
            "path": "patients.csv",
            "id_column": "patient_id",
            "label_column": "pcos",
            "severity_column": "severity",
            "severity_levels": ["none", "mild", "moderate", "severe"],
            "group_column": "site",
        },
        "images": {
            "manifest": "images.csv",
            "root": ".",
            "path_column": "path",
            "patient_column": "patient_id",
            "side_column": "side",
        },
    }


def test_cohort_yaml_validates_as_a_cohort_spec(tmp_path: Path) -> None:
    from deeppcos.data.spec import load_spec

    spec = load_spec(generate_cohort(tmp_path, n_patients=5, seed=0, image_size=32))

    assert spec.patients is not None and spec.images is not None
    assert spec.patients.severity_levels == SEVERITY_LEVELS
    assert spec.resolve(spec.patients.path) == (tmp_path / "patients.csv").resolve()


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    generate_cohort(first, n_patients=20, seed=11, image_size=64)
    generate_cohort(second, n_patients=20, seed=11, image_size=64)

    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_different_seed_gives_a_different_cohort(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    generate_cohort(first, n_patients=20, seed=1, image_size=64)
    generate_cohort(second, n_patients=20, seed=2, image_size=64)

    assert (first / "patients.csv").read_bytes() != (second / "patients.csv").read_bytes()
    common = {p.name for p in (first / "images").iterdir()} & {
        p.name for p in (second / "images").iterdir()
    }
    assert common
    for name in common:
        assert (first / "images" / name).read_bytes() != (second / "images" / name).read_bytes()


def test_a_patient_does_not_depend_on_cohort_size(tmp_path: Path) -> None:
    generate_cohort(tmp_path / "small", n_patients=10, seed=5, image_size=32)
    generate_cohort(tmp_path / "large", n_patients=25, seed=5, image_size=32)

    small = (tmp_path / "small" / "patients.csv").read_text(encoding="utf-8").splitlines()
    large = (tmp_path / "large" / "patients.csv").read_text(encoding="utf-8").splitlines()
    assert small == large[: len(small)]
    for image in (tmp_path / "small" / "images").iterdir():
        assert image.read_bytes() == (tmp_path / "large" / "images" / image.name).read_bytes()


def test_labels_follow_rotterdam_and_the_phenotype_severity_map(cohort300: Path) -> None:
    patients = _read(cohort300, "patients.csv")
    truth = _read(cohort300, "truth.csv").fillna({"phenotype": ""})
    both = patients.merge(truth, on="patient_id", validate="one_to_one")
    criteria = both[["ovulatory_dysfunction", "hyperandrogenism", "pcom"]]

    assert (both["pcos"] == (criteria.sum(axis=1) >= 2).astype(int)).all()
    assert (both["severity"] == both["phenotype"].map(SEVERITY_OF_PHENOTYPE)).all()
    assert set(patients["severity"]) <= set(SEVERITY_LEVELS)
    pcos = both[both["pcos"] == 1]
    expected = {"A": (1, 1, 1), "B": (1, 1, 0), "C": (1, 0, 1), "D": (0, 1, 1)}
    for row in pcos.itertuples():
        assert expected[row.phenotype] == (
            row.hyperandrogenism,
            row.ovulatory_dysfunction,
            row.pcom,
        )
    assert set(pcos["phenotype"]) == {"A", "B", "C", "D"}


def test_pcom_matches_the_2023_ultrasound_definition(cohort300: Path) -> None:
    truth = _read(cohort300, "truth.csv")
    max_fnpo = truth[["fnpo_left", "fnpo_right"]].max(axis=1)
    max_volume = truth[["ovarian_volume_left_ml", "ovarian_volume_right_ml"]].max(axis=1)

    assert ((truth["pcom"] == 1) == (max_fnpo >= 20)).all()  # FNPO >= 20 in at least one ovary
    assert (max_volume[truth["pcom"] == 0] < 10).all()
    assert max_volume[truth["pcom"] == 1].mean() > max_volume[truth["pcom"] == 0].mean() + 3


def test_every_value_is_within_its_plausible_range(cohort300: Path) -> None:
    patients = _read(cohort300, "patients.csv")

    for column, (low, high) in PLAUSIBLE.items():
        values = patients[column].dropna()
        assert values.between(low, high).all(), f"{column}: {values.min()}..{values.max()}"
    for column in BINARY:
        assert set(patients[column].dropna().unique()) <= {0, 1}, column
    assert set(patients["pcos"]) == {0, 1}


def test_derived_columns_agree_with_their_inputs(cohort300: Path) -> None:
    p = _read(cohort300, "patients.csv")

    bmi = p["weight_kg"] / (p["height_cm"] / 100) ** 2
    assert ((p["bmi_kg_m2"] - bmi).abs().dropna() <= 0.051).all()
    fai = 100 * p["total_testosterone_nmol_l"] / p["shbg_nmol_l"]
    assert ((p["free_androgen_index"] - fai).abs().dropna() <= 0.006).all()
    ratio = p["lh_iu_l"] / p["fsh_iu_l"]
    assert ((p["lh_fsh_ratio"] - ratio).abs().dropna() <= 0.006).all()
    whr = p["waist_circumference_cm"] / p["hip_circumference_cm"]
    assert ((p["waist_hip_ratio"] - whr).abs().dropna() <= 0.0006).all()
    # A derived value is present exactly when both of its inputs are.
    assert (p["free_androgen_index"].isna() == fai.isna()).all()


def test_prevalence_and_label_shifts_are_sane(cohort300: Path) -> None:
    patients = _read(cohort300, "patients.csv")
    by_label = patients.groupby("pcos")

    assert 0.22 <= patients["pcos"].mean() <= 0.45
    assert (patients.loc[patients["pcos"] == 0, "severity"] == "none").all()
    means = by_label[["lh_fsh_ratio", "free_androgen_index", "bmi_kg_m2", "cycle_irregular"]].mean()
    assert (means.loc[1] > means.loc[0]).all()
    assert by_label["progesterone_ng_ml"].median()[1] < by_label["progesterone_ng_ml"].median()[0]


def test_amh_tracks_follicle_count(cohort300: Path) -> None:
    both = _read(cohort300, "patients.csv").merge(_read(cohort300, "truth.csv"), on="patient_id")

    amh_by_pcom = both.groupby("pcom")["amh_ng_ml"].mean()
    assert amh_by_pcom[1] > 1.3 * amh_by_pcom[0]
    total_fnpo = both["fnpo_left"] + both["fnpo_right"]
    assert both["amh_ng_ml"].corr(total_fnpo, method="spearman") > 0.3


def test_missingness_is_realistic(cohort300: Path) -> None:
    patients = _read(cohort300, "patients.csv")
    images = _read(cohort300, "images.csv")
    no_features = patients[FEATURES].isna().all(axis=1)
    has_images = patients["patient_id"].isin(images["patient_id"])

    assert no_features.any(), "some patients should have no tabular features"
    assert (~has_images).any(), "some patients should have no images"
    assert (no_features.to_numpy() & ~has_images.to_numpy()).sum() == 0  # one modality at least
    assert (images["patient_id"].value_counts() == 1).any(), "some patients have one image only"
    rates = patients.loc[~no_features, FEATURES].isna().mean()
    assert rates.between(0.005, 0.30).all(), rates[~rates.between(0.005, 0.30)]
    assert rates["amh_ng_ml"] > rates["tsh_miu_l"] and rates["fasting_insulin_uiu_ml"] > 0.1


def test_ultrasound_columns_are_optional_and_match_truth(cohort300: Path, tmp_path: Path) -> None:
    generate_cohort(tmp_path, n_patients=8, seed=7, image_size=32)
    assert not set(ULTRASOUND) & set(_read(tmp_path, "patients.csv").columns)

    both = _read(cohort300, "patients.csv").merge(_read(cohort300, "truth.csv"), on="patient_id")
    for side in ("left", "right"):
        seen = both[f"follicle_count_{side}"].notna()
        assert seen.mean() > 0.8
        counts = both.loc[seen, f"follicle_count_{side}"]
        assert (counts == both.loc[seen, f"fnpo_{side}"]).all()


def _dark_blob_count(pixels: np.ndarray) -> int:
    """Dark, compact regions inside the fan: a crude follicle counter."""
    fan = np.zeros_like(pixels)
    contours, _ = cv2.findContours(
        (pixels > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(fan, [max(contours, key=cv2.contourArea)], -1, 1, -1)
    fan = cv2.erode(fan, np.ones((3, 3), np.uint8), iterations=2).astype(bool)
    smooth = cv2.GaussianBlur(pixels, (3, 3), 0)
    dark = ((smooth < 0.35 * np.median(pixels[fan])) & fan).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=4)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return int(((areas >= 2) & (areas <= 0.01 * pixels.size)).sum())


def test_images_carry_the_follicle_count(tmp_path: Path) -> None:
    generate_cohort(tmp_path, n_patients=60, seed=4, image_size=128)
    images = _read(tmp_path, "images.csv").merge(_read(tmp_path, "truth.csv"), on="patient_id")
    fnpo = np.where(images["side"] == "left", images["fnpo_left"], images["fnpo_right"])
    blobs = [
        _dark_blob_count(cv2.imread(str(tmp_path / rel), cv2.IMREAD_GRAYSCALE))
        for rel in images["path"]
    ]

    assert pd.Series(blobs).corr(pd.Series(fnpo), method="spearman") > 0.3


def test_progress_reports_every_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_cohort(
        tmp_path, n_patients=10, seed=0, image_size=32, progress=lambda d, t: calls.append((d, t))
    )

    total = len(_read(tmp_path, "images.csv"))
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == list(range(total + 1))


def test_regenerating_a_smaller_cohort_removes_stale_images(tmp_path: Path) -> None:
    generate_cohort(tmp_path, n_patients=12, seed=0, image_size=32)
    (tmp_path / "images" / "notes.txt").write_text("kept", encoding="utf-8")
    generate_cohort(tmp_path, n_patients=4, seed=0, image_size=32)

    listed = set(_read(tmp_path, "images.csv")["path"])
    on_disk = {f"images/{p.name}" for p in (tmp_path / "images").glob("*.png")}
    assert on_disk == listed
    assert (tmp_path / "images" / "notes.txt").exists()  # files we did not write are left alone


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_patients": 0}, "n_patients"),
        ({"seed": -1}, "seed"),
        ({"image_size": 16}, "image_size"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_cohort(tmp_path, **kwargs)
