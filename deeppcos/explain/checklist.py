"""A Rotterdam criteria checklist for one patient, from the table data present.

The states come from :func:`deeppcos.knowledge.criteria.label_criteria` on the patient's row (so the
thresholds, precedence rules and three-valued logic are the labeller's, not re-implemented here);
this module only adds the evidence in words — which recorded values the rule read, which were
not recorded — for a report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from deeppcos.explain.wording import feature_label, format_value

__all__ = ["CriteriaChecklist", "CriterionCheck", "criteria_checklist"]

# (result column, title, the columns the labeller reads for it)
_ITEMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "ovulatory_dysfunction",
        "Ovulatory dysfunction",
        ("cycle_irregular", "cycle_length_days"),
    ),
    (
        "hyperandrogenism_clinical",
        "Hyperandrogenism, clinical",
        ("hirsutism_mfg_score", "hair_growth"),
    ),
    (
        "hyperandrogenism_biochemical",
        "Hyperandrogenism, biochemical",
        ("total_testosterone_nmol_l", "free_androgen_index"),
    ),
    ("hyperandrogenism", "Hyperandrogenism (clinical and/or biochemical)", ()),
    (
        "pcom",
        "Polycystic ovarian morphology (PCOM)",
        (
            "follicle_count_left",
            "follicle_count_right",
            "ovarian_volume_left_ml",
            "ovarian_volume_right_ml",
            "amh_ng_ml",
        ),
    ),
)


@dataclass
class CriterionCheck:
    key: str
    title: str
    state: str  # "met", "not met" or "unknown"
    rule: str
    evidence: list[str] = field(default_factory=list)


@dataclass
class CriteriaChecklist:
    guideline: str
    items: list[CriterionCheck]
    rotterdam_pcos: str  # "met" (≥ 2 of 3), "not met" or "unknown"
    n_met: int
    n_known: int
    phenotype: str | None
    severity: str | None
    caveats: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def criteria_checklist(
    row: pd.DataFrame, rules: Any = None, source_format: str | None = None
) -> CriteriaChecklist:
    """The checklist for a one-row patients table (canonical column names)."""
    from deeppcos.knowledge.criteria import CriteriaRules, label_criteria

    if len(row) != 1:
        raise ValueError(f"criteria_checklist takes one patient's row; got {len(row)} rows")
    rules = rules or CriteriaRules()
    result = label_criteria(row, rules, source_format=source_format)
    frame = result.frame.iloc[0]
    thresholds = result.rules
    items = [
        CriterionCheck(
            key=key,
            title=title,
            state=_state(frame[key]),
            rule=_rule(key, thresholds),
            evidence=_evidence_lines(row, [c for c in columns if _relevant(c, rules)]),
        )
        for key, title, columns in _ITEMS
    ]
    return CriteriaChecklist(
        guideline=str(thresholds["guideline"]),
        items=items,
        rotterdam_pcos=_state(frame["rotterdam_pcos"]),
        n_met=int(frame["n_criteria_met"]),
        n_known=int(frame["n_criteria_known"]),
        phenotype=None if pd.isna(frame["phenotype"]) else str(frame["phenotype"]),
        severity=None if pd.isna(frame["severity"]) else str(frame["severity"]),
        caveats=list(dict.fromkeys(result.caveats)),
    )


def _state(value: Any) -> str:
    if pd.isna(value):
        return "unknown"
    return "met" if bool(value) else "not met"


def _relevant(column: str, rules: Any) -> bool:
    if column == "free_androgen_index":
        return bool(rules.use_free_androgen_index)
    if column == "amh_ng_ml":
        return rules.amh_ng_ml_threshold is not None
    if column == "hair_growth":
        return bool(rules.use_hair_growth_proxy)
    return True


def _evidence_lines(row: pd.DataFrame, columns: list[str]) -> list[str]:
    """What was recorded for each column the table has; one line when it has none of them."""
    present = [c for c in columns if c in row]
    if columns and not present:
        names = ", ".join(feature_label(c) for c in columns)
        return [f"none of its measures is in this cohort's table ({names})"]
    return [_evidence(row, column) for column in present]


def _evidence(row: pd.DataFrame, column: str) -> str:
    label = feature_label(column)
    value = row[column].iloc[0]
    if pd.isna(value):
        return f"{label}: not recorded"
    return f"{label}: {format_value(column, float(value))}"


def _rule(key: str, t: dict[str, Any]) -> str:
    volume = "≥" if t["ovarian_volume_inclusive"] else ">"
    rules = {
        "ovulatory_dysfunction": (
            f"cycles shorter than {t['cycle_short_days']:g} or longer than "
            f"{t['cycle_long_days']:g} days, or recorded as irregular"
        ),
        "hyperandrogenism_clinical": f"modified Ferriman–Gallwey score ≥ {t['hirsutism_mfg']:g}"
        + (
            "; self-reported excess hair growth where no score"
            if t["use_hair_growth_proxy"]
            else ""
        ),
        "hyperandrogenism_biochemical": (
            f"total testosterone > {t['total_testosterone_upper_nmol_l']:g} nmol/L"
            + (
                f", or free androgen index > {t['free_androgen_index_upper']:g}"
                if t["use_free_androgen_index"]
                else ""
            )
        ),
        "hyperandrogenism": "either of the two above",
        "pcom": (
            f"≥ {t['pcom_follicles_per_ovary']} follicles in at least one ovary, or ovarian "
            f"volume {volume} {t['ovarian_volume_ml']:g} mL"
            + (
                f", or AMH > {t['amh_ng_ml_threshold']:g} ng/mL"
                if t.get("amh_ng_ml_threshold") is not None
                else ""
            )
        ),
    }
    return rules[key]
