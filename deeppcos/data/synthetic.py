"""A synthetic PCOS cohort: tabular labs and transvaginal-ultrasound-like images, with ground truth.

The generator exists so that every part of deeppcos (loaders, audit, branches, fusion, reports,
dashboards) can be developed and tested end to end without real patient data. It is clinically
grounded but *not* a clinical model: the full generative model, its parameters and the choices
behind them are documented in ``docs/synthetic-cohort.md``.

In short, every patient has three latent Rotterdam criteria (ovulatory dysfunction,
hyperandrogenism, polycystic ovarian morphology); PCOS is at least two of three and its phenotype
(A-D) sets the severity grade. Labs are drawn from the latent criteria, and each ovary's follicle
number per ovary (FNPO) is drawn into an ultrasound image. By default FNPO is *not* a table column,
so the images carry information that the table lacks (AMH is its only, noisy, tabular echo).

Reproducibility: every patient has its own ``numpy.random.Generator`` seeded from
``(seed, patient index, stream)``, so the same seed gives byte-identical files (with the same numpy
and OpenCV versions), patient ``k`` is the same whatever ``n_patients`` is, and images can be
rendered on threads in any order.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import yaml

__all__ = ["SEVERITY_LEVELS", "generate_cohort"]

SEVERITY_LEVELS = ["none", "mild", "moderate", "severe"]

# --- the latent model -----------------------------------------------------------------------

PCOS_PREVALENCE = 0.33
# Phenotype mix among PCOS patients (NIH 2012 nomenclature): (HA, OD, PCOM), share, severity.
# Severity ordering is a modelling choice for the synthetic data; see the docs (§ Severity).
PHENOTYPES: dict[str, tuple[tuple[bool, bool, bool], float, str]] = {
    "A": ((True, True, True), 0.45, "severe"),
    "B": ((True, True, False), 0.15, "moderate"),
    "C": ((True, False, True), 0.15, "moderate"),
    "D": ((False, True, True), 0.25, "mild"),
}
# Non-PCOS patients have at most one criterion: (HA, OD, PCOM) -> share.
NON_PCOS_PATTERNS: dict[tuple[bool, bool, bool], float] = {
    (False, False, False): 0.60,
    (False, False, True): 0.25,  # isolated PCOM is common in healthy women
    (True, False, False): 0.08,
    (False, True, False): 0.07,
}
SITES = ("site_a", "site_b", "site_c")
SITE_SHARES = (0.40, 0.35, 0.25)

# Share of patients with no tabular features at all / with no images, and with only one image.
P_NO_TABLE = 0.05
P_NO_IMAGES = 0.05
P_ONE_IMAGE = 0.08

FEATURE_COLUMNS = [
    "age_years", "weight_kg", "height_cm", "bmi_kg_m2", "waist_circumference_cm",
    "hip_circumference_cm", "waist_hip_ratio", "cycle_irregular", "cycle_length_days", "lh_iu_l",
    "fsh_iu_l", "lh_fsh_ratio", "amh_ng_ml", "total_testosterone_nmol_l", "shbg_nmol_l",
    "free_androgen_index", "tsh_miu_l", "prolactin_ng_ml", "fasting_glucose_mg_dl",
    "fasting_insulin_uiu_ml", "vitamin_d_25oh_ng_ml", "progesterone_ng_ml", "hirsutism_mfg_score",
    "acne", "acanthosis_nigricans", "weight_gain", "alopecia", "systolic_bp_mmhg",
    "diastolic_bp_mmhg",
]  # fmt: skip
ULTRASOUND_COLUMNS = [
    "follicle_count_left", "follicle_count_right", "ovarian_volume_left_ml",
    "ovarian_volume_right_ml",
]  # fmt: skip
PATIENT_COLUMNS = ["patient_id", "pcos", "severity", "site", *FEATURE_COLUMNS]
TRUTH_COLUMNS = [
    "patient_id", "ovulatory_dysfunction", "hyperandrogenism", "pcom", "phenotype", "fnpo_left",
    "fnpo_right", "ovarian_volume_left_ml", "ovarian_volume_right_ml",
]  # fmt: skip
INTEGER_COLUMNS = {
    "age_years", "cycle_irregular", "cycle_length_days", "fasting_glucose_mg_dl",
    "hirsutism_mfg_score", "acne", "acanthosis_nigricans", "weight_gain", "alopecia",
    "systolic_bp_mmhg", "diastolic_bp_mmhg", "follicle_count_left", "follicle_count_right",
}  # fmt: skip

# Missing-completely-at-random rate of each *measured* column, on top of the ~5% of patients with
# no table at all; AMH and insulin are missing most often (they are the least often ordered).
# Derived columns (BMI, waist:hip, LH/FSH, FAI) are missing whenever one of their inputs is, as in
# real records. With the empty rows included every column ends up 5-25% missing.
MISSING_RATES: dict[str, float] = {
    "age_years": 0.02, "weight_kg": 0.05, "height_cm": 0.05, "waist_circumference_cm": 0.09,
    "hip_circumference_cm": 0.09, "cycle_irregular": 0.04, "cycle_length_days": 0.08,
    "lh_iu_l": 0.08, "fsh_iu_l": 0.08, "amh_ng_ml": 0.18, "total_testosterone_nmol_l": 0.08,
    "shbg_nmol_l": 0.10, "tsh_miu_l": 0.06, "prolactin_ng_ml": 0.08,
    "fasting_glucose_mg_dl": 0.08, "fasting_insulin_uiu_ml": 0.19, "vitamin_d_25oh_ng_ml": 0.14,
    "progesterone_ng_ml": 0.12, "hirsutism_mfg_score": 0.06, "acne": 0.04,
    "acanthosis_nigricans": 0.05, "weight_gain": 0.04, "alopecia": 0.05,
    "systolic_bp_mmhg": 0.04, "diastolic_bp_mmhg": 0.04,
}  # fmt: skip
DERIVED_FROM: dict[str, tuple[str, str]] = {
    "bmi_kg_m2": ("weight_kg", "height_cm"),
    "waist_hip_ratio": ("waist_circumference_cm", "hip_circumference_cm"),
    "lh_fsh_ratio": ("lh_iu_l", "fsh_iu_l"),
    "free_androgen_index": ("total_testosterone_nmol_l", "shbg_nmol_l"),
}

# Stream numbers mixed into each patient's seed, so tables and images never share random numbers.
_TABLE_STREAM, _LEFT_STREAM, _RIGHT_STREAM = 0, 1, 2
_SIDE_SUFFIX = {"left": "L", "right": "R"}
_IMAGE_NAME = re.compile(r"^SYN-\d+_[LR]\.png$")


@dataclass(frozen=True)
class _Ovary:
    """What an ultrasound image of one ovary must show (ground truth for the renderer)."""

    fnpo: int
    volume_ml: float
    pcom: bool
    ovulatory: bool


@dataclass(frozen=True)
class _Patient:
    index: int
    patient_id: str
    site: str
    ha: bool
    od: bool
    pcom: bool
    phenotype: str  # "" when not PCOS
    ovaries: dict[str, _Ovary]  # "left" / "right"
    features: dict[str, float | None]
    image_sides: tuple[str, ...]

    @property
    def pcos(self) -> bool:
        return self.phenotype != ""

    @property
    def severity(self) -> str:
        return PHENOTYPES[self.phenotype][2] if self.pcos else "none"


# --- small random helpers ---------------------------------------------------------------------


def _lognormal(
    rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float
) -> float:
    """A right-skewed lab value: log-normal around ``median``, clipped to a plausible range."""
    return float(np.clip(median * math.exp(sigma * rng.standard_normal()), lo, hi))


def _normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def _bernoulli(rng: np.random.Generator, p: float) -> int:
    return int(rng.random() < min(max(p, 0.0), 1.0))


def _choice(rng: np.random.Generator, options: dict[Any, float]) -> Any:
    keys = list(options)
    probs = np.array(list(options.values()), dtype=float)
    return keys[int(rng.choice(len(keys), p=probs / probs.sum()))]


# --- latent criteria, ovaries and labs ----------------------------------------------------------


def _draw_criteria(rng: np.random.Generator) -> tuple[bool, bool, bool, str]:
    """(HA, OD, PCOM, phenotype); PCOS = at least 2 of 3 criteria (Rotterdam 2003)."""
    if rng.random() < PCOS_PREVALENCE:
        phenotype = _choice(rng, {name: spec[1] for name, spec in PHENOTYPES.items()})
        ha, od, pcom = PHENOTYPES[phenotype][0]
        return ha, od, pcom, phenotype
    ha, od, pcom = _choice(rng, NON_PCOS_PATTERNS)
    return ha, od, pcom, ""


def _draw_ovaries(rng: np.random.Generator, pcom: bool, od: bool) -> dict[str, _Ovary]:
    """Per-ovary FNPO (2-9 mm follicles) and volume.

    PCOM follows the 2023 guideline: FNPO >= 20 in at least one ovary; the other ovary is often,
    not always, polycystic too. Without PCOM both ovaries stay below 20 follicles and 10 mL, so the
    truth table never contradicts the definition.
    """
    counts: tuple[int, ...]  # one per ovary: (left, right)
    if pcom:
        first = int(np.clip(20 + rng.gamma(2.0, 3.5), 20, 35))
        other = (
            int(np.clip(18 + rng.gamma(2.0, 3.5), 16, 35))
            if rng.random() < 0.7
            else int(rng.integers(8, 20))
        )
        counts = (first, other) if rng.random() < 0.5 else (other, first)
        volumes = [_lognormal(rng, 11.0 + 0.25 * (c - 20), 0.22, 5.0, 22.0) for c in counts]
    else:
        counts = tuple(int(np.clip(round(rng.normal(8.0, 2.5)), 4, 12)) for _ in range(2))
        volumes = [_lognormal(rng, 6.0, 0.22, 2.5, 9.5) for _ in counts]
    return {
        side: _Ovary(fnpo=c, volume_ml=round(v, 1), pcom=c >= 20 or v >= 10.0, ovulatory=not od)
        for side, c, v in zip(("left", "right"), counts, volumes, strict=True)
    }


def _anthropometry(rng: np.random.Generator, ha: bool, phenotype: str) -> dict[str, float]:
    """Height, weight, BMI and waist/hip; PCOS shifts BMI up (more with hyperandrogenic types)."""
    bmi_median = {"": 23.5, "A": 28.0, "B": 28.0, "C": 26.0, "D": 25.5}[phenotype]
    height = round(_normal(rng, 160.0, 7.0, 140.0, 185.0), 1)
    bmi = _lognormal(rng, bmi_median, 0.17, 16.0, 50.0)
    weight = round(bmi * (height / 100.0) ** 2, 1)
    waist = round(_normal(rng, 34.0 + 1.85 * bmi + 2.0 * ha, 4.0, 55.0, 150.0), 1)
    whr_target = _normal(rng, 0.76 + 0.005 * (bmi - 23.0) + 0.02 * ha, 0.035, 0.65, 1.05)
    hip = round(waist / whr_target, 1)
    return {
        "height_cm": height,
        "weight_kg": weight,
        "waist_circumference_cm": waist,
        "hip_circumference_cm": hip,
    }


def _cycle(rng: np.random.Generator, od: bool) -> dict[str, float]:
    """Ovulatory dysfunction: mostly oligomenorrhoea (>35 d), some short cycles, and some
    anovulatory women whose cycles look regular (only a low luteal progesterone betrays them)."""
    if od:
        kind = rng.random()
        if kind < 0.50:
            return {
                "cycle_irregular": 1,
                "cycle_length_days": float(min(36 + round(rng.gamma(1.5, 20.0)), 180)),
            }
        if kind < 0.57:
            return {"cycle_irregular": 1, "cycle_length_days": float(rng.integers(15, 21))}
        if kind < 0.67:  # variable cycles whose last length looked normal
            return {"cycle_irregular": 1, "cycle_length_days": float(rng.integers(21, 36))}
        return {"cycle_irregular": 0, "cycle_length_days": float(rng.integers(24, 34))}
    length = round(_normal(rng, 28.5, 2.5, 22.0, 35.0))
    # Some women without ovulatory dysfunction still report "irregular" (recall noise).
    return {"cycle_irregular": _bernoulli(rng, 0.15), "cycle_length_days": float(length)}


def _hormones(
    rng: np.random.Generator,
    ha: bool,
    od: bool,
    phenotype: str,
    bmi: float,
    age: float,
    total_fnpo: int,
) -> dict[str, float]:
    """Reproductive and metabolic labs, shifted by the latent criteria.

    Hyperandrogenism is clinical and/or biochemical: only the biochemical kind raises
    testosterone, only the clinical kind raises the mFG score.
    """
    pcos = phenotype != ""
    ha_kind = _choice(rng, {"both": 0.4, "biochemical": 0.3, "clinical": 0.3}) if ha else "none"
    biochemical = ha_kind in ("both", "biochemical")
    hirsute = ha_kind in ("both", "clinical")
    insulin_factor = {"": 1.0, "A": 1.5, "B": 1.45, "C": 1.2, "D": 1.1}[phenotype]

    lh_median = 6.5 if pcos else (6.0 if od else 5.0)
    testosterone = _lognormal(rng, 1.45 if biochemical else 1.0, 0.45, 0.1, 6.0)
    # SHBG falls with adiposity and hyperinsulinaemia (modelled via BMI and PCOS).
    shbg_median = 55.0 * (23.0 / bmi) ** 1.3 * (0.8 if pcos else 1.0)
    # mFG overlaps between groups: the 2023 cut-off is 4-6 depending on ethnicity.
    hirsutism = 2 + rng.gamma(2.0, 2.5) if hirsute else rng.gamma(1.5, 2.2)
    # AMH is produced by small antral follicles: it tracks the follicle count, with assay and
    # biological noise, and declines with age.
    amh = 0.13 * total_fnpo * math.exp(1.1 * rng.standard_normal() - 0.03 * (age - 30.0))
    # A single "day-21" sample is often mistimed: it misses ovulation in ovulatory women and
    # catches an occasional ovulation in oligo-ovulatory ones.
    ovulated = rng.random() < (0.4 if od else 0.7)
    return {
        "lh_iu_l": round(_lognormal(rng, lh_median, 0.45, 1.0, 40.0), 2),
        "fsh_iu_l": round(_lognormal(rng, 6.0, 0.25, 2.0, 15.0), 2),
        "amh_ng_ml": round(float(np.clip(amh, 0.05, 25.0)), 2),
        "total_testosterone_nmol_l": round(testosterone, 2),
        "shbg_nmol_l": round(_lognormal(rng, shbg_median, 0.3, 10.0, 200.0), 1),
        "hirsutism_mfg_score": float(min(round(hirsutism), 36 if hirsute else 7)),
        # Progesterone is modelled as a mid-luteal (day-21) sample: low when anovulatory.
        "progesterone_ng_ml": round(
            _lognormal(rng, 9.0, 0.4, 2.0, 30.0)
            if ovulated
            else _lognormal(rng, 0.5, 0.5, 0.1, 3.0),
            2,
        ),
        "fasting_insulin_uiu_ml": round(
            _lognormal(rng, 6.5 * math.exp(0.06 * (bmi - 23.0)) * insulin_factor, 0.4, 1.0, 100.0),
            1,
        ),
        "acne": _bernoulli(rng, 0.18 + 0.20 * ha),
        "alopecia": _bernoulli(rng, 0.04 + 0.10 * ha),
    }


def _general_labs(rng: np.random.Generator, pcos: bool, bmi: float) -> dict[str, float]:
    """Exclusion work-up, metabolic labs and vitals; mostly driven by BMI, mildly by PCOS."""
    systolic = round(_normal(rng, 108.0 + 0.9 * (bmi - 23.0) + 2.0 * pcos, 9.0, 85.0, 175.0))
    diastolic = round(_normal(rng, 70.0 + 0.6 * (bmi - 23.0), 7.0, 50.0, 110.0))
    return {
        "tsh_miu_l": round(_lognormal(rng, 1.7, 0.45, 0.1, 12.0), 2),
        "prolactin_ng_ml": round(_lognormal(rng, 11.0, 0.4, 2.0, 60.0), 1),
        "fasting_glucose_mg_dl": round(
            _normal(rng, 86.0 + 0.7 * (bmi - 23.0) + 3.0 * pcos, 7.0, 65.0, 250.0)
        ),
        "vitamin_d_25oh_ng_ml": round(
            _lognormal(rng, 22.0 * math.exp(-0.015 * (bmi - 23.0)), 0.45, 3.0, 90.0), 1
        ),
        "acanthosis_nigricans": _bernoulli(rng, 0.03 + 0.02 * (bmi - 23.0) + 0.08 * pcos),
        "weight_gain": _bernoulli(rng, 0.20 + 0.02 * (bmi - 23.0) + 0.20 * pcos),
        "systolic_bp_mmhg": float(systolic),
        "diastolic_bp_mmhg": float(min(diastolic, systolic - 20)),
    }


def _derive(features: dict[str, float | None]) -> None:
    """Recompute derived columns from their (possibly missing) inputs, in place."""
    formulas: dict[str, tuple[Callable[[float, float], float], int]] = {
        "bmi_kg_m2": (lambda w, h: w / (h / 100.0) ** 2, 1),
        "waist_hip_ratio": (lambda w, h: w / h, 3),
        "lh_fsh_ratio": (lambda lh, fsh: lh / fsh, 2),
        "free_androgen_index": (lambda t, s: 100.0 * t / s, 2),  # FAI = 100 x T / SHBG (nmol/L)
    }
    for column, (formula, digits) in formulas.items():
        a, b = (features[name] for name in DERIVED_FROM[column])
        features[column] = None if a is None or b is None else round(formula(a, b), digits)


def _draw_features(
    rng: np.random.Generator, ha: bool, od: bool, phenotype: str, total_fnpo: int
) -> dict[str, float | None]:
    age = float(np.clip(round(18 + 27 * rng.beta(2.0, 2.5)), 18, 45))
    body = _anthropometry(rng, ha, phenotype)
    bmi = body["weight_kg"] / (body["height_cm"] / 100.0) ** 2
    features: dict[str, float | None] = {
        "age_years": age,
        **body,
        **_cycle(rng, od),
        **_hormones(rng, ha, od, phenotype, bmi, age, total_fnpo),
        **_general_labs(rng, phenotype != "", bmi),
    }
    for column, rate in MISSING_RATES.items():
        if rng.random() < rate:
            features[column] = None
    _derive(features)
    return {column: features[column] for column in FEATURE_COLUMNS}


def _draw_patient(seed: int, index: int) -> _Patient:
    """Everything about one patient except the image pixels, from its own random stream."""
    rng = np.random.default_rng([seed, index, _TABLE_STREAM])
    site = SITES[int(rng.choice(len(SITES), p=SITE_SHARES))]  # independent of the label
    ha, od, pcom, phenotype = _draw_criteria(rng)
    ovaries = _draw_ovaries(rng, pcom, od)
    total_fnpo = sum(ovary.fnpo for ovary in ovaries.values())
    features = _draw_features(rng, ha, od, phenotype, total_fnpo)
    no_table, no_images = rng.random() < P_NO_TABLE, rng.random() < P_NO_IMAGES
    if no_table and no_images:
        no_images = False  # every patient keeps at least one modality
    if no_table:
        features = dict.fromkeys(FEATURE_COLUMNS)
    sides: tuple[str, ...] = ("left", "right")
    if no_images:
        sides = ()
    elif rng.random() < P_ONE_IMAGE:
        sides = (sides[int(rng.integers(2))],)
    return _Patient(
        index=index,
        patient_id=f"SYN-{index + 1:05d}",
        site=site,
        ha=ha,
        od=od,
        pcom=pcom,
        phenotype=phenotype,
        ovaries=ovaries,
        features=features,
        image_sides=sides,
    )


# --- ultrasound rendering -----------------------------------------------------------------------


@dataclass(frozen=True)
class _SiteStyle:
    """Per-site scanner look (a mild, label-independent domain shift for subgroup analysis)."""

    half_angle_deg: float
    depth_mm: float
    gain: float
    grain: float  # speckle grain size multiplier


_SITE_STYLES = {
    "site_a": _SiteStyle(half_angle_deg=40.0, depth_mm=75.0, gain=1.00, grain=1.0),
    "site_b": _SiteStyle(half_angle_deg=35.0, depth_mm=68.0, gain=0.92, grain=1.3),
    "site_c": _SiteStyle(half_angle_deg=43.0, depth_mm=82.0, gain=1.08, grain=0.85),
}


@dataclass(frozen=True)
class _Geometry:
    """The fan: apex above the top centre, probe footprint radius ``r0``, far edge ``r_max``."""

    size: int
    apex_x: float
    apex_y: float
    half_angle: float  # radians
    r0: float
    r_max: float
    px_per_mm: float
    r: np.ndarray  # distance of each pixel from the apex
    theta: np.ndarray  # angle of each pixel from straight down, radians

    @property
    def span(self) -> float:
        return self.r_max - self.r0

    def point(self, r: float, theta: float) -> tuple[float, float]:
        return self.apex_x + r * math.sin(theta), self.apex_y + r * math.cos(theta)

    def ray(self, x: float, y: float) -> tuple[float, float]:
        """Unit vector pointing away from the probe at (x, y): where shadows and enhancement go."""
        dx, dy = x - self.apex_x, y - self.apex_y
        norm = math.hypot(dx, dy) or 1.0
        return dx / norm, dy / norm


@lru_cache(maxsize=4)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of pixel centres (cached: the same for every image)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    yy.flags.writeable = xx.flags.writeable = False  # shared between threads
    return yy, xx


def _geometry(rng: np.random.Generator, size: int, style: _SiteStyle) -> _Geometry:
    half = math.radians(np.clip(style.half_angle_deg + rng.uniform(-4, 4), 30.0, 45.0))
    apex_y = -rng.uniform(0.02, 0.08) * size
    r0 = -apex_y + rng.uniform(0.06, 0.11) * size
    r_max = rng.uniform(0.93, 1.0) * size - apex_y
    depth_mm = style.depth_mm + rng.uniform(-8, 8)
    yy, xx = _pixel_centres(size)
    dx, dy = xx - size / 2.0, yy - apex_y
    return _Geometry(
        size=size,
        apex_x=size / 2.0,
        apex_y=apex_y,
        half_angle=half,
        r0=r0,
        r_max=r_max,
        px_per_mm=(r_max - r0) / depth_mm,
        r=np.hypot(dx, dy),
        theta=np.arctan2(dx, dy),
    )


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency texture in [-1, 1]-ish: a coarse random grid upsampled smoothly."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


_SHIFT = 4  # fractional bits for cv2 drawing: sub-pixel positions, so small follicles stay round
_ONE = 1 << _SHIFT


def _fill_ellipse(
    canvas: np.ndarray,
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle_deg: float,
    value: float = 1.0,
    thickness: int = -1,
) -> None:
    """Draw an anti-aliased ellipse (filled by default) on a float32 canvas."""
    cv2.ellipse(
        canvas,
        (round(centre[0] * _ONE), round(centre[1] * _ONE)),
        (max(1, round(axes[0] * _ONE)), max(1, round(axes[1] * _ONE))),
        angle_deg,
        0,
        360,
        value,
        thickness,
        cv2.LINE_AA,
        _SHIFT,
    )


def _background(rng: np.random.Generator, geo: _Geometry) -> np.ndarray:
    """Pelvic soft tissue: patchy echogenicity plus a few bright curved fascial planes."""
    size = geo.size
    tissue = 0.36 + 0.10 * _smooth_noise(rng, size, 5) + 0.07 * _smooth_noise(rng, size, 16)
    planes: np.ndarray = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        r = geo.r0 + rng.uniform(0.15, 0.95) * geo.span
        cx, cy = geo.point(r, rng.uniform(-0.6, 0.6) * geo.half_angle)
        axes = (rng.uniform(0.3, 0.8) * size, rng.uniform(0.05, 0.25) * size)
        start = rng.uniform(0, 360)
        cv2.ellipse(
            planes,
            (round(cx * _ONE), round(cy * _ONE - axes[1] * _ONE)),
            (round(axes[0] * _ONE), round(axes[1] * _ONE)),
            rng.uniform(-20, 20),
            start,
            start + rng.uniform(40, 120),
            float(rng.uniform(0.5, 1.0)),
            max(1, round(size / 128)),
            cv2.LINE_AA,
            _SHIFT,
        )
    planes = cv2.GaussianBlur(planes, (0, 0), max(0.6, size / 256))
    return np.clip(tissue, 0.15, 0.9) + 0.45 * planes


_CANDIDATES = 96  # candidate centres tried at once per follicle
_TRIES = 8  # shrink-and-retry rounds before a follicle is placed regardless


def _place_follicles(
    rng: np.random.Generator, radii: np.ndarray, a: float, b: float, peripheral: bool
) -> np.ndarray:
    """Non-overlapping follicle centres inside an ellipse with semi-axes (a, b); rows (u, v, r).

    Largest first. Each follicle tries a batch of candidate centres at once (vectorised) and takes
    the most peripheral free one for PCOM ("string of pearls"), a random free one otherwise. A
    follicle that does not fit shrinks and tries again; the last round places it anyway, so the
    number drawn always equals the requested count.
    """
    placed = np.zeros((radii.size, 3), np.float64)
    for k, radius in enumerate(np.sort(radii)[::-1]):
        r = float(radius)
        for attempt in range(_TRIES):
            ai, bi = max(a - 1.1 * r, 0.0), max(b - 1.1 * r, 0.0)
            # PCOM candidates favour the outer ring of the ovary, leaving central stroma.
            rho = np.sqrt(rng.uniform(0.3 if peripheral else 0.0, 1.0, _CANDIDATES))
            phi = rng.uniform(0.0, 2 * math.pi, _CANDIDATES)
            u, v = ai * rho * np.cos(phi), bi * rho * np.sin(phi)
            gap = 0.12 * r + 0.25  # thin bright septa between packed follicles
            done = placed[:k]
            dist = np.hypot(u[:, None] - done[:, 0], v[:, None] - done[:, 1])
            free = np.all(dist >= done[:, 2] + r + gap, axis=1)
            if free.any() or attempt == _TRIES - 1:
                options = np.flatnonzero(free) if free.any() else np.arange(_CANDIDATES)
                # PCOM: the most peripheral free spot, give or take, so the follicles crowd the
                # outer rim without forming a perfect ring.
                score = rho[options] + 0.12 * rng.standard_normal(options.size)
                pick = options[np.argmax(score)] if peripheral else options[0]
                placed[k] = (u[pick], v[pick], r)
                break
            r *= 0.88
    return placed


def _follicle_radii_px(rng: np.random.Generator, ovary: _Ovary, px_per_mm: float) -> np.ndarray:
    """Follicle radii in pixels: 2-9 mm diameters, small and uniform in PCOM, varied otherwise."""
    if ovary.pcom:
        diameters = np.clip(2.0 + rng.gamma(4.0, 0.8, ovary.fnpo), 2.0, 9.0)
    else:
        diameters = np.clip(2.0 + rng.gamma(2.0, 1.8, ovary.fnpo), 2.0, 9.0)
    return diameters * px_per_mm / 2.0


def _blob_polygon(
    rng: np.random.Generator, centre: tuple[float, float], axes: tuple[float, float], angle: float
) -> np.ndarray:
    """Outline of a roughly elliptical fluid structure with a slightly irregular wall, as int32
    points in cv2's fixed-point format (``_SHIFT`` fractional bits)."""
    n = 20
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    wobble = 1.0 + 0.07 * rng.standard_normal(n)
    wobble = (wobble + np.roll(wobble, 1) + np.roll(wobble, -1)) / 3.0  # smooth, not spiky
    x, y = axes[0] * wobble * np.cos(t), axes[1] * wobble * np.sin(t)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    pts = np.stack([centre[0] + x * c - y * s, centre[1] + x * s + y * c], axis=1)
    return np.round(pts * _ONE).astype(np.int32)


def _draw_cyst(
    rng: np.random.Generator,
    layers: dict[str, np.ndarray],
    geo: _Geometry,
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
) -> None:
    """One anechoic structure: dark fill, faint bright wall, posterior acoustic enhancement."""
    cx, cy = centre
    rx, ry = geo.ray(cx, cy)
    reach = max(axes)
    outline = _blob_polygon(rng, centre, axes, angle)
    cv2.polylines(
        layers["rim"], [outline], True, 1.0, max(1, round(reach / 5)), cv2.LINE_AA, _SHIFT
    )
    cv2.fillPoly(layers["fluid"], [outline], 1.0, cv2.LINE_AA, _SHIFT)
    behind = (cx + rx * 1.6 * reach, cy + ry * 1.6 * reach)
    along = math.degrees(math.atan2(ry, rx))
    _fill_ellipse(layers["enhance"], behind, (1.4 * reach, 0.85 * reach), along)


@dataclass(frozen=True)
class _Placement:
    """Where the ovary landed (pixels): distractors are kept clear of it."""

    cx: float
    cy: float
    a: float
    b: float
    angle_deg: float

    def contains(self, xs: np.ndarray, ys: np.ndarray, margin: float) -> np.ndarray:
        """Which points lie inside the ovary grown by ``margin`` pixels."""
        c, s = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        u = (xs - self.cx) * c + (ys - self.cy) * s
        v = -(xs - self.cx) * s + (ys - self.cy) * c
        return (u / (self.a + margin)) ** 2 + (v / (self.b + margin)) ** 2 <= 1.0


def _draw_ovary(
    rng: np.random.Generator,
    geo: _Geometry,
    ovary: _Ovary,
    layers: dict[str, np.ndarray],
    min_depth: float,
) -> _Placement:
    """The ovary: an ellipse of stroma at a random place, size and tilt, with its follicles.

    Volume sets the size (prolate ellipsoid, V = 0.5 x L x W x T); the image shows the L x W
    section. The field of view zooms out when needed so a large ovary always fits in the fan.
    """
    w_ratio, t_ratio = rng.uniform(0.6, 0.75), rng.uniform(0.5, 0.7)
    length_mm = 10.0 * (ovary.volume_ml / (0.5 * w_ratio * t_ratio)) ** (1 / 3)
    scale = min(geo.px_per_mm, 0.62 * geo.span / length_mm)  # zoom out for big ovaries
    a, b = 0.5 * length_mm * scale, 0.5 * length_mm * w_ratio * scale
    depth = geo.r0 + rng.uniform(max(min_depth, a / geo.span + 0.05), 0.72) * geo.span
    lateral = rng.uniform(-0.45, 0.45) * geo.half_angle
    cx, cy = geo.point(min(depth, geo.r_max - a), lateral)
    angle = rng.uniform(-35, 35)
    _fill_ellipse(layers["ovary"], (cx, cy), (a, b), angle)
    _fill_ellipse(layers["rim"], (cx, cy), (a, b), angle, 0.35, max(1, round(scale)))  # capsule

    radii = _follicle_radii_px(rng, ovary, scale)
    area_cap = (0.45 if ovary.pcom else 0.35) * math.pi * a * b
    radii *= min(1.0, math.sqrt(area_cap / max(float(np.sum(math.pi * radii**2)), 1e-6)))
    dominant = rng.random() < (0.4 if ovary.ovulatory and not ovary.pcom else 0.05)
    if dominant:  # a 10-20 mm dominant follicle: not counted in FNPO (2-9 mm)
        radii = np.append(radii, min(rng.uniform(5.0, 10.0) * scale, 0.7 * b))
    follicles = _place_follicles(rng, radii, a, b, peripheral=ovary.pcom)
    cos_t, sin_t = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    for u, v, r in follicles:
        centre = (cx + u * cos_t - v * sin_t, cy + u * sin_t + v * cos_t)
        squash = rng.uniform(0.8, 1.0)  # follicles are round-ish, compressed when packed
        _draw_cyst(rng, layers, geo, centre, (r, r * squash), rng.uniform(0, 180))
    return _Placement(cx, cy, a, b, angle)


def _draw_bladder(rng: np.random.Generator, geo: _Geometry, layers: dict[str, np.ndarray]) -> float:
    """Sometimes a bladder: a large anechoic region in the near field. Returns the shallowest
    relative depth the ovary may then take (below the bladder)."""
    if rng.random() >= 0.15:
        return 0.12
    axes = (rng.uniform(0.14, 0.24) * geo.size, rng.uniform(0.05, 0.09) * geo.size)
    depth = geo.r0 + axes[1] + rng.uniform(0.03, 0.1) * geo.span
    centre = geo.point(depth, rng.uniform(-0.3, 0.3) * geo.half_angle)
    _draw_cyst(rng, layers, geo, centre, axes, rng.uniform(-15, 15))
    return (depth + axes[1] - geo.r0) / geo.span + 0.15


def _draw_vessel(
    rng: np.random.Generator, geo: _Geometry, layers: dict[str, np.ndarray], ovary: _Placement
) -> None:
    """Sometimes an iliac vessel beside the ovary: a long thin anechoic tube, never over it (a
    dark blob on the ovary would be miscounted as a follicle)."""
    if rng.random() >= 0.35:
        return
    for _ in range(6):
        centre = geo.point(geo.r0 + rng.uniform(0.3, 0.9) * geo.span, rng.uniform(-0.8, 0.8))
        axes = (rng.uniform(25, 45) * geo.px_per_mm / 2, rng.uniform(3, 6) * geo.px_per_mm / 2)
        angle = rng.uniform(-40, 40)
        t = np.linspace(-1.0, 1.0, 15) * axes[0]
        xs = centre[0] + t * math.cos(math.radians(angle))
        ys = centre[1] + t * math.sin(math.radians(angle))
        if not ovary.contains(xs, ys, margin=axes[1] + 2.0).any():
            _draw_cyst(rng, layers, geo, centre, axes, angle)
            return


def _draw_bowel(
    rng: np.random.Generator, geo: _Geometry, layers: dict[str, np.ndarray], ovary: _Placement
) -> None:
    """Sometimes bowel: bright curved gas interfaces casting dark shadows along the rays, placed
    at an angle where the shadow misses the ovary."""
    if rng.random() >= 0.25:
        return
    ovary_theta = math.atan2(ovary.cx - geo.apex_x, ovary.cy - geo.apex_y)
    ovary_reach = math.hypot(ovary.a, ovary.b) / math.hypot(
        ovary.cx - geo.apex_x, ovary.cy - geo.apex_y
    )
    width = rng.uniform(0.03, 0.07)
    choices = np.linspace(-0.85, 0.85, 35) * geo.half_angle
    clear = choices[np.abs(choices - ovary_theta) > ovary_reach + 2 * width]
    if clear.size == 0:
        return
    theta = float(rng.choice(clear))
    r = geo.r0 + rng.uniform(0.25, 0.75) * geo.span
    centre = geo.point(r, theta)
    loop = (rng.uniform(5.0, 10.0) * geo.px_per_mm, rng.uniform(3.0, 6.0) * geo.px_per_mm)
    tilt = math.degrees(-theta) + rng.normal(0, 15)
    _fill_ellipse(layers["gas"], centre, loop, tilt, 0.25)  # echogenic bowel content
    _fill_ellipse(layers["gas"], centre, loop, tilt, 0.35, max(1, round(geo.px_per_mm)))  # wall
    for _ in range(int(rng.integers(2, 4))):  # bright gas echoes in the loop's near half
        x, y = geo.point(r - rng.uniform(0.0, 0.6) * loop[1], theta + rng.normal(0, 0.4 * width))
        axes = (rng.uniform(1.5, 4.0) * geo.px_per_mm, rng.uniform(0.5, 1.0) * geo.px_per_mm)
        _fill_ellipse(layers["gas"], (x, y), axes, math.degrees(-theta), 0.8)
    r += 0.5 * loop[1]
    # The shadow starts just behind the gas and fades in softly, in depth and across angle.
    onset = np.clip((geo.r - r - 2.0 * geo.px_per_mm) / (3.0 * geo.px_per_mm), 0, 1)
    across = np.exp(-(((geo.theta - theta) / width) ** 2))
    layers["shadow"] += (0.75 * onset * across).astype(np.float32)


def _speckle(rng: np.random.Generator, geo: _Geometry, grain: float) -> np.ndarray:
    """Multiplicative Rayleigh speckle with mean 1, made on the beam grid (depth x angle) and
    warped into the fan, so grains stretch laterally and coarsen with depth as on a real scanner.
    """
    n_r = max(8, round(geo.span / grain))
    n_t = max(8, round(2 * geo.half_angle * (geo.r0 + 0.5 * geo.span) / (1.3 * grain)))
    beams = rng.rayleigh(1.0 / math.sqrt(math.pi / 2), (n_r, n_t)).astype(np.float32)
    # Float32 in, float32 out: asarray only tells the type checker (it copies nothing).
    beams = np.asarray(cv2.GaussianBlur(beams, (0, 0), sigmaX=0.8, sigmaY=0.5), np.float32)
    beams /= float(beams.mean())
    map_x = ((geo.theta + geo.half_angle) / (2 * geo.half_angle) * (n_t - 1)).astype(np.float32)
    map_y = ((geo.r - geo.r0) / geo.span * (n_r - 1)).astype(np.float32)
    return cv2.remap(beams, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _echogenicity(
    rng: np.random.Generator, geo: _Geometry, layers: dict[str, np.ndarray]
) -> np.ndarray:
    """The noiseless reflectivity map: background, stroma, fluid, walls, enhancement, shadows."""
    size = geo.size
    tissue = _background(rng, geo)
    # Ovarian stroma is a little more echogenic than the surrounding tissue, so the ovary stands
    # out by texture and brightness, with a soft border.
    stroma = rng.uniform(0.5, 0.65) * (1.0 + 0.1 * _smooth_noise(rng, size, 12))
    ovary = cv2.GaussianBlur(layers["ovary"], (0, 0), max(0.8, size / 100))
    tissue = tissue * (1 - ovary) + stroma * ovary
    fluid = cv2.GaussianBlur(np.clip(layers["fluid"], 0, 1), (0, 0), max(0.4, size / 400))
    enhance = cv2.GaussianBlur(np.clip(layers["enhance"], 0, 1), (0, 0), max(1.0, size / 96))
    rim = cv2.GaussianBlur(np.clip(layers["rim"], 0, 1), (0, 0), max(0.4, size / 512))
    tissue = tissue * (1 + 0.25 * enhance) + 0.2 * rim
    tissue = tissue * (1 - fluid) + 0.05 * fluid  # anechoic fluid, a few internal echoes
    shadow = np.clip(layers["shadow"], 0, 0.9)
    return tissue * (1 - shadow) + 1.2 * np.clip(layers["gas"], 0, 1)


def _compose(
    rng: np.random.Generator, geo: _Geometry, layers: dict[str, np.ndarray], style: _SiteStyle
) -> np.ndarray:
    """Echogenicity -> speckle, attenuation, log compression, gain, fan mask -> uint8 pixels."""
    size = geo.size
    tissue = _echogenicity(rng, geo, layers)
    depth = np.clip((geo.r - geo.r0) / geo.span, 0, 1)
    # Attenuation with partial time-gain compensation, plus near-field reverberation.
    profile = np.exp(-rng.uniform(0.6, 1.6) * depth) * (1 + rng.uniform(0.3, 1.2) * depth)
    profile += 0.5 * np.exp(-(geo.r - geo.r0) / (0.03 * size))
    profile *= 1 - 0.35 * np.clip(np.abs(geo.theta) / geo.half_angle, 0, 1) ** 4  # fan edges
    amp = tissue * _speckle(rng, geo, style.grain * max(0.6, size / 256)) * profile

    display = np.log1p(3.0 * amp) / math.log1p(3.0 * 1.2)  # log compression
    # Per-image gain (brightness) and contrast (gamma), as sonographers set them differently.
    gain = style.gain * rng.uniform(0.9, 1.25)
    display = gain * np.power(np.clip(display, 0, None), rng.uniform(1.1, 1.6))
    display = cv2.GaussianBlur(display.astype(np.float32), (0, 0), 0.5)
    edge = np.clip((geo.half_angle - np.abs(geo.theta)) * geo.r, 0, 1)  # ~1 px soft fan edge
    fan = edge * np.clip(geo.r - geo.r0, 0, 1) * np.clip(geo.r_max - geo.r, 0, 1)
    return np.clip(display * fan * 255.0, 0, 255).astype(np.uint8)


def _render_ultrasound(rng: np.random.Generator, ovary: _Ovary, size: int, site: str) -> np.ndarray:
    """A grayscale 8-bit transvaginal-ultrasound-like image of one ovary showing FNPO follicles."""
    style = _SITE_STYLES[site]
    geo = _geometry(rng, size, style)
    layers = {
        name: np.zeros((size, size), np.float32)
        for name in ("ovary", "fluid", "rim", "enhance", "gas", "shadow")
    }
    min_depth = _draw_bladder(rng, geo, layers)
    placement = _draw_ovary(rng, geo, ovary, layers, min_depth)
    _draw_vessel(rng, geo, layers, placement)
    _draw_bowel(rng, geo, layers, placement)
    return _compose(rng, geo, layers, style)


# --- writing the cohort -------------------------------------------------------------------------


def _patients_table(patients: list[_Patient], with_ultrasound_columns: bool) -> pd.DataFrame:
    rows = []
    for p in patients:
        row: dict[str, Any] = {
            "patient_id": p.patient_id,
            "pcos": int(p.pcos),
            "severity": p.severity,
            "site": p.site,
            **p.features,
        }
        if with_ultrasound_columns:
            row.update(_ultrasound_row(p))
        rows.append(row)
    columns = PATIENT_COLUMNS + (ULTRASOUND_COLUMNS if with_ultrasound_columns else [])
    table = pd.DataFrame(rows, columns=columns)
    for column in INTEGER_COLUMNS.intersection(columns):
        table[column] = table[column].astype("Float64").round().astype("Int64")
    return table


def _ultrasound_row(p: _Patient) -> dict[str, float | None]:
    """The scan report's per-ovary counts and volumes: absent when that side was not scanned
    (no image) or the patient has no tabular record."""
    has_table = any(value is not None for value in p.features.values())
    row: dict[str, float | None] = {}
    for side in ("left", "right"):
        seen = has_table and side in p.image_sides
        row[f"follicle_count_{side}"] = p.ovaries[side].fnpo if seen else None
        row[f"ovarian_volume_{side}_ml"] = p.ovaries[side].volume_ml if seen else None
    return row


def _truth_table(patients: list[_Patient]) -> pd.DataFrame:
    rows = [
        {
            "patient_id": p.patient_id,
            "ovulatory_dysfunction": int(p.od),
            "hyperandrogenism": int(p.ha),
            "pcom": int(p.pcom),
            "phenotype": p.phenotype,
            "fnpo_left": p.ovaries["left"].fnpo,
            "fnpo_right": p.ovaries["right"].fnpo,
            "ovarian_volume_left_ml": p.ovaries["left"].volume_ml,
            "ovarian_volume_right_ml": p.ovaries["right"].volume_ml,
        }
        for p in patients
    ]
    return pd.DataFrame(rows, columns=TRUTH_COLUMNS)


def _image_jobs(patients: list[_Patient]) -> list[tuple[_Patient, str, str]]:
    """(patient, side, relative path) for every image to write, in manifest order."""
    return [
        (p, side, f"images/{p.patient_id}_{_SIDE_SUFFIX[side]}.png")
        for p in patients
        for side in p.image_sides
    ]


def _write_image(out_dir: Path, seed: int, size: int, job: tuple[_Patient, str, str]) -> None:
    patient, side, rel_path = job
    stream = _LEFT_STREAM if side == "left" else _RIGHT_STREAM
    rng = np.random.default_rng([seed, patient.index, stream])
    pixels = _render_ultrasound(rng, patient.ovaries[side], size, patient.site)
    ok, encoded = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - OpenCV only fails here on a broken build
        raise RuntimeError(f"OpenCV could not encode {rel_path} as PNG")
    # imencode + write_bytes rather than cv2.imwrite: same encoder, but safe with non-ASCII paths.
    (out_dir / rel_path).write_bytes(encoded.tobytes())


def _remove_stale_images(images_dir: Path, keep: set[str]) -> None:
    """Delete images this generator wrote on an earlier, larger run into the same folder, so the
    folder matches the manifest. Only files named like ours (SYN-00001_L.png) are touched."""
    for path in images_dir.iterdir():
        if path.is_file() and _IMAGE_NAME.match(path.name) and path.name not in keep:
            path.unlink()


def _cohort_yaml(seed: int, n_patients: int) -> dict[str, Any]:
    return {
        "name": "synthetic",
        "description": (
            f"Synthetic PCOS cohort (deeppcos generator, seed {seed}, {n_patients} patients)"
        ),
        "format": "tables",
        "label_name": "pcos",
        "patients": {
            "path": "patients.csv",
            "id_column": "patient_id",
            "label_column": "pcos",
            "severity_column": "severity",
            "severity_levels": list(SEVERITY_LEVELS),
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


def _check_arguments(n_patients: int, seed: int, image_size: int) -> None:
    if not isinstance(n_patients, int) or n_patients < 1:
        raise ValueError(f"n_patients must be a positive integer, got {n_patients!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(image_size, int) or not 32 <= image_size <= 2048:
        raise ValueError(
            f"image_size must be an integer from 32 to 2048 pixels, got {image_size!r}"
        )


def generate_cohort(
    out_dir: Path | str,
    n_patients: int = 600,
    seed: int = 0,
    image_size: int = 256,
    with_ultrasound_columns: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write patients.csv, images.csv, images/*.png, truth.csv and cohort.yaml into out_dir;
    return the path of cohort.yaml.

    ``truth.csv`` holds the latent criteria, phenotype and per-ovary FNPO and volume: ground truth
    for tests and benchmarks, never a model input. With ``with_ultrasound_columns`` the scan
    report's follicle counts and ovarian volumes are also added to patients.csv (then the table
    alone nearly determines PCOM). ``progress(done, total)`` is called as images are written.
    The same arguments always produce byte-identical files.
    """
    _check_arguments(n_patients, seed, image_size)
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)

    patients = [_draw_patient(seed, index) for index in range(n_patients)]
    jobs = _image_jobs(patients)
    csv_options: dict[str, Any] = {"index": False, "lineterminator": "\n"}
    _patients_table(patients, with_ultrasound_columns).to_csv(
        out_dir / "patients.csv", **csv_options
    )
    _truth_table(patients).to_csv(out_dir / "truth.csv", **csv_options)
    manifest = pd.DataFrame(
        [
            {"image_id": Path(rel).stem, "patient_id": p.patient_id, "path": rel, "side": side}
            for p, side, rel in jobs
        ],
        columns=["image_id", "patient_id", "path", "side"],
    )
    manifest.to_csv(out_dir / "images.csv", **csv_options)
    _remove_stale_images(images_dir, {Path(rel).name for _, _, rel in jobs})

    total = len(jobs)
    if progress is not None:
        progress(0, total)
    # OpenCV and numpy release the GIL in the heavy calls, so threads render in parallel; every
    # image has its own seed, so the result does not depend on the order in which threads run.
    write = partial(_write_image, out_dir, seed, image_size)
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for done, _ in enumerate(pool.map(write, jobs), start=1):
            if progress is not None:
                progress(done, total)

    spec_path = out_dir / "cohort.yaml"
    spec_path.write_text(
        yaml.safe_dump(_cohort_yaml(seed, n_patients), sort_keys=False), encoding="utf-8"
    )
    return spec_path
