"""Plain-language names, values and units for reports, from the built-in feature catalog."""

from __future__ import annotations

import math

from deeppcos.data.catalog import CATALOG

__all__ = ["display_unit", "feature_label", "format_percent", "format_value", "typical_range"]

# Short names clinicians use; everything else takes the catalog's description.
SHORT_NAMES: dict[str, str] = {
    "age_years": "Age",
    "bmi_kg_m2": "BMI",
    "waist_hip_ratio": "Waist-to-hip ratio",
    "cycle_irregular": "Irregular cycles",
    "cycle_length_days": "Cycle length",
    "lh_iu_l": "LH",
    "fsh_iu_l": "FSH",
    "lh_fsh_ratio": "LH/FSH ratio",
    "amh_ng_ml": "AMH",
    "total_testosterone_nmol_l": "Total testosterone",
    "free_testosterone_pg_ml": "Free testosterone",
    "shbg_nmol_l": "SHBG",
    "free_androgen_index": "Free androgen index",
    "dheas_ug_dl": "DHEA-S",
    "tsh_miu_l": "TSH",
    "prolactin_ng_ml": "Prolactin",
    "fasting_glucose_mg_dl": "Fasting glucose",
    "fasting_insulin_uiu_ml": "Fasting insulin",
    "homa_ir": "HOMA-IR",
    "vitamin_d_25oh_ng_ml": "Vitamin D (25-OH)",
    "progesterone_ng_ml": "Progesterone",
    "hirsutism_mfg_score": "Hirsutism (mFG score)",
    "hair_growth": "Excess hair growth",
    "systolic_bp_mmhg": "Systolic blood pressure",
    "diastolic_bp_mmhg": "Diastolic blood pressure",
    "follicle_count_left": "Follicle count, left ovary",
    "follicle_count_right": "Follicle count, right ovary",
    "follicle_count_max": "Follicle count, larger ovary",
    "follicle_count_total": "Follicle count, both ovaries",
    "ovarian_volume_left_ml": "Ovarian volume, left",
    "ovarian_volume_right_ml": "Ovarian volume, right",
}

# UCUM codes as a reader writes them; "" for dimensionless and annotation-only units.
_UNITS: dict[str, str] = {
    "a": "years",
    "d": "days",
    "1": "",
    "{score}": "",
    "{count}": "",
    "kg/m2": "kg/m²",
    "mm[Hg]": "mmHg",
    "[IU]/L": "IU/L",
    "m[IU]/L": "mIU/L",
    "m[IU]/mL": "mIU/mL",
    "u[IU]/mL": "µIU/mL",
    "ug/dL": "µg/dL",
}


def feature_label(name: str) -> str:
    """A short readable name: the clinical abbreviation where one is usual, else the
    catalog's description, else the column name with underscores as spaces."""
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    feature = CATALOG.get(name)
    if feature is not None:
        return feature.description.split(" (")[0].split(",")[0]
    return name.replace("_", " ")


def display_unit(name: str) -> str:
    feature = CATALOG.get(name)
    if feature is None:
        return ""
    return _UNITS.get(feature.unit, feature.unit)


def typical_range(name: str) -> str:
    feature = CATALOG.get(name)
    return feature.typical if feature is not None else ""


def format_value(name: str, value: float | None) -> str:
    """``11.2 ng/mL``, ``yes``/``no`` for flags, ``not measured`` for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not measured"
    feature = CATALOG.get(name)
    kind = feature.kind if feature is not None else "continuous"
    if kind == "binary":
        return "yes" if value >= 0.5 else "no"
    if kind in ("count", "score", "categorical") and float(value).is_integer():
        text = str(int(value))
    else:
        text = _significant(value)
    unit = display_unit(name)
    return f"{text} {unit}" if unit else text


def _significant(value: float, digits: int = 3) -> str:
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def format_percent(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    percent = 100.0 * p
    if 0 < percent < 1:
        return "<1%"
    if 99 < percent < 100:
        return ">99%"
    return f"{percent:.0f}%"
