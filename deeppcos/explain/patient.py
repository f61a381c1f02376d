"""One patient's explanation: the object the HTML/PDF report and the dashboard both read.

:func:`explain_patient` predicts the patient with the run's predictor (so the numbers are the
ones ``deeppcos predict`` gives), splits the fused logit exactly into the images, each tabular
feature and the bias (:mod:`deeppcos.explain.fusion`), draws saliency maps on each of her images
(:mod:`deeppcos.explain.saliency`), checks the Rotterdam criteria the table allows — for a PCOS
cohort only (:mod:`deeppcos.explain.checklist`) — and adds a model-card summary and the caveats.

Every sentence speaks the cohort's own words (:class:`~deeppcos.explain.wording.CohortWords`,
from the run's ``metrics.json``): its label ('PCOS', 'cardiomegaly') and its images ('ultrasound
images', 'chest X-ray images'). The images' share keeps the key ``"ultrasound"`` in ``shares``
and ``to_dict()`` whatever the modality (the format reports, dashboards and API clients read);
what is *shown* is the cohort's modality.

Effects are given two ways: in **logit points** of the score (exact and additive: the
contributions and the bias sum to the score), and as the **calibrated risk without it** — the
risk the model would give if that one contribution were removed from the score. The second is
a one-at-a-time counterfactual on the model's own scale, easier to read but not additive. For a
whole modality, "risk without it" is what the run's model for the other modality alone gives
her (the risk she would get without it), and it exists only when she has both.

A patient is scored by the modalities she has (:mod:`deeppcos.fusion.routing`): a modality she
lacks gets no share, no percentage and no "risk without it". A lab value that was not measured
is another matter: the booster learned what its absence tends to mean, and the report says so
in words ("not measured: its absence raised the score by …"), never as a measured finding.

Nothing in the object identifies the patient beyond the cohort's own ``patient_id``: no file
paths, no acquisition metadata, and the images' burned-in margin text is blanked.
"""

from __future__ import annotations

import datetime as dt
import json
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.evaluation.model_card import decision_support
from deeppcos.exceptions import DeepPCOSError, SchemaError
from deeppcos.explain.card import model_card_summary, run_guideline
from deeppcos.explain.checklist import CriteriaChecklist, criteria_checklist
from deeppcos.explain.fusion import (
    BIAS,
    TABULAR_ADJUSTMENT,
    ULTRASOUND,
    ExplainedPredictions,
    explain_predictions,
    reads_embeddings,
)
from deeppcos.explain.saliency import ImageSaliency, LoadedImages, Method
from deeppcos.explain.wording import (
    CohortWords,
    display_unit,
    feature_label,
    format_percent,
    format_value,
    predictor_words,
    typical_range,
)
from deeppcos.runs.folder import run_title
from deeppcos.tabular.categories import label_of

__all__ = ["FeatureEffect", "PatientExplanation", "explain_patient"]

# Below this many logit points an effect is reported as "no effect".
NEGLIGIBLE = 0.005

# Caveats, each with the branches it needs to be relevant (empty: always), whether it is about
# PCOS (the Rotterdam checklist: a PCOS cohort only) and its text, in the cohort's words.
CAVEATS: tuple[tuple[frozenset[str], bool, str], ...] = (
    (
        frozenset(),
        False,
        "Contributions explain this model's score, not the patient's physiology. They are exact "
        "shares of the score in logit points (before calibration); 'risk without it' removes "
        "one contribution at a time, and such changes do not add up.",
    ),
    (
        frozenset({"tabular"}),
        False,
        "A test that was not done (or a value not recorded) also has a contribution: the "
        "model's learned effect of it being absent (clinics order tests selectively). It is "
        "marked 'not measured' and is not a finding about the patient.",
    ),
    (
        frozenset({"tabular", "image"}),
        False,
        "A missing modality is not evidence: a patient without {images} is scored from the "
        "{table} alone (and one without {table} from the images alone), by a model trained for "
        "exactly that.",
    ),
    (
        frozenset({"image"}),
        False,
        "Heatmaps show where the image model found evidence for {label} (Grad-CAM at the coarse "
        "resolution of its last feature map); they are not an outline of any structure and can "
        "highlight artefacts.",
    ),
    (
        frozenset({"tabular"}),
        True,
        "The criteria checklist reads the table only, not the images, and does not apply the "
        "exclusions (thyroid disease, hyperprolactinaemia, non-classic congenital adrenal "
        "hyperplasia) that a diagnosis requires.",
    ),
)


def run_caveats(branches: Any, words: CohortWords | None = None) -> list[str]:
    """The caveats that apply to a run with these branches, in the cohort's words (PCOS and
    ultrasound when ``words`` is None); the checklist's only for a PCOS cohort."""
    words = words or CohortWords()
    values = {"label": words.label, "images": words.images, "table": words.table}
    return [
        text.format(**values)
        for needs, about_pcos, text in CAVEATS
        if needs <= set(branches) and (words.pcos or not about_pcos)
    ]


def fusion_note(fusion_method: str, words: CohortWords | None = None) -> str | None:
    """What the images' share means under this fusion, for a clinician (None under a fusion
    of the branch models' outputs, such as late fusion, where it is the image model's own
    output, weighted)."""
    if not reads_embeddings(fusion_method):
        return None
    words = words or CohortWords()
    return (
        f"Under {fusion_method} fusion the {words.images} and the {words.table} are read by one "
        f"model: the bar for the {words.images} is how much they moved this patient's score "
        "inside that model, not the image model's own opinion. The image model's and "
        "the tabular model's percentages are separate models' own estimates, shown for "
        "comparison; they are not part of this score, and can point the other way."
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
    category: str | None = None  # a categorical input's label ("M"); value is then its code

    @property
    def direction(self) -> str:
        if abs(self.logit) < NEGLIGIBLE:
            return "no effect"
        return "raised" if self.logit > 0 else "lowered"

    @property
    def measured(self) -> bool:
        return self.value is not None

    @property
    def display(self) -> str:
        """A chart label: "AMH = 11.2 ng/mL", or "LH/FSH ratio: not measured"."""
        if not self.measured:
            return f"{self.label}: not measured"
        return f"{self.label} = {self.value_text}"

    def sentence(self, risk: float | None) -> str:
        """E.g. "AMH 11.2 ng/mL (typical: …): raised the risk by 0.84 logit points (risk 62%;
        31% without it)", or for a test not done "LH/FSH ratio: not measured. The absence of
        this measurement lowered the score by 0.50 logit points (…)"."""
        tail = ""
        if risk is not None and self.risk_without is not None:
            tail = f" (risk {format_percent(risk)}; {format_percent(self.risk_without)} without it)"
        if not self.measured:
            head = f"{self.label}: not measured"
            if self.direction == "no effect":
                return f"{head}; its absence had no effect on the score"
            return (
                f"{head}. The absence of this measurement {self.direction} the score by "
                f"{abs(self.logit):.2f} logit points{tail}: the model's learned effect of the "
                "test not being done, not a finding"
            )
        typical = f" (typical: {self.typical})" if self.typical else ""
        joiner = " = " if self.category is not None else " "
        head = f"{self.label}{joiner}{self.value_text}{typical}"
        if self.direction == "no effect":
            return f"{head}: no effect on the score"
        return f"{head}: {self.direction} the risk by {abs(self.logit):.2f} logit points{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "direction": self.direction,
            "measured": self.measured,
            "display": self.display,
        }


@dataclass
class PatientExplanation:
    """Everything a report or dashboard shows about one patient's prediction."""

    patient_id: str
    run: str
    cohort: str
    fusion_method: str
    modalities: str  # the route that scored her: "tabular+image", "tabular" or "image"
    scored_by: str  # that route's model in words
    prediction: dict[str, Any]  # p_tabular, p_image, probability, risk, decision, threshold
    severity: dict[str, Any] | None  # see _severity; None when the run grades no severity
    guideline: str  # the run's diagnostic guideline (its checklist's)
    logit: float | None
    shares: dict[str, Any]  # bias, and the modalities she has (see _shares), in logit points
    features: list[FeatureEffect]  # every tabular feature, largest |effect| first
    tabular_branch: dict[str, Any] | None  # the tabular branch's own TreeSHAP (its logit units)
    criteria: CriteriaChecklist | None
    images: list[ImageSaliency]
    model_card: dict[str, Any]
    caveats: list[str]
    in_training_data: str | None = None  # "development", "test", "label_noise"; None: elsewhere
    words: CohortWords = field(default_factory=CohortWords)  # the cohort's label and images
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    )

    @property
    def risk(self) -> float | None:
        return self.prediction.get("risk")

    @property
    def fusion_note(self) -> str | None:
        """Under intermediate fusion, what the images' share is (and is not), in words; None
        for a patient scored by one modality's model alone (then the images' bar is that
        model's own output)."""
        if self.modalities != "tabular+image":
            return None
        return fusion_note(self.fusion_method, self.words)

    def severity_summary(self) -> tuple[str, str] | None:
        """(grade, detail) in words, the same in every report: the grade is given only with a
        positive decision; the detail gives the grades' shares if she has the condition (the
        cohort's label) and P(not)."""
        s = self.severity
        if not s:
            return None
        label, no_label = self.words.label, self.words.no_label
        given = s.get("given_pcos") or {}
        shares = ", ".join(f"{k} {format_percent(v)}" for k, v in given.items())
        none = s["probabilities"].get(s["no_disease_grade"])
        if s["grade"] == s["no_disease_grade"]:
            detail = "not flagged"
            if shares:
                detail = f"not flagged, so not graded; if {label}: {shares}"
        else:
            detail = f"most probable grade if {label} ({shares})"
        return s["grade"], f"{detail}; P({no_label}) = 1 − risk = {format_percent(none)}"

    def modality_summary(self) -> str:
        """Which data scored her, in words."""
        table, images = self.words.table, self.words.images
        kinds = {
            "tabular+image": f"{table} and {images}",
            "tabular": f"{table} only",
            "image": f"{images} only",
        }
        if self.modalities not in kinds:
            return f"no prediction: neither {table} nor images"
        text = f"{kinds[self.modalities]} — {self.scored_by}"
        if self.modalities == "tabular" and "image" in self.model_card.get("routes", {}):
            text += f" (no {images}: their absence is not used as evidence)"
        if self.modalities == "image" and "tabular" in self.model_card.get("routes", {}):
            text += f" (no {table}: its absence is not used as evidence)"
        return text

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
            "scored_by": self.scored_by,
            "prediction": self.prediction,
            "severity": self.severity,
            "guideline": self.guideline,
            "logit": self.logit,
            "shares": self.shares,
            "features": [f.to_dict() for f in self.features],
            "tabular_branch": self.tabular_branch,
            "criteria": self.criteria.to_dict() if self.criteria is not None else None,
            "images": [image.to_dict(images) for image in self.images],
            "model_card": self.model_card,
            "caveats": self.caveats,
            "in_training_data": self.in_training_data,
            **self.words.to_dict(),  # label_name, pcos, image_modality: as metrics.json has them
            "fusion_note": self.fusion_note,
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
    ``max_images`` limits how many of her images get a map. The criteria checklist (a PCOS
    cohort only: the run's ``metrics.json`` says ``pcos``) applies the run's own guideline
    (``severity.guideline`` of its config) unless ``criteria_rules`` (a ``CriteriaRules``) says
    otherwise. The words (label, images) are the run's, read from its ``metrics.json``."""
    from deeppcos.explain.saliency import METHODS, is_method
    from deeppcos.knowledge.criteria import CriteriaRules

    if saliency is not None and not is_method(saliency):
        raise SchemaError(f"saliency must be one of {list(METHODS)} or None; got {saliency!r}")
    cohort = cohort if cohort is not None else predictor.cohort()
    patient_id = str(patient_id)
    check_patient(predictor, cohort, patient_id)
    images = _load_images(predictor, cohort, patient_id, saliency)
    explained = _explain(predictor, cohort, patient_id, images)
    row = explained.predictions.loc[patient_id]
    route = str(row["modalities"])
    logit = _float(explained.attribution.logit.loc[patient_id])
    terms = explained.attribution.row(patient_id)
    part = _training_part(predictor, cohort, patient_id)
    rules = criteria_rules or CriteriaRules(guideline=run_guideline(predictor))
    words = predictor_words(predictor, cohort.spec)
    return PatientExplanation(
        patient_id=patient_id,
        run=run_title(predictor.run, predictor.record),
        cohort=cohort.spec.name,
        fusion_method=explained.attribution.method,
        modalities=route,
        scored_by=predictor.router.describe(route, explained.attribution.method),
        prediction=_prediction(row, predictor.threshold),
        severity=_severity(row, predictor, words),
        guideline=rules.guideline,
        logit=logit,
        shares=_shares(predictor, row, terms, explained.attribution.features, logit),
        features=_effects(explained, patient_id, logit, predictor, route, words.pcos),
        tabular_branch=_tabular_branch(explained, patient_id),
        criteria=_criteria(cohort, patient_id, rules) if words.pcos else None,
        images=_maps(predictor, cohort, patient_id, images, saliency, max_images),
        model_card=model_card_summary(predictor),
        caveats=[
            decision_support(words.label).replace("**", ""),
            *run_caveats(predictor.branches, words),
            *_part_caveat(part),
        ],
        in_training_data=part,
        words=words,
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


def _risk_without(
    predictor: Any, route: str, logit: float | None, terms: np.ndarray
) -> list[float | None]:
    """Calibrated risk with each term removed from the logit, one at a time, on the patient's
    own route."""
    if logit is None:
        return [None] * len(terms)
    from deeppcos.fusion.late import sigmoid

    risks = predictor.calibrate(sigmoid(logit - np.asarray(terms, dtype="float64")), route)
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


def _severity(
    row: pd.Series, predictor: Any, words: CohortWords | None = None
) -> dict[str, Any] | None:
    """``grade`` (the lowest, "none", unless the decision is positive), ``probabilities`` (every
    grade, summing to 1, ``none`` = 1 − risk) and ``given_pcos`` (the grades' shares if she has
    the condition, summing to 1: the key keeps its name whatever the cohort's label)."""
    if "severity" not in row.index or pd.isna(row["severity"]):
        return None
    probabilities = {
        str(k)[len("p_severity_") :]: _float(v)
        for k, v in row.items()
        if str(k).startswith("p_severity_")
    }
    from deeppcos.inference.predictor import given_pcos

    lowest = next(iter(probabilities))
    return {
        "grade": str(row["severity"]),
        "no_disease_grade": lowest,
        "probabilities": probabilities,
        "given_pcos": given_pcos(probabilities),
        "rule": f"graded only when flagged: '{lowest}' when the decision is negative, else "
        f"the most probable grade given {(words or CohortWords()).label}",
    }


def _shares(
    predictor: Any, row: pd.Series, terms: pd.Series, features: list[str], logit: float | None
) -> dict[str, Any]:
    """The modalities' parts of the score in logit points. Only modalities the patient has
    appear; with both, each one's "risk without it" is the risk the run's model for the other
    modality alone gives her."""
    if logit is None:
        return {}
    out: dict[str, Any] = {BIAS: float(terms[BIAS]), "logit": logit}
    has_labs = bool(features) and bool(terms[features].notna().any())
    has_images = not pd.isna(terms[ULTRASOUND])
    if has_labs:
        out["tabular_features"] = float(terms[features].sum())
        out[TABULAR_ADJUSTMENT] = float(terms[TABULAR_ADJUSTMENT])
        out["tabular"] = out["tabular_features"] + out[TABULAR_ADJUSTMENT]
    if has_images:
        out[ULTRASOUND] = float(terms[ULTRASOUND])
    if has_labs and has_images:
        scale = abs(out[ULTRASOUND]) + abs(out["tabular"])
        out["ultrasound_fraction"] = abs(out[ULTRASOUND]) / scale if scale > 0 else None
        out["risk_without_ultrasound"] = _single_route_risk(predictor, row, "tabular")
        out["risk_without_tabular"] = _single_route_risk(predictor, row, "image")
    return out


def _single_route_risk(predictor: Any, row: pd.Series, modality: str) -> float | None:
    """The calibrated risk of the run's model for one modality alone (None when the run has
    no such route)."""
    if modality not in predictor.router.routes or pd.isna(row.get(f"p_{modality}")):
        return None
    return _float(predictor.calibrate(float(row[f"p_{modality}"]), modality)[0])


def _effects(
    explained: ExplainedPredictions,
    patient_id: str,
    logit: float | None,
    predictor: Any,
    route: str,
    pcos: bool = True,
) -> list[FeatureEffect]:
    """Each feature's share of the score; its typical range only for a PCOS cohort (the
    catalog's typical ranges are for women of reproductive age)."""
    features = explained.attribution.features
    if logit is None or not features or explained.design is None:
        return []
    terms = explained.attribution.row(patient_id)[features].to_numpy(dtype="float64")
    if np.isnan(terms).all():
        return []  # no labs: the tabular data has no part in her score
    from deeppcos.tabular.features import is_ultrasound_feature

    values = explained.design.loc[patient_id, features]
    risks = _risk_without(predictor, route, logit, terms)
    # Categorical inputs are codes in the tabular model's categories: show their labels.
    categories = getattr(predictor.branches.get("tabular"), "categories_", {})
    labels = {
        n: label_of(categories, n, _float(values[n]))
        for n in features
        if n in categories and _float(values[n]) is not None
    }
    effects = [
        FeatureEffect(
            name=name,
            label=feature_label(name),
            value=_float(values[name]),
            value_text=labels.get(name) or format_value(name, _float(values[name])),
            category=labels.get(name),
            unit=display_unit(name),
            typical=typical_range(name) if pcos else "",
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
    """The checklist under ``rules`` (the run's guideline unless the caller chose another)."""
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
    wanted = saliency is not None or reads_embeddings(fusion_method(predictor))
    if branch is None or not wanted:
        return None
    rows = patient_images(cohort, patient_id)
    return load_images(branch, rows) if len(rows) else None


def _explain(
    predictor: Any, cohort: Any, patient_id: str, images: LoadedImages | None
) -> ExplainedPredictions:
    from deeppcos.explain.fusion import fusion_method

    if images is None or not reads_embeddings(fusion_method(predictor)):
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
    method: Method | None,
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
        method,
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
    if part == "label_noise":
        return [
            "This patient was set aside by the run's split as label noise (split.label_noise): "
            "her images are near-copies of other patients' labelled the other way about as often "
            "as chance, so she was neither trained on nor evaluated, and her recorded label "
            "cannot be trusted to check this score."
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
    part = predictor.split_assignments.get(patient_id)
    if part is None:
        return None
    return "test" if part == "test" else "development" if str(part).startswith("fold") else part
