"""The built-in PCOS feature catalog.

Every entry comes from ``shared/clinical-reference.md`` (§1): canonical snake_case name, UCUM unit,
plausible range, typical range as text, LOINC code where the reference verified one, and whether
the feature is read off the ultrasound scan. Plausible ranges are *validation heuristics* (the
reference tags them unverified): values outside are almost certainly unit or keying errors, in
any cohort. Where the reference's heuristic is instead an assumption about who is in a PCOS
study (age 10–60; adult weight and height), it is ``pcos_range``, applied to PCOS cohorts only
(``deeppcos.knowledge.ranges``), and ``plausible`` keeps only the definitional bound (≥ 0). LOINC
codes are given only where the reference marks them checked; ``None`` means none was verified.
``loinc_alt`` holds further codes the reference verified for the same measurement in another
form (a molar-unit code, a protocol code); FHIR input maps them to the same feature, converting
units (``deeppcos.data.fhir``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Kind = Literal["continuous", "count", "binary", "categorical", "score"]


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    unit: str  # UCUM
    plausible: tuple[float, float] | None
    typical: str = ""
    loinc: str | None = None
    kind: Kind = "continuous"
    ultrasound: bool = False  # read off the scan: a model seeing it partly "reads the scan"
    derived_from: tuple[str, ...] = ()
    loinc_alt: tuple[str, ...] = ()  # further verified codes for the same measurement
    # The reference's range where it describes a PCOS study's population, not physiology.
    pcos_range: tuple[float, float] | None = None


_ANY_NONNEGATIVE = (0.0, math.inf)  # the only bound that holds for every cohort: no value < 0


_F = Feature
# fmt: off
_FEATURES: tuple[Feature, ...] = (
    # Demographics, anthropometry, vital signs (reference §1a)
    _F("age_years", "Age at assessment", "a", _ANY_NONNEGATIVE,
       "adults; criteria differ in adolescents", "30525-0", pcos_range=(10, 60)),
    _F("weight_kg", "Body weight", "kg", _ANY_NONNEGATIVE, "", "29463-7", pcos_range=(25, 250)),
    _F("height_cm", "Body height", "cm", _ANY_NONNEGATIVE, "", "8302-2",
       pcos_range=(120, 210)),
    _F("bmi_kg_m2", "Body-mass index, weight ÷ height²", "kg/m2", (10, 80),
       "obesity ≥30; WHO Asian action points 23 and 27.5", "39156-5",
       derived_from=("weight_kg", "height_cm")),
    # 56086-2 "Adult Waist Circumference Protocol": reference §1a, ✅ [L8].
    _F("waist_circumference_cm", "Waist circumference", "cm", (45, 180),
       "WHO women: >80 increased, >88 substantially increased risk", "8280-0",
       loinc_alt=("56086-2",)),
    _F("hip_circumference_cm", "Hip circumference", "cm", (50, 200), "", "62409-8"),
    _F("waist_hip_ratio", "Waist ÷ hip", "1", (0.5, 1.5), "WHO women: ≥0.85 increased risk",
       derived_from=("waist_circumference_cm", "hip_circumference_cm")),
    _F("systolic_bp_mmhg", "Systolic blood pressure", "mm[Hg]", (60, 260), "normal <120",
       "8480-6"),
    _F("diastolic_bp_mmhg", "Diastolic blood pressure", "mm[Hg]", (30, 160), "normal <80",
       "8462-4"),
    _F("pulse_rate_bpm", "Heart or pulse rate", "/min", (30, 220), "60–100", "8867-4"),
    _F("respiratory_rate_per_min", "Breaths per minute", "/min", (5, 60), "12–16", "9279-1"),
    # Cycle history
    _F("cycle_irregular", "Irregular cycles (ovulatory dysfunction), 1 = irregular", "1", (0, 1),
       "2023: cycles <21 or >35 days, or <8 a year, are irregular", kind="binary"),
    _F("cycle_length_days", "Start of one period to the start of the next", "d", (10, 365),
       "21–35 regular (2023 guideline)"),
    # Range is an engineering bound (reference §3.4 lists 0 days as impossible), not a source's.
    _F("menses_duration_days",
       "Days of bleeding (Kaggle's 'Cycle length(days)'; not the cycle interval)", "d", (1, 15),
       "", kind="count"),
    # Laboratory (reference §1b)
    _F("haemoglobin_g_dl", "Haemoglobin, whole blood", "g/dL", (3, 22), "≥12 non-anaemic (WHO)",
       "718-7"),
    _F("lh_iu_l", "Luteinising hormone", "[IU]/L", (0, 250), "day 3 usually <7", "10501-5"),
    _F("fsh_iu_l", "Follicle-stimulating hormone", "[IU]/L", (0, 250), "day 3: 3–20", "15067-2"),
    _F("lh_fsh_ratio", "LH ÷ FSH (not a diagnostic criterion)", "1", (0.05, 20),
       "early follicular 0.2–1.7", derived_from=("lh_iu_l", "fsh_iu_l")),
    _F("amh_ng_ml", "Anti-Müllerian hormone", "ng/mL", (0.01, 30),
       "age-dependent; ~2–3× higher in PCOS; no universal PCOM cut-off", "38476-8"),
    _F("total_testosterone_nmol_l", "Total testosterone", "nmol/L", (0, 15),
       "0.52–1.6 (15–46 ng/dL, 5th–95th centile at 30 y)", "2986-8"),
    _F("free_testosterone_pg_ml", "Free testosterone", "pg/mL", (0, 50), "1.2–6.4", "2991-8"),
    _F("shbg_nmol_l", "Sex-hormone-binding globulin", "nmol/L", (2, 300), "18–86", "13967-5"),
    _F("free_androgen_index", "100 × total testosterone ÷ SHBG (both nmol/L)", "%", (0, 60),
       "premenopausal 0.5–6.5", derived_from=("total_testosterone_nmol_l", "shbg_nmol_l")),
    _F("dheas_ug_dl", "DHEA sulfate", "ug/dL", (1, 2000), "assay-dependent", "2191-5"),
    _F("androstenedione_ng_ml", "Androstenedione", "ng/mL", (0, 30), "assay-dependent", "1854-9"),
    _F("tsh_miu_l", "Thyrotropin", "m[IU]/L", (0.005, 150), "0.4–4.0", "3016-3"),
    _F("prolactin_ng_ml", "Prolactin", "ng/mL", (0.5, 1000), "women <25", "2842-3"),
    _F("fasting_glucose_mg_dl", "Fasting plasma glucose", "mg/dL", (30, 600),
       "<100 normal; 100–125 impaired; ≥126 diabetes (ADA)", "1558-6"),
    _F("fasting_insulin_uiu_ml", "Fasting insulin", "u[IU]/mL", (0.5, 300), "assay-dependent",
       "20448-7"),
    _F("homa_ir", "Glucose (mg/dL) × insulin ÷ 405", "1", (0.1, 50), "no universal cut-off",
       derived_from=("fasting_glucose_mg_dl", "fasting_insulin_uiu_ml")),
    _F("random_blood_sugar_mg_dl", "Random (non-fasting) glucose", "mg/dL", (30, 600),
       "≥200 with symptoms means diabetes", "2345-7"),
    _F("vitamin_d_25oh_ng_ml", "25-hydroxyvitamin D", "ng/mL", (1, 150),
       "<12 deficiency risk; >20 adequate (IOM)", "62292-8"),
    # 14890-8 Progesterone [Moles/volume]: reference §1b, ✅ [L3][L4]; values convert by MW.
    _F("progesterone_ng_ml", "Progesterone", "ng/mL", (0.02, 60), "follicular <1.5", "2839-9",
       loinc_alt=("14890-8",)),
    _F("beta_hcg_1_miu_ml", "β-hCG, first measurement", "m[IU]/mL", (0, 300_000),
       "<5 not pregnant", "21198-7"),
    _F("beta_hcg_2_miu_ml", "β-hCG, second measurement", "m[IU]/mL", (0, 300_000),
       "<5 not pregnant", "21198-7"),
    # Clinical signs (reference §1e)
    _F("hirsutism_mfg_score", "Modified Ferriman–Gallwey score (9 areas × 0–4)", "{score}",
       (0, 36), "hirsutism at mFG ≥4–6 (2023); South-Indian cut-off 5", kind="score"),
    _F("hair_growth", "Excess hair growth, self-reported (binary stand-in for hirsutism)", "1",
       (0, 1), kind="binary"),
    _F("acne", "Acne (Kaggle 'Pimples')", "1", (0, 1), kind="binary"),
    _F("acanthosis_nigricans", "Skin darkening, a marker of insulin resistance", "1", (0, 1),
       kind="binary"),
    _F("alopecia", "Female-pattern hair loss", "1", (0, 1), kind="binary"),
    _F("weight_gain", "Recent weight gain, self-reported", "1", (0, 1), kind="binary"),
    _F("fast_food", "Regular fast-food consumption, self-reported", "1", (0, 1), kind="binary"),
    _F("regular_exercise", "Regular exercise, self-reported", "1", (0, 1), kind="binary"),
    _F("pregnant", "Pregnant (Kaggle; meaning uncertain, see reference §3.4)", "1", (0, 1),
       kind="binary"),
    # The next two bounds are engineering sanity bounds; the reference gives none.
    _F("abortions_count", "Number of abortions", "{count}", (0, 20), kind="count"),
    _F("marriage_years", "Years married", "a", (0, 50)),
    _F("blood_group", "ABO and Rh blood group (A+, A-, B+, B-, O+, O-, AB+, AB-)", "1", None,
       kind="categorical"),
    # Ultrasound-derived (reference §1d): evaluate with and without them.
    _F("follicle_count_left", "Follicles counted in the left ovary", "{count}", (0, 100),
       "PCOM: FNPO ≥20 in at least one ovary (2023)", kind="count", ultrasound=True),
    _F("follicle_count_right", "Follicles counted in the right ovary", "{count}", (0, 100),
       "PCOM: FNPO ≥20 in at least one ovary (2023)", kind="count", ultrasound=True),
    _F("follicle_count_max", "Larger of the two ovaries' follicle counts", "{count}", (0, 100),
       "PCOM: FNPO ≥20 in at least one ovary (2023)", kind="count", ultrasound=True,
       derived_from=("follicle_count_left", "follicle_count_right")),
    _F("follicle_count_total", "Follicles counted in both ovaries", "{count}", (0, 200),
       "", kind="count", ultrasound=True,
       derived_from=("follicle_count_left", "follicle_count_right")),
    _F("mean_follicle_diameter_left_mm", "Mean follicle diameter, left ovary", "mm", (1, 40),
       "PCOM follicles are 2–9 mm", ultrasound=True),
    _F("mean_follicle_diameter_right_mm", "Mean follicle diameter, right ovary", "mm", (1, 40),
       "PCOM follicles are 2–9 mm", ultrasound=True),
    _F("ovarian_volume_left_ml", "Volume of the left ovary, 0.5 × L × W × T", "mL", (0.5, 60),
       "healthy mean 6.11; PCOM ≥10", ultrasound=True),
    _F("ovarian_volume_right_ml", "Volume of the right ovary, 0.5 × L × W × T", "mL", (0.5, 60),
       "healthy mean 6.11; PCOM ≥10", ultrasound=True),
    _F("endometrial_thickness_mm", "Endometrial thickness (double layer)", "mm", (1, 30),
       "varies with cycle phase", "12145-9", ultrasound=True),
)
# fmt: on

CATALOG: dict[str, Feature] = {f.name: f for f in _FEATURES}


def get_feature(name: str) -> Feature | None:
    return CATALOG.get(name)


def ultrasound_features() -> list[str]:
    return [f.name for f in _FEATURES if f.ultrasound]


def catalog_frame():  # -> pd.DataFrame, imported lazily to keep this module light
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "name": f.name,
                "description": f.description,
                "unit": f.unit,
                "plausible_low": f.plausible[0] if f.plausible else None,
                "plausible_high": f.plausible[1] if f.plausible else None,
                "pcos_low": f.pcos_range[0] if f.pcos_range else None,
                "pcos_high": f.pcos_range[1] if f.pcos_range else None,
                "typical": f.typical,
                "loinc": f.loinc,
                "loinc_alt": ", ".join(f.loinc_alt),
                "kind": f.kind,
                "ultrasound": f.ultrasound,
            }
            for f in _FEATURES
        ]
    )
