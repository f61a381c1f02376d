"""The Kaggle "Polycystic ovary syndrome (PCOS)" table (541 women, Kerala), cleaned loudly.

What this loader does, each step recorded in the load report by row and column (reference:
``shared/clinical-reference.md`` §3):

* headers are stripped and mapped to catalog names (the source has stray spaces and typos);
* the unnamed 45th column (stray values '.' and 7) is dropped;
* the formula columns BMI, FSH/LH and Waist:Hip read back as '#NAME?' or stale cached values:
  they are dropped and recomputed from their parts (``lh_fsh_ratio`` = LH ÷ FSH, the clinical
  direction; the source stores FSH ÷ LH);
* hip and waist are in inches and become centimetres (× 2.54);
* ``Cycle(R/I)`` is recoded 2 → regular (0), 4 and 5 → irregular (1), the single 5 flagged;
* ``Cycle length(days)`` is *menses duration* (0–12 days), not the cycle interval, and is named
  ``menses_duration_days``;
* text in numeric cells ('a' in AMH, '1.99.' in β-hCG) becomes missing;
* values outside the catalog's plausible range are set missing (``range_policy: null``) or kept
  (``keep``); both are listed;
* β-hCG of exactly 1.99 is a below-detection placeholder: kept, and counted in the report.

The row number in the report is the source's ``Sl. No`` (the 1-based data row).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from deeppcos.data.cohort import Cohort, build_patients
from deeppcos.data.report import LoadReport
from deeppcos.data.spec import CohortSpec, PatientsSpec
from deeppcos.data.tables import check_ranges, coerce_numeric, read_table
from deeppcos.exceptions import ConfigError, SchemaError
from deeppcos.knowledge.ranges import rules_for_spec

INCH_TO_CM = 2.54
BETA_HCG_PLACEHOLDER = 1.99

# Source header (whitespace collapsed) -> catalog name.
COLUMN_MAP: dict[str, str] = {
    "Patient File No.": "patient_id",
    "PCOS (Y/N)": "pcos",
    "Age (yrs)": "age_years",
    "Weight (Kg)": "weight_kg",
    "Height(Cm)": "height_cm",
    "Blood Group": "blood_group",
    "Pulse rate(bpm)": "pulse_rate_bpm",
    "RR (breaths/min)": "respiratory_rate_per_min",
    "Hb(g/dl)": "haemoglobin_g_dl",
    "Cycle(R/I)": "cycle_irregular",
    "Cycle length(days)": "menses_duration_days",
    "Marraige Status (Yrs)": "marriage_years",
    "Pregnant(Y/N)": "pregnant",
    "No. of aborptions": "abortions_count",
    "I beta-HCG(mIU/mL)": "beta_hcg_1_miu_ml",
    "II beta-HCG(mIU/mL)": "beta_hcg_2_miu_ml",
    "FSH(mIU/mL)": "fsh_iu_l",
    "LH(mIU/mL)": "lh_iu_l",
    "Hip(inch)": "hip_circumference_cm",
    "Waist(inch)": "waist_circumference_cm",
    "TSH (mIU/L)": "tsh_miu_l",
    "AMH(ng/mL)": "amh_ng_ml",
    "PRL(ng/mL)": "prolactin_ng_ml",
    "Vit D3 (ng/mL)": "vitamin_d_25oh_ng_ml",
    "PRG(ng/mL)": "progesterone_ng_ml",
    "RBS(mg/dl)": "random_blood_sugar_mg_dl",
    "Weight gain(Y/N)": "weight_gain",
    "hair growth(Y/N)": "hair_growth",
    "Skin darkening (Y/N)": "acanthosis_nigricans",
    "Hair loss(Y/N)": "alopecia",
    "Pimples(Y/N)": "acne",
    "Fast food (Y/N)": "fast_food",
    "Reg.Exercise(Y/N)": "regular_exercise",
    "BP _Systolic (mmHg)": "systolic_bp_mmhg",
    "BP _Diastolic (mmHg)": "diastolic_bp_mmhg",
    "Follicle No. (L)": "follicle_count_left",
    "Follicle No. (R)": "follicle_count_right",
    "Avg. F size (L) (mm)": "mean_follicle_diameter_left_mm",
    "Avg. F size (R) (mm)": "mean_follicle_diameter_right_mm",
    "Endometrium (mm)": "endometrial_thickness_mm",
}
# Spreadsheet formulas with no usable cached values: recomputed, never read.
FORMULA_COLUMNS = {
    "BMI": "bmi_kg_m2",
    "FSH/LH": "lh_fsh_ratio",
    "Waist:Hip Ratio": "waist_hip_ratio",
}
ROW_NUMBER_COLUMN = "Sl. No"
DERIVED = {
    "bmi_kg_m2": lambda t: t["weight_kg"] / (t["height_cm"] / 100.0) ** 2,
    "waist_hip_ratio": lambda t: t["waist_circumference_cm"] / t["hip_circumference_cm"],
    "lh_fsh_ratio": lambda t: t["lh_iu_l"] / t["fsh_iu_l"],
}
CYCLE_CODES = {2: 0, 4: 1, 5: 1}
# The Kaggle description's blood-group codes (clinical-reference §3.1): a category, not a number.
BLOOD_GROUPS = {11: "A+", 12: "A-", 13: "B+", 14: "B-", 15: "O+", 16: "O-", 17: "AB+", 18: "AB-"}


def load_kaggle_pcos(spec: CohortSpec) -> Cohort:
    pspec = spec.patients
    if pspec is None or pspec.path is None:
        raise ConfigError(f"cohort spec {spec.name!r}: kaggle-pcos needs patients.path (the .xlsx)")
    path = spec.resolve(pspec.path)
    assert path is not None
    file = str(path)
    report = LoadReport()
    raw = read_table(path, pspec.sheet or "Full_new")
    raw = _normalise_headers(raw, report, file)
    raw = _drop_formula_columns(raw, report, file)
    _convert_inches(raw, report, file)
    _recode_cycle(raw, report, file)
    _recode_blood_group(raw, report, file)
    features = [c for c in COLUMN_MAP.values() if c not in ("patient_id", "pcos")]
    internal = spec.model_copy(
        update={
            "patients": PatientsSpec(
                id_column="patient_id",
                # New patients to score come in the same layout without the diagnosis column.
                label_column="pcos" if "pcos" in raw else None,
                feature_columns=features,
                categorical={"blood_group": list(BLOOD_GROUPS.values())},
                group_column=pspec.group_column,
            )
        }
    )
    cohort = build_patients(raw, internal, report, file)
    cohort.spec = spec
    _recompute_derived(cohort, report, file, spec.range_policy)
    _note_placeholders(cohort.patients, report, file)
    _cross_check_infertility_csv(spec, cohort, raw, report)
    return cohort


def _collapse(header: str) -> str:
    return re.sub(r"\s+", " ", header).strip()


def _normalise_headers(raw: pd.DataFrame, report: LoadReport, file: str) -> pd.DataFrame:
    raw = raw.rename(columns=_collapse)
    if ROW_NUMBER_COLUMN in raw:
        # Sl. No is the row users see in the spreadsheet; use it for every report entry.
        numbers = pd.to_numeric(raw[ROW_NUMBER_COLUMN], errors="coerce")
        if numbers.notna().all() and numbers.is_unique:
            raw.index = pd.Index(numbers.astype(int), name="row")
        raw = raw.drop(columns=ROW_NUMBER_COLUMN)
    if "Patient File No." not in raw:
        raise SchemaError(
            f"{file}: not the Kaggle PCOS table: missing 'Patient File No.'; found "
            f"{list(raw.columns)}"
        )
    for column in list(raw.columns):
        if column in COLUMN_MAP or column in FORMULA_COLUMNS:
            continue
        values = raw[column].dropna()
        values = values[values.astype(str).str.strip() != ""]
        detail = ", ".join(f"row {r}: {v!r}" for r, v in values.head(5).items()) or "all empty"
        report.add(
            "warning",
            "dropped_column",
            f"unknown/junk column dropped ({detail})",
            file=file,
            column=column,
        )
        raw = raw.drop(columns=column)
    # The diagnosis may be absent from new patients to score; every feature column must be there.
    absent = [c for c in COLUMN_MAP if c not in raw and c != "PCOS (Y/N)"]
    if absent:
        raise SchemaError(f"{file}: Kaggle PCOS columns missing: {absent}")
    for source, target in COLUMN_MAP.items():
        if source != target and target not in ("patient_id", "pcos"):
            report.add("info", "renamed", f"renamed to {target!r}", file=file, column=source)
    return raw.rename(columns=COLUMN_MAP)


def _drop_formula_columns(raw: pd.DataFrame, report: LoadReport, file: str) -> pd.DataFrame:
    for column, target in FORMULA_COLUMNS.items():
        if column not in raw:
            continue
        unreadable = raw[column].astype(str).str.startswith("#").sum()
        report.add(
            "info",
            "recomputed",
            f"spreadsheet formula column ({unreadable} of {len(raw)} cells unreadable, e.g. "
            f"'#NAME?'); dropped and recomputed from its parts as {target!r}",
            file=file,
            column=column,
        )
        raw = raw.drop(columns=column)
    return raw


def _convert_inches(raw: pd.DataFrame, report: LoadReport, file: str) -> None:
    for column in ("hip_circumference_cm", "waist_circumference_cm"):
        raw[column] = coerce_numeric(raw, column, report, file) * INCH_TO_CM
        report.add("info", "converted", "inches × 2.54 → cm", file=file, column=column)


def _recode_cycle(raw: pd.DataFrame, report: LoadReport, file: str) -> None:
    codes = coerce_numeric(raw, "cycle_irregular", report, file)
    recoded = codes.map(lambda c: CYCLE_CODES.get(int(c)) if pd.notna(c) else np.nan)
    for row, code in codes[codes.notna() & ~codes.isin(list(CYCLE_CODES))].items():
        report.add(
            "warning",
            "coerced",
            "unknown cycle code; set to missing",
            file=file,
            row=row,
            column="cycle_irregular",
            found=code,
            expected="2 (regular) or 4 (irregular)",
        )
    for row in codes[codes == 5].index:
        report.add(
            "warning",
            "recoded",
            "cycle code 5 (outlier code) read as irregular",
            file=file,
            row=row,
            column="cycle_irregular",
            found=5,
            expected="2 (regular) or 4 (irregular)",
        )
    report.add(
        "info",
        "recoded",
        "Cycle(R/I): 2 → 0 (regular), 4 → 1 (irregular)",
        file=file,
        column="cycle_irregular",
    )
    raw["cycle_irregular"] = recoded.astype("float64")


def _recode_blood_group(raw: pd.DataFrame, report: LoadReport, file: str) -> None:
    """Codes 11–18 → A+ … AB-; an unknown code stays as found (the categorical reader then
    reports it and sets it missing)."""
    codes = pd.to_numeric(raw["blood_group"], errors="coerce")
    labels = codes.map(lambda c: BLOOD_GROUPS.get(int(c)) if pd.notna(c) else None)
    raw["blood_group"] = labels.where(labels.notna(), raw["blood_group"])
    report.add(
        "info",
        "recoded",
        "Blood Group: 11 → A+, 12 → A-, 13 → B+, 14 → B-, 15 → O+, 16 → O-, 17 → AB+, 18 → AB-"
        " (a categorical feature)",
        file=file,
        column="blood_group",
    )


def _recompute_derived(cohort: Cohort, report: LoadReport, file: str, policy: str) -> None:
    table = cohort.patients
    for name, formula in DERIVED.items():
        table[name] = formula(table).replace([np.inf, -np.inf], np.nan)
        report.add(
            "info",
            "recomputed",
            "computed from its parts after range checks",
            file=file,
            column=name,
        )
    check_ranges(
        table, report, file, policy, list(DERIVED), rules_for_spec(cohort.spec, list(DERIVED))
    )
    cohort.feature_columns = cohort.feature_columns + list(DERIVED)


def _note_placeholders(table: pd.DataFrame, report: LoadReport, file: str) -> None:
    for column in ("beta_hcg_1_miu_ml", "beta_hcg_2_miu_ml"):
        count = int((table[column] == BETA_HCG_PLACEHOLDER).sum())
        if count:
            report.add(
                "info",
                "note",
                f"{count} rows hold exactly 1.99, a below-detection "
                "placeholder (<2 mIU/mL); kept as 1.99",
                file=file,
                column=column,
            )


def _cross_check_infertility_csv(
    spec: CohortSpec, cohort: Cohort, raw: pd.DataFrame, report: LoadReport
) -> None:
    """The companion CSV lines up by Sl. No (row), not by file number: compare its label."""
    extra = spec.resolve(spec.options.get("infertility_csv"))
    if extra is None:
        return
    other = read_table(extra)
    other.columns = [_collapse(c) for c in other.columns]
    if "Sl. No" not in other or "PCOS (Y/N)" not in other:
        raise SchemaError(f"{extra}: expected columns 'Sl. No' and 'PCOS (Y/N)'")
    other_label = pd.to_numeric(other.set_index(pd.to_numeric(other["Sl. No"]))["PCOS (Y/N)"])
    ours = cohort.patients["label"]
    common = ours.index.intersection(other_label.index)
    differ = common[ours.loc[common].astype(float).values != other_label.loc[common].values]
    for row in differ:
        report.add(
            "warning",
            "note",
            f"label differs from {extra.name}",
            file=str(extra),
            row=int(row),
            column="PCOS (Y/N)",
            found=other_label.loc[row],
        )
    report.add(
        "info",
        "note",
        f"cross-checked labels with {extra.name}: {len(common)} rows "
        f"matched by Sl. No, {len(differ)} differ",
        file=str(extra),
    )
