"""Rotterdam criteria, NIH-2012 phenotype and a severity grade, derived from a cohort's columns.

For cohorts that carry no severity label: each patient's three criteria (ovulatory dysfunction,
hyperandrogenism, polycystic ovarian morphology) are computed from whatever columns the table
has, then PCOS (at least two of three; Rotterdam 2003, kept by the 2023 guideline for adults),
the phenotype (A–D) and a severity grade. Every threshold comes from
``shared/clinical-reference.md`` and names its section; :class:`CriteriaRules` records which
guideline and which numbers a labelling used, and the result carries them.

Unknown is not "no"
-------------------
Each criterion is a nullable boolean: ``<NA>`` when the data needed to judge it are absent. A
column the table lacks and an empty cell are both "not measured". How the measures combine:

* **Alternative records of one finding** settle it when any is known: the ``cycle_irregular``
  flag and ``cycle_length_days`` describe the same cycles; total testosterone and the free
  androgen index both measure circulating androgen; the follicle count, the ovarian volume and
  (opt-in) AMH are alternative tests of one morphology criterion (§2.4: "PCOM on ultrasound OR
  elevated AMH"). Any positive record → met; otherwise any negative one → not met.
* **Precedence** where the reference ranks the measures: the mFG score before the binary
  ``hair_growth`` stand-in (§3.2); under the 2023 guideline FNPO before ovarian volume, which is
  for "when FNPO cannot be assessed" (§2.4, rec 1.4.5).
* **Distinct findings joined by "and/or"** (clinical and biochemical hyperandrogenism, §2.2) are
  combined with three-valued logic: met if either is met, not met only when both are known to be
  absent. A woman without hirsutism whose androgens were never measured has *unknown*
  hyperandrogenism, so on a table with no androgen column, "no hair growth" leaves HA unknown.
* **One ovary is enough** (§2.2): an ovary at or over threshold makes the ovary test positive;
  the test is negative only when both ovaries were measured and neither qualifies.

``rotterdam_pcos`` is True with two criteria met, False only when two cannot be reached even if
every unknown criterion were met, and ``<NA>`` otherwise. The phenotype needs all three criteria
known; so does the severity grade of a PCOS patient (A and B, or A and D, differ in grade).

What this is not
----------------
Not a diagnosis: the exclusions (thyroid disease, hyperprolactinaemia, non-classic CAH; §2.2,
§2.6) are not applied, and hormonal contraception invalidates androgen and PCOM assessment
(§2.6). Adult criteria only (adolescents need both HA and OD; no ultrasound or AMH, §2.4).

Leakage
-------
A model trained on these derived labels must not see the columns that made them, or it simply
relearns the rule: ``CriteriaResult.columns_used`` lists what was read, and
``CriteriaResult.exclude_from_inputs`` adds the catalog features derived from them (e.g.
``follicle_count_max``). Images that show the follicles carry the PCOM criterion too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

import numpy as np
import pandas as pd

from deeppcos.exceptions import ConfigError, SchemaError
from deeppcos.knowledge.catalog import CATALOG

if TYPE_CHECKING:
    from deeppcos.data.cohort import Cohort

__all__ = [
    "CRITERIA_COLUMNS",
    "GUIDELINES",
    "PHENOTYPES",
    "SEVERITY_LEVELS",
    "CriteriaResult",
    "CriteriaRules",
    "criteria_summary",
    "is_guideline",
    "label_cohort",
    "label_criteria",
]

Guideline = Literal["rotterdam-2003", "2023-international"]
GUIDELINES: tuple[Guideline, ...] = ("rotterdam-2003", "2023-international")


def is_guideline(value: object) -> TypeGuard[Guideline]:
    """Whether ``value`` names one of ``GUIDELINES`` (narrows a user's text to a Guideline)."""
    return value in GUIDELINES


# --- thresholds, each from shared/clinical-reference.md ------------------------------------

# FNPO (2–9 mm follicles per ovary): ≥12 in Rotterdam 2003 (§2.2, §1d ✅); ≥20 in at least one
# ovary in the 2018/2023 guideline (§2.4, §1d 🟡: quoted by one source, paraphrased by another).
PCOM_FNPO: dict[str, int] = {"rotterdam-2003": 12, "2023-international": 20}
# Ovarian volume: 2003 wording ">10 cm³" (§2.2 ✅), later guidance "≥10 mL" (§2.4, §1d). The
# reference asks us to pick one and document it: each guideline gets its own wording.
OVARIAN_VOLUME_ML = 10.0
OVARIAN_VOLUME_INCLUSIVE: dict[str, bool] = {"rotterdam-2003": False, "2023-international": True}
# mFG hirsutism: 2023 "≥4–6, varies with ethnicity" (§1e ✅ via P-PUP). With the ethnicity
# unknown we take the top of that range, 6, to keep false positives down; the South-Indian
# cut-off 5 (§1e, IJEM 2024 ✅) fits the Kerala (Kaggle) data and is offered as a constant.
# Rotterdam 2003 gives no number of its own; the reference's historic cut-off is ≥8 (§1e ✅).
MFG_2023_DEFAULT = 6.0
MFG_SOUTH_INDIAN = 5.0
MFG_HISTORIC = 8.0
MFG_DEFAULT: dict[str, float] = {"rotterdam-2003": MFG_HISTORIC, "2023-international": 6.0}
# Irregular cycles: <21 or >35 days, 2023 guideline, from 3 years after menarche (§1b 🟡). The
# reference gives no day cut-off for 2003, so the 2023 rule is used there too (a caveat says so).
CYCLE_SHORT_DAYS = 21.0
CYCLE_LONG_DAYS = 35.0
# Total testosterone: 95th centile for a 30-year-old woman is 1.6 nmol/L (15–46 ng/dL =
# 0.52–1.6 nmol/L, Braunstein 2011, §1b ✅). Assay-dependent (LC-MS/MS preferred): prefer the
# reporting lab's own upper limit where known.
TESTOSTERONE_UPPER_NMOL_L = 1.6
# Free androgen index: premenopausal 0.5–6.5 from a low-weight calculator page (§1c 🟡), so it
# is used only when the caller opts in.
FAI_UPPER = 6.5

SEVERITY_LEVELS = ["none", "mild", "moderate", "severe"]  # as deeppcos.data.synthetic
PHENOTYPES = ["A", "B", "C", "D"]
# (HA, OD, PCOM) -> phenotype, NIH 2012 nomenclature (§2.5 ✅).
_PHENOTYPE_OF: dict[tuple[bool, bool, bool], str] = {
    (True, True, True): "A",
    (True, True, False): "B",
    (True, False, True): "C",
    (False, True, True): "D",
}
# The synthetic generator's convention (docs/synthetic-cohort.md §2), not a clinical grading.
_SEVERITY_OF: dict[str, str] = {"A": "severe", "B": "moderate", "C": "moderate", "D": "mild"}

CRITERIA_COLUMNS = [
    "ovulatory_dysfunction",
    "hyperandrogenism_clinical",
    "hyperandrogenism_biochemical",
    "hyperandrogenism",
    "pcom",
]
_BINARY_COLUMNS = ("cycle_irregular", "hair_growth")
_NUMERIC_COLUMNS = (
    "cycle_length_days",
    "hirsutism_mfg_score",
    "total_testosterone_nmol_l",
    "free_androgen_index",
    "shbg_nmol_l",
    "follicle_count_left",
    "follicle_count_right",
    "ovarian_volume_left_ml",
    "ovarian_volume_right_ml",
    "amh_ng_ml",
)
_SOURCES: dict[str, str] = {
    "pcom_follicles_per_ovary": "clinical-reference §2.2 (2003: ≥12), §2.4 (2023: ≥20)",
    "ovarian_volume_ml": "clinical-reference §2.2 (2003: >10 cm³), §2.4 (2014–2023: ≥10 mL)",
    "hirsutism_mfg": "clinical-reference §1e (2023: ≥4–6 by ethnicity; South Indian 5; "
    "historic ≥8)",
    "cycle_days": "clinical-reference §1b (2023: <21 or >35 days irregular)",
    "total_testosterone_upper_nmol_l": "clinical-reference §1b (95th centile 1.6 nmol/L at "
    "30 y, Braunstein 2011; assay-dependent)",
    "free_androgen_index_upper": "clinical-reference §1c (premenopausal 0.5–6.5; low-weight "
    "source, opt-in)",
    "amh_ng_ml_threshold": "caller-supplied; clinical-reference §2.4: no universal AMH cut-off",
}

# Tri-state values are float arrays inside this module: 1.0 met, 0.0 not met, NaN unknown.
Tri = np.ndarray
Test = Callable[[np.ndarray], np.ndarray]  # measured values -> bool array (NaN rows ignored)


@dataclass(frozen=True)
class CriteriaRules:
    """The guideline and thresholds a labelling uses (all from the clinical reference).

    ``None`` fields take the guideline's value on construction, so ``rules.to_dict()`` always
    records the numbers actually applied. Comparisons: follicles ``≥``; volume ``>`` (2003) or
    ``≥`` (2023); mFG ``≥``; cycle ``<`` short or ``>`` long; testosterone, FAI and AMH ``>``.

    AMH is not a PCOM criterion unless ``amh_ng_ml_threshold`` is given: the reference says
    there is no universal cut-off, thresholds are assay-specific (§2.4), and Rotterdam 2003 has
    no AMH criterion at all (so a threshold with that guideline is an error).
    """

    guideline: Guideline = "2023-international"
    pcom_follicles_per_ovary: int | None = None
    ovarian_volume_ml: float = OVARIAN_VOLUME_ML
    ovarian_volume_inclusive: bool | None = None
    hirsutism_mfg: float | None = None
    use_hair_growth_proxy: bool = True
    cycle_short_days: float = CYCLE_SHORT_DAYS
    cycle_long_days: float = CYCLE_LONG_DAYS
    total_testosterone_upper_nmol_l: float = TESTOSTERONE_UPPER_NMOL_L
    use_free_androgen_index: bool = False
    free_androgen_index_upper: float = FAI_UPPER
    amh_ng_ml_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.guideline not in GUIDELINES:
            raise ConfigError(
                f"guideline must be one of {list(GUIDELINES)}; got {self.guideline!r}"
            )
        defaults = {
            "pcom_follicles_per_ovary": PCOM_FNPO[self.guideline],
            "ovarian_volume_inclusive": OVARIAN_VOLUME_INCLUSIVE[self.guideline],
            "hirsutism_mfg": MFG_DEFAULT[self.guideline],
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: resolve defaults once, here
        self._check_values()

    def _check_values(self) -> None:
        positive = {
            "pcom_follicles_per_ovary": self.pcom_follicles_per_ovary,
            "ovarian_volume_ml": self.ovarian_volume_ml,
            "hirsutism_mfg": self.hirsutism_mfg,
            "cycle_short_days": self.cycle_short_days,
            "cycle_long_days": self.cycle_long_days,
            "total_testosterone_upper_nmol_l": self.total_testosterone_upper_nmol_l,
            "free_androgen_index_upper": self.free_androgen_index_upper,
        }
        if self.amh_ng_ml_threshold is not None:
            positive["amh_ng_ml_threshold"] = self.amh_ng_ml_threshold
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"CriteriaRules.{name} must be a positive number; got {value!r}")
        if self.cycle_short_days >= self.cycle_long_days:
            raise ConfigError(
                f"cycle_short_days ({self.cycle_short_days}) must be below cycle_long_days "
                f"({self.cycle_long_days})"
            )
        if self.amh_ng_ml_threshold is not None and self.guideline == "rotterdam-2003":
            raise ConfigError(
                "amh_ng_ml_threshold was given with guideline 'rotterdam-2003', which has no AMH "
                "criterion (clinical-reference §2.2); use '2023-international' (§2.4)"
            )

    def to_dict(self) -> dict[str, Any]:
        """The rules as plain JSON-ready values, with the reference section of each threshold."""
        out = asdict(self)
        out["sources"] = dict(_SOURCES)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CriteriaRules:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known - {"sources"})
        if unknown:
            raise ConfigError(
                f"unknown CriteriaRules keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class CriteriaResult:
    """What :func:`label_criteria` found.

    ``frame`` (same index as the input; ``patient_id`` first when the input has one):
    ``ovulatory_dysfunction``, ``hyperandrogenism_clinical``, ``hyperandrogenism_biochemical``,
    ``hyperandrogenism``, ``pcom`` and ``rotterdam_pcos`` (nullable booleans, ``<NA>`` =
    unknown), ``n_criteria_met`` and ``n_criteria_known`` (0–3, over OD, HA and PCOM),
    ``phenotype`` (A–D; ``<NA>`` when not PCOS or not determinable) and ``severity`` (ordered
    ``none < mild < moderate < severe``; ``<NA>`` when undetermined).

    ``columns_used``: the input columns the rules read (present in the table and consulted,
    whether or not a given row needed them). ``exclude_from_inputs``: those plus the catalog
    features derived from them or that they derive from — drop all of these from a model trained
    on these labels; it may name columns the table lacks (derived later by the tabular branch).
    """

    frame: pd.DataFrame
    rules: dict[str, Any]
    columns_used: list[str]
    exclude_from_inputs: list[str]
    caveats: list[str] = field(default_factory=list)
    source_format: str | None = None


# --- public API ------------------------------------------------------------------------------


def label_criteria(
    patients: pd.DataFrame,
    rules: CriteriaRules | None = None,
    source_format: str | None = None,
) -> CriteriaResult:
    """Derive the Rotterdam criteria, phenotype and severity grade for every patient.

    ``patients`` uses the catalog's canonical column names and units (a ``Cohort.patients``
    table). ``source_format`` is the cohort's format (e.g. ``"kaggle-pcos"``), which adds that
    source's caveats. The severity grade follows the synthetic generator's convention — D mild,
    B or C moderate, A severe, non-PCOS none — which is a convention, not a clinical grading:
    the literature on relative severity of the phenotypes is mixed (clinical-reference §2.5).
    """
    if not isinstance(patients, pd.DataFrame):
        raise SchemaError(f"patients must be a pandas DataFrame; got {type(patients).__name__}")
    rules = rules or CriteriaRules()
    _check_columns(patients)
    used: list[str] = []
    caveats: list[str] = []
    od = _ovulatory_dysfunction(patients, rules, used, caveats)
    ha_clinical = _clinical_ha(patients, rules, used, caveats)
    ha_biochemical = _biochemical_ha(patients, rules, used, caveats)
    ha = _kleene_or([ha_clinical, ha_biochemical], len(patients))
    pcom = _pcom(patients, rules, used, caveats, source_format)
    frame = _assemble(patients, od, ha_clinical, ha_biochemical, ha, pcom)
    caveats += _general_caveats(frame, source_format)
    return CriteriaResult(
        frame=frame,
        rules=rules.to_dict(),
        columns_used=used,
        exclude_from_inputs=_leaky_columns(used),
        caveats=caveats,
        source_format=source_format,
    )


def label_cohort(cohort: Cohort, rules: CriteriaRules | None = None) -> CriteriaResult:
    """:func:`label_criteria` on a cohort's patients, with its format's caveats."""
    return label_criteria(cohort.patients, rules, source_format=cohort.spec.format)


def criteria_summary(
    result: CriteriaResult,
    label: pd.Series | None = None,
    severity: pd.Series | None = None,
) -> dict[str, Any]:
    """Counts for a report: each criterion met / not met / unknown, criteria-met histogram,
    phenotypes, severity grades, and agreement with an existing ``label`` (0/1, compared with
    ``rotterdam_pcos``) and/or ``severity`` (compared with the derived grade), aligned on the
    index. Agreement counts are keyed ``"1"``/``"0"``/``"missing"`` for the label and
    ``"met"``/``"not_met"``/``"unknown"`` for the derived value.
    """
    frame = result.frame
    summary: dict[str, Any] = {
        "n_patients": len(frame),
        "guideline": result.rules["guideline"],
        "criteria": {c: _tri_counts(frame[c]) for c in [*CRITERIA_COLUMNS, "rotterdam_pcos"]},
        "n_criteria_met": _value_counts(frame["n_criteria_met"], range(4)),
        "n_criteria_known": _value_counts(frame["n_criteria_known"], range(4)),
        "phenotype": _phenotype_counts(frame),
        "severity": _value_counts(frame["severity"], SEVERITY_LEVELS),
        "columns_used": list(result.columns_used),
        "caveats": list(result.caveats),
    }
    if label is not None:
        summary["label_agreement"] = _label_agreement(frame, label)
    if severity is not None:
        summary["severity_agreement"] = _severity_agreement(frame, severity)
    return summary


# --- the three criteria ------------------------------------------------------------------------


def _ovulatory_dysfunction(
    patients: pd.DataFrame, rules: CriteriaRules, used: list[str], caveats: list[str]
) -> Tri:
    signals = []
    if "cycle_irregular" in patients:
        used.append("cycle_irregular")
        signals.append(_flag(patients["cycle_irregular"]))
    if "cycle_length_days" in patients:
        used.append("cycle_length_days")
        days = _numbers(patients["cycle_length_days"])
        signals.append(
            _compare(days, lambda d: (d < rules.cycle_short_days) | (d > rules.cycle_long_days))
        )
        if rules.guideline == "rotterdam-2003":
            caveats.append(
                "cycle_length_days judged with the 2023 rule (<21 or >35 days, clinical-reference "
                "§1b): the reference gives no day cut-off for Rotterdam 2003"
            )
    if not signals:
        caveats.append(_no_data("ovulatory dysfunction", "cycle_irregular or cycle_length_days"))
    return _any_known(signals, len(patients))


def _clinical_ha(
    patients: pd.DataFrame, rules: CriteriaRules, used: list[str], caveats: list[str]
) -> Tri:
    signals = []
    if "hirsutism_mfg_score" in patients:
        used.append("hirsutism_mfg_score")
        mfg = rules.hirsutism_mfg
        signals.append(_compare(_numbers(patients["hirsutism_mfg_score"]), lambda s: s >= mfg))
    if rules.use_hair_growth_proxy and "hair_growth" in patients:
        used.append("hair_growth")
        signals.append(_flag(patients["hair_growth"]))
        caveats.append(
            "clinical hyperandrogenism read from the binary, self-reported 'hair_growth' where no "
            "mFG score is present: a stand-in for hirsutism without an mFG score "
            "(clinical-reference §3.2), weaker evidence than mFG ≥ cut-off"
        )
    if not signals:
        caveats.append(_no_data("clinical hyperandrogenism", "hirsutism_mfg_score or hair_growth"))
    # The validated score first; the stand-in only fills rows where no score was recorded.
    return _first_known(signals, len(patients))


def _biochemical_ha(
    patients: pd.DataFrame, rules: CriteriaRules, used: list[str], caveats: list[str]
) -> Tri:
    signals = []
    if "total_testosterone_nmol_l" in patients:
        used.append("total_testosterone_nmol_l")
        upper = rules.total_testosterone_upper_nmol_l
        values = _numbers(patients["total_testosterone_nmol_l"])
        signals.append(_compare(values, lambda t: t > upper))
        caveats.append(
            f"biochemical hyperandrogenism: total testosterone > {upper} nmol/L (95th centile at "
            "30 y, clinical-reference §1b); reference intervals depend on the assay "
            "(LC-MS/MS preferred) — prefer the reporting lab's own upper limit"
        )
    if rules.use_free_androgen_index:
        fai = _free_androgen_index(patients, used)
        if fai is not None:
            upper = rules.free_androgen_index_upper
            signals.append(_compare(fai, lambda f: f > upper))
            caveats.append(
                f"free androgen index > {upper} used (opt-in): the 0.5–6.5 range comes from a "
                "low-weight calculator page (clinical-reference §1c 🟡)"
            )
    if not signals:
        caveats.append(
            _no_data("biochemical hyperandrogenism", "total_testosterone_nmol_l")
            + "; without it, no hirsutism leaves hyperandrogenism unknown, not absent"
        )
    return _any_known(signals, len(patients))


def _free_androgen_index(patients: pd.DataFrame, used: list[str]) -> np.ndarray | None:
    """The recorded FAI, gaps filled from 100 × T ÷ SHBG (§1c) when both parts are columns."""
    fai = None
    if "free_androgen_index" in patients:
        used.append("free_androgen_index")
        fai = _numbers(patients["free_androgen_index"])
    parts = ("total_testosterone_nmol_l", "shbg_nmol_l")
    if all(p in patients for p in parts):
        if "shbg_nmol_l" not in used:
            used.append("shbg_nmol_l")
        shbg = _numbers(patients["shbg_nmol_l"])
        with np.errstate(divide="ignore", invalid="ignore"):
            computed = np.where(
                shbg > 0, 100.0 * _numbers(patients["total_testosterone_nmol_l"]) / shbg, np.nan
            )
        fai = computed if fai is None else np.where(np.isnan(fai), computed, fai)
    return fai


def _pcom(
    patients: pd.DataFrame,
    rules: CriteriaRules,
    used: list[str],
    caveats: list[str],
    source_format: str | None,
) -> Tri:
    n = len(patients)
    count = _per_ovary(
        patients, "follicle_count", "", lambda c: c >= rules.pcom_follicles_per_ovary, used
    )
    inclusive = rules.ovarian_volume_inclusive
    volume_ml = rules.ovarian_volume_ml
    volume = _per_ovary(
        patients,
        "ovarian_volume",
        "_ml",
        (lambda v: v >= volume_ml) if inclusive else (lambda v: v > volume_ml),
        used,
    )
    ultrasound = [s for s in (count, volume) if s is not None]
    if rules.guideline == "2023-international":
        # FNPO first; volume is for when FNPO cannot be assessed (§2.4, rec 1.4.5/1.4.8).
        scan = _first_known(ultrasound, n)
    else:
        # 2003: "12 or more follicles … and/or ovarian volume >10" (§2.2); a read scan settles it.
        scan = _any_known(ultrasound, n)
    signals = [scan] if ultrasound else []
    amh = _amh_signal(patients, rules, used, caveats)
    if amh is not None:
        signals.append(amh)
    if count is not None and source_format == "kaggle-pcos":
        caveats.append(
            "kaggle-pcos follicle counts (follicle_count_left/right): size range, counting method "
            "and transducer are undocumented, so they are not safely comparable with FNPO "
            f"≥{rules.pcom_follicles_per_ovary} (clinical-reference §3.2); PCOM here is a proxy"
        )
    if not signals:
        caveats.append(
            _no_data("PCOM", "follicle_count_left/right or ovarian_volume_left/right_ml")
        )
    return _any_known(signals, n)


def _per_ovary(
    patients: pd.DataFrame, stem: str, suffix: str, test: Test, used: list[str]
) -> Tri | None:
    """One ovary meeting the test is enough (§2.2); both must be measured to rule it out."""
    sides = [f"{stem}_{side}{suffix}" for side in ("left", "right")]
    present = [c for c in sides if c in patients]
    if not present:
        return None
    used.extend(present)
    signals = [_compare(_numbers(patients[c]), test) for c in present]
    if len(present) == 1:
        # The other ovary was never recorded: it could qualify, so a negative stays unknown.
        signals.append(np.full(len(patients), np.nan))
    return _kleene_or(signals, len(patients))


def _amh_signal(
    patients: pd.DataFrame, rules: CriteriaRules, used: list[str], caveats: list[str]
) -> Tri | None:
    threshold = rules.amh_ng_ml_threshold
    if threshold is None:
        if "amh_ng_ml" in patients:
            caveats.append(
                "amh_ng_ml present but not used: there is no universal AMH cut-off for PCOM; "
                "thresholds are assay- and population-specific (clinical-reference §2.4). Pass "
                "CriteriaRules(amh_ng_ml_threshold=...) with your assay's value to use it"
            )
        return None
    if "amh_ng_ml" not in patients:
        caveats.append(f"amh_ng_ml_threshold={threshold} given, but the table has no amh_ng_ml")
        return None
    used.append("amh_ng_ml")
    caveats.append(
        f"AMH > {threshold} ng/mL counted as PCOM: a caller-supplied, assay-specific threshold "
        "(clinical-reference §2.4 gives no universal one)"
    )
    return _compare(_numbers(patients["amh_ng_ml"]), lambda a: a > threshold)


# --- three-valued logic (1 met, 0 not met, NaN unknown) --------------------------------------


def _any_known(signals: list[Tri], n: int) -> Tri:
    """Alternative records of one finding: any 1 → 1; else any 0 → 0; else unknown."""
    if not signals:
        return np.full(n, np.nan)
    stacked = np.vstack(signals)
    out = np.where(np.any(stacked == 0.0, axis=0), 0.0, np.nan)
    return np.where(np.any(stacked == 1.0, axis=0), 1.0, out)


def _first_known(signals: list[Tri], n: int) -> Tri:
    """Ranked measures: the first one recorded decides."""
    out = np.full(n, np.nan)
    for signal in reversed(signals):
        out = np.where(np.isnan(signal), out, signal)
    return out


def _kleene_or(signals: list[Tri], n: int) -> Tri:
    """Distinct findings: 1 if any is 1; 0 only if all are 0; else unknown."""
    if not signals:
        return np.full(n, np.nan)
    stacked = np.vstack(signals)
    out = np.where(np.all(stacked == 0.0, axis=0), 0.0, np.nan)
    return np.where(np.any(stacked == 1.0, axis=0), 1.0, out)


def _compare(values: np.ndarray, test: Test) -> Tri:
    with np.errstate(invalid="ignore"):
        hit = np.asarray(test(values), dtype=bool)
    return np.where(np.isnan(values), np.nan, hit.astype(float))


def _flag(values: pd.Series) -> Tri:
    return _numbers(values)  # checked to be 0/1/missing in _check_columns


def _numbers(values: pd.Series) -> np.ndarray:
    # Via Float64 so nullable integer/boolean columns turn <NA> into NaN instead of raising.
    numbers = pd.to_numeric(values, errors="raise").astype("Float64")
    return numbers.to_numpy(dtype="float64", na_value=np.nan)


# --- assembling the result ---------------------------------------------------------------------


def _assemble(
    patients: pd.DataFrame, od: Tri, ha_clinical: Tri, ha_biochemical: Tri, ha: Tri, pcom: Tri
) -> pd.DataFrame:
    frame = pd.DataFrame(index=patients.index)
    if "patient_id" in patients:
        frame["patient_id"] = patients["patient_id"]
    for name, values in zip(
        CRITERIA_COLUMNS, (od, ha_clinical, ha_biochemical, ha, pcom), strict=True
    ):
        frame[name] = _to_boolean(values)
    core = np.vstack([ha, od, pcom])  # phenotype order: (HA, OD, PCOM)
    met = np.nansum(core == 1.0, axis=0)
    known = np.sum(~np.isnan(core), axis=0)
    frame["n_criteria_met"] = pd.array(met, dtype="Int8")
    frame["n_criteria_known"] = pd.array(known, dtype="Int8")
    pcos = np.where(met >= 2, 1.0, np.where(met + (3 - known) < 2, 0.0, np.nan))
    frame["rotterdam_pcos"] = _to_boolean(pcos)
    phenotype = [_phenotype(core[:, i]) if pcos[i] == 1.0 else None for i in range(len(pcos))]
    frame["phenotype"] = pd.Categorical(phenotype, categories=PHENOTYPES)
    severity = [
        "none" if p == 0.0 else (_SEVERITY_OF[ph] if ph else None)
        for p, ph in zip(pcos, phenotype, strict=True)
    ]
    frame["severity"] = pd.Categorical(severity, categories=SEVERITY_LEVELS, ordered=True)
    return frame


def _phenotype(ha_od_pcom: np.ndarray) -> str | None:
    if np.isnan(ha_od_pcom).any():
        return None  # e.g. HA + OD met, PCOM unknown: A or B
    ha, od, pcom = (bool(v) for v in ha_od_pcom)
    return _PHENOTYPE_OF.get((ha, od, pcom))


def _to_boolean(values: Tri) -> pd.arrays.BooleanArray:
    return pd.array([None if np.isnan(v) else bool(v) for v in values], dtype="boolean")


def _leaky_columns(used: list[str]) -> list[str]:
    """Used columns, catalog features computed from them, and the parts of used derived ones."""
    out = list(used)
    for feature in CATALOG.values():
        if feature.name in used:
            out.extend(feature.derived_from)
        elif set(feature.derived_from) & set(used):
            out.append(feature.name)
    return list(dict.fromkeys(out))


def _general_caveats(frame: pd.DataFrame, source_format: str | None) -> list[str]:
    caveats = [
        "exclusions not applied (thyroid disease, hyperprolactinaemia, non-classic CAH; "
        "clinical-reference §2.2, §2.6): rotterdam_pcos means 'meets the criteria', "
        "not a diagnosis; hormonal contraception invalidates androgen and PCOM assessment (§2.6)",
        "adult criteria: in adolescents both hyperandrogenism and ovulatory dysfunction are "
        "needed and ultrasound/AMH are not used (clinical-reference §2.4)",
        "severity grade is the synthetic generator's convention (A severe; B, C moderate; "
        "D mild), not a clinical grading: evidence on phenotype severity is mixed "
        "(clinical-reference §2.5)",
    ]
    if source_format == "kaggle-pcos":
        caveats += [
            "kaggle-pcos cycle_irregular comes from Cycle(R/I) codes read as 2 = regular, "
            "4/5 = irregular: a community reading consistent with the data, not documented "
            "(clinical-reference §3.3)",
            "kaggle-pcos 'PCOS (Y/N)' label provenance is unknown and is not a reproducible "
            "Rotterdam computation from these columns (clinical-reference §3.4)",
        ]
    unknown = int(frame["rotterdam_pcos"].isna().sum())
    if unknown:
        caveats.append(
            f"{unknown} of {len(frame)} patients have rotterdam_pcos unknown: the missing "
            "criteria could still decide either way"
        )
    return caveats


def _no_data(criterion: str, columns: str) -> str:
    return f"no {columns} column: {criterion} is unknown for every patient"


def _check_columns(patients: pd.DataFrame) -> None:
    for column in (*_BINARY_COLUMNS, *_NUMERIC_COLUMNS):
        if column not in patients:
            continue
        values = pd.to_numeric(patients[column], errors="coerce")
        text = patients[column][values.isna() & patients[column].notna()]
        if len(text):
            raise SchemaError(
                f"column {column!r} must be numeric (missing allowed); found "
                f"{_rows(text)} — load the table through a deeppcos loader, which coerces them"
            )
        if column in _BINARY_COLUMNS:
            bad = values[values.notna() & ~values.isin([0, 1])]
            if len(bad):
                raise SchemaError(f"column {column!r} must be 0, 1 or missing; found {_rows(bad)}")


def _rows(values: pd.Series) -> str:
    shown = ", ".join(f"row {r}: {v!r}" for r, v in values.head(5).items())
    return shown + (f" and {len(values) - 5} more" if len(values) > 5 else "")


# --- summary helpers ---------------------------------------------------------------------------


def _is(values: pd.Series, value: object) -> pd.Series:
    """Plain-bool mask of ``values == value``; missing values compare False."""
    return values.eq(value).fillna(False).astype(bool)


def _tri_counts(values: pd.Series) -> dict[str, int]:
    return {
        "met": int(_is(values, True).sum()),
        "not_met": int(_is(values, False).sum()),
        "unknown": int(values.isna().sum()),
    }


def _value_counts(values: pd.Series, order: Any) -> dict[str, int]:
    counts = {str(k): int(_is(values, k).sum()) for k in order}
    counts["unknown"] = int(values.isna().sum())
    return counts


def _phenotype_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = {p: int(_is(frame["phenotype"], p).sum()) for p in PHENOTYPES}
    pcos = frame["rotterdam_pcos"]
    counts["not_pcos"] = int(_is(pcos, False).sum())
    counts["pcos_phenotype_unknown"] = int((_is(pcos, True) & frame["phenotype"].isna()).sum())
    counts["pcos_unknown"] = int(pcos.isna().sum())
    return counts


def _derived_state(values: pd.Series) -> pd.Series:
    return values.map({True: "met", False: "not_met"}).astype("object").fillna("unknown")


def _label_agreement(frame: pd.DataFrame, label: pd.Series) -> dict[str, Any]:
    label = label.reindex(frame.index)
    lab = pd.to_numeric(label, errors="coerce")
    lab_key = lab.map({1.0: "1", 0.0: "0"}).astype("object").fillna("missing")
    derived = _derived_state(frame["rotterdam_pcos"])
    met = frame["n_criteria_met"].astype("int64")  # never missing
    decided = (lab_key != "missing") & (derived != "unknown")
    agree = ((lab_key == "1") & (derived == "met")) | ((lab_key == "0") & (derived == "not_met"))
    by_phenotype = {
        p: {
            "n": int(_is(frame["phenotype"], p).sum()),
            "label_1": int((_is(frame["phenotype"], p) & (lab_key == "1")).sum()),
        }
        for p in PHENOTYPES
    }
    return {
        "label": label.name,
        "confusion": _crosstab(lab_key, derived, ["1", "0", "missing"]),
        "label_1_fewer_than_2_met": int(((lab_key == "1") & (met < 2)).sum()),
        "label_1_cannot_reach_2": int(((lab_key == "1") & (derived == "not_met")).sum()),
        "label_0_2_or_more_met": int(((lab_key == "0") & (met >= 2)).sum()),
        "n_decided": int(decided.sum()),
        "agreement_on_decided": float(agree[decided].mean()) if decided.any() else None,
        "by_phenotype": by_phenotype,
    }


def _severity_agreement(frame: pd.DataFrame, severity: pd.Series) -> dict[str, Any]:
    given = severity.reindex(frame.index).astype("object")
    given = given.where(given.notna(), "missing").astype(str)
    derived = frame["severity"].astype("object")
    derived = derived.where(derived.notna(), "unknown").astype(str)
    decided = (given != "missing") & (derived != "unknown")
    agree = given[decided] == derived[decided]
    return {
        "label": severity.name,
        "confusion": _crosstab(given, derived, None),
        "n_decided": int(decided.sum()),
        "agreement_on_decided": float(agree.mean()) if decided.any() else None,
    }


def _crosstab(rows: pd.Series, columns: pd.Series, order: list[str] | None) -> dict[str, Any]:
    keys = order or sorted(set(rows))
    return {
        key: {str(c): int(n) for c, n in columns[rows == key].value_counts().sort_index().items()}
        for key in keys
    }
