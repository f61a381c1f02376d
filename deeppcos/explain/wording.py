"""Plain-language names, values and units for reports, from the built-in feature catalog, and
the cohort's own words (:class:`CohortWords`): what its label and its images are called."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeppcos.exceptions import DeepPCOSError
from deeppcos.knowledge.catalog import CATALOG
from deeppcos.runs.reader import Run
from deeppcos.runs.records import RunMetrics

__all__ = [
    "CohortWords",
    "display_unit",
    "feature_label",
    "format_percent",
    "format_value",
    "run_words",
    "typical_range",
]


@dataclass(frozen=True)
class CohortWords:
    """What a cohort's label and images are called in reports and pages.

    ``label_name``, ``pcos`` and ``image_modality`` as a run's ``metrics.json`` (and its
    ``cohort.json``) record them from the cohort spec. The defaults are a PCOS cohort of
    ultrasound images, which is also how a run trained before these keys existed is read.
    """

    label_name: str = "pcos"
    pcos: bool = True
    image_modality: str = "ultrasound"

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None, spec: Any = None) -> CohortWords:
        """From a run's ``metrics.json``/``cohort.json`` (``label_name``, ``pcos``,
        ``image_modality``). A key that is absent takes the PCOS defaults: ``pcos`` is whether
        the label is 'pcos', the modality 'ultrasound' for a PCOS cohort, else 'image'.
        ``spec`` (a ``CohortSpec``) gives the label's name when the record has none."""
        record = record or {}
        label = record.get("label_name") or getattr(spec, "label_name", None) or "pcos"
        label = str(label).strip() or "pcos"
        pcos = record.get("pcos")
        pcos = bool(pcos) if isinstance(pcos, bool) else label.lower() == "pcos"
        modality = str(record.get("image_modality") or "").strip()
        return cls(label, pcos, modality or ("ultrasound" if pcos else "image"))

    @classmethod
    def from_spec(cls, spec: Any) -> CohortWords:
        """From a ``CohortSpec`` (its ``label_name``, ``is_pcos`` and ``modality``)."""
        return cls(str(spec.label_name), bool(spec.is_pcos), str(spec.modality))

    @property
    def label(self) -> str:
        """The label as a reader says it: 'PCOS', 'cardiomegaly', 'any finding'."""
        text = self.label_name.replace("_", " ").strip()
        return "PCOS" if text.lower() == "pcos" else text

    @property
    def a_label(self) -> str:
        """The label with its article: 'a PCOS', 'a cardiomegaly', 'an any finding'."""
        text = self.label
        return ("an " if text[:1].lower() in "aeiou" else "a ") + text

    @property
    def no_label(self) -> str:
        """Its negation: 'no PCOS', 'no cardiomegaly', 'no finding' (for 'any finding')."""
        text = self.label
        return "no " + (text[len("any ") :] if text.lower().startswith("any ") else text)

    @property
    def images(self) -> str:
        """'ultrasound images', 'chest X-ray images'; plain 'images' when the kind is unknown."""
        kind = self.image_modality.strip()
        if kind.lower() in ("", "image", "images"):
            return "images"
        if kind.lower().endswith(("image", "images")):
            return kind if kind.lower().endswith("images") else kind + "s"
        return f"{kind} images"

    @property
    def images_title(self) -> str:
        """'Ultrasound images', 'Chest X-ray images' (only the first letter raised)."""
        return _capital(self.images)

    @property
    def table(self) -> str:
        """The tabular data: 'laboratory data' in a PCOS cohort, else 'tabular data' (a chest
        X-ray cohort's table holds age, sex and view, not labs)."""
        return "laboratory data" if self.pcos else "tabular data"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_name": self.label_name,
            "pcos": self.pcos,
            "image_modality": self.image_modality,
        }


def run_words(run: Path | str | None, spec: Any = None) -> CohortWords:
    """The words of a run folder, from its metrics (else its cohort summary); the PCOS
    defaults for what neither records."""
    record: dict[str, Any] = {}
    if run is not None:
        folder = Run(Path(run))
        record.update(_words_fields(folder.cohort_summary()))
        # The metrics win where both say; without them (yet), the summary and the defaults.
        with contextlib.suppress(OSError, DeepPCOSError):
            record.update(_metrics_words(folder.metrics()))
    return CohortWords.from_record(record, spec)


def predictor_words(predictor: Any, spec: Any = None) -> CohortWords:
    """:func:`run_words` from what a loaded (or in-memory) predictor holds, without reading."""
    record = _words_fields(predictor.cohort_summary)
    if predictor.metrics is not None:  # the metrics win where both say
        record.update(_metrics_words(predictor.metrics))
    return CohortWords.from_record(record, spec)


def _metrics_words(metrics: RunMetrics) -> dict[str, Any]:
    modality = metrics.image_modality
    return {**metrics.words(), **({"image_modality": modality} if modality else {})}


def _words_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data[k] for k in ("label_name", "pcos", "image_modality") if k in data}


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


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
