"""One patient's explanation: the object the HTML/PDF report and the dashboard both read.

:func:`explain_patient` predicts the patient with the run's predictor (so the numbers are the
ones ``deeppcos predict`` gives), splits the fused logit exactly into the ultrasound images, each
tabular feature and the bias (:mod:`deeppcos.explain.fusion`), draws saliency maps on each of
her images (:mod:`deeppcos.explain.saliency`), checks the Rotterdam criteria the table allows
(:mod:`deeppcos.explain.checklist`) and adds a model-card summary and the caveats.

Effects are given two ways: in **logit points** of the fused score (exact and additive: the
contributions and the bias sum to the score), and as the **calibrated risk without it** — the
risk the model would give if that one contribution were removed from the score. The second is
a one-at-a-time counterfactual on the model's own scale, easier to read but not additive.

Nothing in the object identifies the patient beyond the cohort's own ``patient_id``: no file
paths, no acquisition metadata, and the images' burned-in margin text is blanked.
"""

from __future__ import annotations

import datetime as dt
import json
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.exceptions import DeepPCOSError, SchemaError
from deeppcos.explain.card import DECISION_SUPPORT_TEXT, model_card_summary
from deeppcos.explain.checklist import CriteriaChecklist, criteria_checklist
from deeppcos.explain.fusion import (
    BIAS,
    TABULAR_ADJUSTMENT,
    TABULAR_MISSING,
    ULTRASOUND,
    ExplainedPredictions,
    explain_predictions,
)
from deeppcos.explain.saliency import ImageSaliency, LoadedImages
from deeppcos.explain.wording import (
    display_unit,
    feature_label,
    format_percent,
    format_value,
    typical_range,
)

__all__ = ["FeatureEffect", "PatientExplanation", "explain_patient"]

# Below this many logit points an effect is reported as "no effect".
NEGLIGIBLE = 0.005

CAVEATS = (
    "Contributions explain this model's score, not the patient's physiology. They are exact "
    "shares of the fused score in logit points (before calibration); 'risk without it' removes "
    "one contribution at a time, and such changes do not add up.",
    "A measurement that was not taken also has a contribution: the model's learned effect of it "
    "being missing.",
    "Heatmaps show where the image model found evidence for PCOS (Grad-CAM at the coarse "
    "resolution of its last feature map); they are not an outline of follicles and can highlight "
    "artefacts.",
    "The criteria checklist reads the table only, not the images, and does not apply the "
    "exclusions (thyroid disease, hyperprolactinaemia, non-classic congenital adrenal "
    "hyperplasia) that a diagnosis requires.",
)


@dataclass
class FeatureEffect:
    """One tabular feature's share of the fused score."""

    name: str
    label: str
    value: float | None  # as the model saw it (derived features included); None = not measured
    value_text: str
    unit: str
    typical: str
    logit: float  # logit points of the fused score
    risk_without: float | None  # calibrated risk with this contribution removed
    ultrasound_derived: bool = False

    @property
    def direction(self) -> str:
        if abs(self.logit) < NEGLIGIBLE:
            return "no effect"
        return "raised" if self.logit > 0 else "lowered"

    def sentence(self, risk: float | None) -> str:
        """E.g. "AMH 11.2 ng/mL (typical: …): raised the risk by 0.84 logit points (risk 62%;
        31% without it)"."""
        typical = f" (typical: {self.typical})" if self.typical else ""
        head = f"{self.label} {self.value_text}{typical}"
        if self.direction == "no effect":
            return f"{head}: no effect on the score"
        tail = ""
        if risk is not None and self.risk_without is not None:
            tail = f" (risk {format_percent(risk)}; {format_percent(self.risk_without)} without it)"
        return f"{head}: {self.direction} the risk by {abs(self.logit):.2f} logit points{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "direction": self.direction}


@dataclass
class PatientExplanation:
    """Everything a report or dashboard shows about one patient's prediction."""

    patient_id: str
    run: str
    cohort: str
    fusion_method: str
    modalities: str
    prediction: dict[str, Any]  # p_tabular, p_image, probability, risk, decision, threshold
    severity: dict[str, Any] | None  # {"grade", "probabilities"} when the run grades severity
    logit: float | None
    shares: dict[str, float]  # bias, ultrasound, tabular (+ its parts), in logit points
    features: list[FeatureEffect]  # every tabular feature, largest |effect| first
    tabular_branch: dict[str, Any] | None  # the tabular branch's own TreeSHAP (its logit units)
    criteria: CriteriaChecklist | None
    images: list[ImageSaliency]
    model_card: dict[str, Any]
    caveats: list[str]
    in_training_data: str | None = None  # "development" / "test" / None (another cohort)
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    )

    @property
    def risk(self) -> float | None:
        return self.prediction.get("risk")

    def top_features(self, k: int = 8) -> list[FeatureEffect]:
        """The ``k`` largest effects (either direction), skipping those with none."""
        return [f for f in self.features if f.direction != "no effect"][:k]

    def to_dict(self, images: bool = True) -> dict[str, Any]:
        """JSON-safe (``json.dumps`` works on it); overlays as base64 PNG when ``images``."""
        data = {
            "patient_id": self.patient_id,
            "run": self.run,
            "cohort": self.cohort,
            "fusion_method": self.fusion_method,
            "modalities": self.modalities,
            "prediction": self.prediction,
            "severity": self.severity,
            "logit": self.logit,
            "shares": self.shares,
            "features": [f.to_dict() for f in self.features],
            "tabular_branch": self.tabular_branch,
            "criteria": self.criteria.to_dict() if self.criteria is not None else None,
            "images": [image.to_dict(images) for image in self.images],
            "model_card": self.model_card,
            "caveats": self.caveats,
            "in_training_data": self.in_training_data,
            "created": self.created,
        }
        return json.loads(json.dumps(data, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --- building it --------------------------------------------------------------------------------


def explain_patient(
    predictor: Any,
    patient_id: str,
    cohort: Any = None,
    *,
    saliency: str | None = "gradcam",
    max_images: int | None = None,
    criteria_rules: Any = None,
) -> PatientExplanation:
    """Explain one patient's prediction. ``cohort`` defaults to the run's own (fingerprint
    checked); ``saliency`` is ``"gradcam"``, ``"gradient_shap"`` or None (no image maps);
    ``max_images`` limits how many of her images get a map."""
    from deeppcos.explain.saliency import METHODS

    if saliency is not None and saliency not in METHODS:
        raise SchemaError(f"saliency must be one of {list(METHODS)} or None; got {saliency!r}")
    cohort = cohort if cohort is not None else predictor.cohort()
    patient_id = str(patient_id)
    check_patient(predictor, cohort, patient_id)
    images = _load_images(predictor, cohort, patient_id, saliency)
    explained = _explain(predictor, cohort, patient_id, images)
    row = explained.predictions.loc[patient_id]
    calibrator = predictor.calibrator
    logit = _float(explained.attribution.logit.loc[patient_id])
    terms = explained.attribution.row(patient_id)
    part = _training_part(predictor, cohort, patient_id)
    return PatientExplanation(
        patient_id=patient_id,
        run=Path(predictor.run).name,
        cohort=cohort.spec.name,
        fusion_method=explained.attribution.method,
        modalities=str(row["modalities"]),
        prediction=_prediction(row, predictor.threshold),
        severity=_severity(row),
        logit=logit,
        shares=_shares(terms, explained.attribution.features, logit, calibrator),
        features=_effects(explained, patient_id, logit, calibrator),
        tabular_branch=_tabular_branch(explained, patient_id),
        criteria=_criteria(cohort, patient_id, criteria_rules),
        images=_maps(predictor, cohort, patient_id, images, saliency, max_images),
        model_card=model_card_summary(predictor),
        caveats=[DECISION_SUPPORT_TEXT, *CAVEATS, *_part_caveat(part)],
        in_training_data=part,
    )


def check_patient(predictor: Any, cohort: Any, patient_id: str) -> None:
    """SchemaError naming the run and cohort, with examples of valid ids, for an unknown id."""
    ids = cohort.patients["patient_id"].astype(str)
    if patient_id in set(ids):
        return
    examples = ", ".join(ids.head(3))
    source = getattr(getattr(cohort.spec, "patients", None), "path", None)
    where = f" ({source})" if source else ""
    raise SchemaError(
        f"run {predictor.run}: patient {patient_id!r} is not in the cohort {cohort.spec.name!r} "
        f"({len(ids)} patients; ids look like {examples}). The ids are the patient_id column of "
        f"the cohort's patients table{where}; 'deeppcos validate SPEC --json -' lists the "
        "cohort, and --spec explains a patient of another cohort"
    )


def _float(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def _risk_without(calibrator: Any, logit: float | None, terms: np.ndarray) -> list[float | None]:
    """Calibrated risk with each term removed from the logit, one at a time."""
    if logit is None or calibrator is None:
        return [None] * len(terms)
    from deeppcos.fusion.late import sigmoid

    risks = calibrator.transform(sigmoid(logit - np.asarray(terms, dtype="float64")))
    return [_float(r) for r in np.asarray(risks, dtype="float64")]


def _prediction(row: pd.Series, threshold: float | None) -> dict[str, Any]:
    decision = row["decision"]
    return {
        "p_tabular": _float(row.get("p_tabular")),
        "p_image": _float(row.get("p_image")),
        "probability": _float(row["probability"]),
        "risk": _float(row["risk"]),
        "decision": None if pd.isna(decision) else bool(decision),
        "threshold": threshold,
    }


def _severity(row: pd.Series) -> dict[str, Any] | None:
    if "severity" not in row.index or pd.isna(row["severity"]):
        return None
    probabilities = {
        str(k)[len("p_severity_") :]: _float(v)
        for k, v in row.items()
        if str(k).startswith("p_severity_")
    }
    return {"grade": str(row["severity"]), "probabilities": probabilities}


def _shares(
    terms: pd.Series, features: list[str], logit: float | None, calibrator: Any
) -> dict[str, float]:
    if logit is None:
        return {}
    parts = {
        "tabular_features": float(terms[features].sum()) if features else 0.0,
        TABULAR_MISSING: float(terms[TABULAR_MISSING]),
        TABULAR_ADJUSTMENT: float(terms[TABULAR_ADJUSTMENT]),
    }
    tabular = sum(parts.values())
    ultrasound = float(terms[ULTRASOUND])
    scale = abs(ultrasound) + abs(tabular)
    without = _risk_without(calibrator, logit, np.array([ultrasound, tabular]))
    return {
        BIAS: float(terms[BIAS]),
        ULTRASOUND: ultrasound,
        "tabular": tabular,
        **parts,
        "ultrasound_fraction": abs(ultrasound) / scale if scale > 0 else float("nan"),
        "risk_without_ultrasound": without[0],
        "risk_without_tabular": without[1],
        "logit": logit,
    }


def _effects(
    explained: ExplainedPredictions, patient_id: str, logit: float | None, calibrator: Any
) -> list[FeatureEffect]:
    features = explained.attribution.features
    if logit is None or not features or explained.design is None:
        return []
    no_labs = pd.isna(explained.predictions.loc[patient_id, "p_tabular"])
    if explained.attribution.method == "late" and no_labs:
        return []  # no tabular term at all: the "no labs" offset is in the shares
    from deeppcos.tabular.features import is_ultrasound_feature

    terms = explained.attribution.row(patient_id)[features].to_numpy(dtype="float64")
    values = explained.design.loc[patient_id, features]
    risks = _risk_without(calibrator, logit, terms)
    effects = [
        FeatureEffect(
            name=name,
            label=feature_label(name),
            value=_float(values[name]),
            value_text=format_value(name, _float(values[name])),
            unit=display_unit(name),
            typical=typical_range(name),
            logit=float(term),
            risk_without=risk,
            ultrasound_derived=is_ultrasound_feature(name),
        )
        for name, term, risk in zip(features, terms, risks, strict=True)
    ]
    return sorted(effects, key=lambda e: -abs(e.logit))


def _tabular_branch(explained: ExplainedPredictions, patient_id: str) -> dict[str, Any] | None:
    shap_values = explained.tabular_shap
    if shap_values is None or pd.isna(explained.predictions.loc[patient_id, "p_tabular"]):
        return None
    position = list(explained.predictions.index).index(patient_id)
    values = np.asarray(shap_values.values[position], dtype="float64")
    base = float(np.asarray(shap_values.base_values).reshape(-1)[position])
    return {
        "base_value": base,
        "margin": base + float(values.sum()),
        "probability": _float(explained.predictions.loc[patient_id, "p_tabular"]),
        "shap_values": dict(zip(shap_values.feature_names, values.tolist(), strict=True)),
    }


def _criteria(cohort: Any, patient_id: str, rules: Any) -> CriteriaChecklist | None:
    patients = cohort.patients
    row = patients[patients["patient_id"].astype(str) == patient_id]
    return criteria_checklist(row.reset_index(drop=True), rules, source_format=cohort.spec.format)


def _load_images(
    predictor: Any, cohort: Any, patient_id: str, saliency: str | None
) -> LoadedImages | None:
    """The patient's images, read and run once (for the maps, and for intermediate fusion's
    embedding); None when no map is wanted and the fusion does not need them."""
    from deeppcos.explain.fusion import fusion_method
    from deeppcos.explain.saliency import load_images, patient_images

    branch = predictor.branches.get("image")
    wanted = saliency is not None or fusion_method(predictor) == "intermediate"
    if branch is None or not wanted:
        return None
    rows = patient_images(cohort, patient_id)
    return load_images(branch, rows) if len(rows) else None


def _explain(
    predictor: Any, cohort: Any, patient_id: str, images: LoadedImages | None
) -> ExplainedPredictions:
    from deeppcos.explain.fusion import fusion_method

    if images is None or fusion_method(predictor) != "intermediate":
        return explain_predictions(predictor, cohort, [patient_id])
    try:
        embeddings = images.mean_embedding(patient_id)
        return explain_predictions(predictor, cohort, [patient_id], embeddings=embeddings)
    except DeepPCOSError:
        # The direct forward pass disagreed with the branch's batched one in the last bits and
        # flipped a tree split: let the branch compute the embedding as the predictor does.
        return explain_predictions(predictor, cohort, [patient_id])


def _maps(
    predictor: Any,
    cohort: Any,
    patient_id: str,
    images: LoadedImages | None,
    method: str | None,
    max_images: int | None,
) -> list[ImageSaliency]:
    if method is None or images is None:
        return []
    from deeppcos.explain.saliency import background_images, saliency_maps

    branch = predictor.branches["image"]
    seed = predictor.config.seed
    background = (
        background_images(branch, cohort, exclude=[patient_id], seed=seed)
        if method == "gradient_shap"
        else None
    )
    return saliency_maps(
        branch,
        images,
        method,  # type: ignore[arg-type]
        max_images=max_images,
        background=background,
        seed=seed,
    )


def _part_caveat(part: str | None) -> list[str]:
    if part == "development":
        return [
            "This patient was in the run's development data: the models were trained on her, so "
            "this score is in-sample and likely more confident than it would be for a new patient."
        ]
    return []


_FINGERPRINTS: dict[int, tuple[Any, str]] = {}


def _fingerprint(cohort: Any) -> str:
    """``cohort.fingerprint()``, remembered per cohort object (it hashes the whole tables, and a
    dashboard explains many patients of one cohort)."""
    known = _FINGERPRINTS.get(id(cohort))
    if known is not None and known[0]() is cohort:
        return known[1]
    value = cohort.fingerprint()
    _FINGERPRINTS.clear()  # one cohort at a time is the usual case; keep the cache tiny
    _FINGERPRINTS[id(cohort)] = (weakref.ref(cohort), value)
    return value


def _training_part(predictor: Any, cohort: Any, patient_id: str) -> str | None:
    """Which part of the run's split the patient was in, when this is the run's own cohort."""
    if _fingerprint(cohort) != predictor.record.get("cohort_fingerprint"):
        return None
    path = Path(predictor.run) / "split.json"
    if not path.is_file():
        return None
    assignments = json.loads(path.read_text(encoding="utf-8")).get("assignments", {})
    part = assignments.get(patient_id)
    if part is None:
        return None
    return "test" if part == "test" else "development" if str(part).startswith("fold") else part
