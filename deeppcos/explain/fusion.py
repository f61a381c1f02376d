"""Score attribution: how much of each patient's score (a logit) came from the ultrasound
images and how much from each tabular feature, for every route a patient can take.

Every attribution is an exact additive split of the logit of the model that scored the patient
(before calibration): per row, ``bias + ultrasound + Σ features + tabular_adjustment`` equals
the logit whose sigmoid is the predictor's ``probability``. A patient is scored by the route of
the modalities she has (:mod:`deeppcos.fusion.routing`), and only those modalities carry terms:
``ultrasound`` is NaN for a patient without images and every feature is NaN for one without
labs — a modality she does not have gets no share, no percentage and no "risk without it".

**Late fusion** (:class:`~deeppcos.fusion.late.LateFusion`, patients with every modality). The
meta-learner's logit is ``intercept + w_tab·logit_tab + w_img·logit_img`` (its
``contributions``). ``logit_tab`` is the logit of the tabular branch's probability, and that
probability is ``sigmoid(margin)`` of its booster with nothing in between, where
``margin = φ₀ + Σ_j φ_j`` (TreeSHAP, :mod:`deeppcos.explain.tabular`). So the tabular term splits
exactly into ``w_tab·φ_j`` per feature plus ``w_tab·φ₀``, which joins the intercept in ``bias``.
Two things can make ``logit_tab`` differ from the margin, and the difference is kept, not hidden,
in ``tabular_adjustment = w_tab·(logit_tab − margin)``: the float32 rounding of the branch's
probability (~1e-6 logit points), and the fusion's clipping of branch probabilities to
[1e-4, 1 − 1e-4], which caps a branch's logit at ±9.2 (then the adjustment is what the cap took
off). ``ultrasound`` is the image term.

**Intermediate fusion** (:class:`~deeppcos.fusion.intermediate.IntermediateFusion`, patients
with every modality): one booster over the tabular features and the principal components of
the image embedding; its exact TreeSHAP values (``grouped_contributions``) give each tabular
feature directly, the PCs summed into ``ultrasound``, and the booster's bias;
``tabular_adjustment`` is 0. A lab value that was not measured is a NaN feature whose SHAP value
carries the effect of it being missing (the report says so in words).

**The tabular branch alone** (a patient without images): its TreeSHAP values, ``bias = φ₀``;
the logit is the booster's margin.

**The image branch alone** (a patient without labs): ``bias`` is the logit of the share of
positives among the development patients with images (the route's base rate) and
``ultrasound`` is the rest of the image model's logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from deeppcos.exceptions import DeepPCOSError, SchemaError

if TYPE_CHECKING:
    import shap

    from deeppcos.data.cohort import Cohort

__all__ = [
    "BIAS",
    "TABULAR_ADJUSTMENT",
    "ULTRASOUND",
    "ExplainedPredictions",
    "FusionAttribution",
    "explain_predictions",
    "fusion_method",
    "intermediate_attribution",
    "late_attribution",
    "reads_embeddings",
]

BIAS = "bias"
ULTRASOUND = "ultrasound"
TABULAR_ADJUSTMENT = "tabular_adjustment"
FIXED_TERMS = (BIAS, ULTRASOUND, TABULAR_ADJUSTMENT)


@dataclass
class FusionAttribution:
    """Additive terms of the scoring model's logit per patient (see the module notes).

    ``frame``: index ``patient_id``; columns ``bias``, ``ultrasound``, ``tabular_adjustment`` and
    one per tabular feature (``features``, in model order). A term of a modality the patient
    does not have is NaN; rows are all NaN for patients with no prediction. ``logit``: the
    scoring model's logit (its sigmoid is the predictor's ``probability``). ``method``: the run's
    fusion, a registered method's name (``"late"``, ``"intermediate"``); ``routes``: per patient,
    the route that scored her.
    """

    method: str
    frame: pd.DataFrame
    logit: pd.Series
    features: list[str]
    routes: pd.Series | None = None

    def total(self) -> pd.Series:
        """Row sums of every term: equal to ``logit`` (the decomposition is exact)."""
        return self.frame.sum(axis=1, min_count=1)

    def modality_shares(self) -> pd.DataFrame:
        """Per patient: ``bias``, ``ultrasound`` and ``tabular`` (every feature and the
        adjustment) in logit points, summing to ``logit``; NaN for a modality she does not have.
        Plus ``ultrasound_fraction``, the ultrasound part's share of ``|ultrasound| + |tabular|``
        (only for patients with both)."""
        tabular = self.frame[[*self.features, TABULAR_ADJUSTMENT]].sum(axis=1, min_count=1)
        if self.features:  # no features → tabular absent, not an adjustment of 0
            tabular = tabular.where(self.frame[self.features].notna().any(axis=1))
        else:
            tabular = tabular * np.nan
        out = pd.DataFrame(
            {BIAS: self.frame[BIAS], ULTRASOUND: self.frame[ULTRASOUND], "tabular": tabular}
        )
        scale = out[ULTRASOUND].abs() + out["tabular"].abs()
        out["ultrasound_fraction"] = out[ULTRASOUND].abs() / scale.where(scale > 0)
        out["logit"] = self.logit
        return out

    def row(self, patient_id: str) -> pd.Series:
        if patient_id not in self.frame.index:
            raise SchemaError(f"patient {patient_id!r} is not among the attributed patients")
        return self.frame.loc[patient_id]


# --- late fusion --------------------------------------------------------------------------------


def late_attribution(
    fusion: Any,
    branch_outputs: pd.DataFrame,
    tabular_shap: shap.Explanation | None,
    *,
    method: str = "late",
) -> FusionAttribution:
    """Attribution of a fitted ``LateFusion``'s logit.

    ``branch_outputs``: ``p_tabular`` / ``p_image`` per patient (index ``patient_id``), as the
    predictor feeds them to the fusion. ``tabular_shap``: :func:`~deeppcos.explain.tabular.
    tabular_shap` of the same patients in the same order (None when the run has no tabular
    branch). ``method``: the run's fusion method, recorded with the attribution.
    """
    terms = fusion.contributions(branch_outputs)
    index = branch_outputs.index
    scored = terms.notna().all(axis=1).to_numpy()
    features = list(tabular_shap.feature_names) if tabular_shap is not None else []
    phi, phi0 = _shap_arrays(tabular_shap, index)
    weight = float(fusion.coef_.get("tabular", 0.0))
    has_tabular = _present(branch_outputs, "p_tabular") & scored
    # Features and their base only where the tabular term exists (a row without labs has none).
    feature_terms = np.where(has_tabular[:, None], weight * phi, 0.0)
    base_term = np.where(has_tabular, weight * phi0, 0.0)
    tabular_term = terms["tabular"].to_numpy()
    adjustment = np.where(has_tabular, tabular_term - (base_term + feature_terms.sum(axis=1)), 0.0)
    frame = pd.DataFrame(feature_terms, index=index, columns=features)
    frame.insert(0, BIAS, terms["intercept"].to_numpy() + base_term)
    uses_image = "image" in fusion.modalities_
    frame.insert(1, ULTRASOUND, terms["image"].to_numpy() if uses_image else np.nan)
    frame.insert(2, TABULAR_ADJUSTMENT, adjustment)
    if "tabular" not in fusion.modalities_:
        frame[features] = np.nan
    frame.loc[~scored] = np.nan
    logit = pd.Series(terms.to_numpy().sum(axis=1), index=index, name="logit")
    logit[~scored] = np.nan
    return FusionAttribution(method, frame.rename_axis("patient_id"), logit, features)


def _shap_arrays(
    explanation: shap.Explanation | None, index: pd.Index
) -> tuple[np.ndarray, np.ndarray]:
    if explanation is None:
        return np.zeros((len(index), 0)), np.zeros(len(index))
    values = np.asarray(explanation.values, dtype="float64")
    if values.ndim != 2 or len(values) != len(index):
        raise SchemaError(
            f"the tabular SHAP values have shape {values.shape}; expected one row per patient "
            f"({len(index)}) and one column per feature (not interaction values)"
        )
    names = getattr(explanation, "instance_names", None)
    if names is not None and [str(n) for n in names] != [str(i) for i in index]:
        raise SchemaError("the tabular SHAP rows are not the same patients, in the same order")
    return values, np.asarray(explanation.base_values, dtype="float64").reshape(-1)


def _present(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame[column].notna().to_numpy()


# --- intermediate fusion ------------------------------------------------------------------------


def intermediate_attribution(
    fusion: Any,
    tabular: pd.DataFrame,
    embeddings: pd.DataFrame | None,
    *,
    method: str = "intermediate",
) -> FusionAttribution:
    """Attribution of a fitted ``IntermediateFusion``'s logit (its exact TreeSHAP values, the
    image PCs grouped into ``ultrasound``). ``tabular`` and ``embeddings`` are indexed by
    ``patient_id`` as for ``IntermediateFusion.predict_proba``; ``method``: the run's fusion
    method, recorded with the attribution."""
    from deeppcos.fusion.intermediate import BIAS as FUSION_BIAS
    from deeppcos.fusion.intermediate import IMAGE_GROUP

    grouped = fusion.grouped_contributions(tabular, embeddings)
    features = list(fusion.tabular_names_)
    frame = grouped[features].copy()
    frame.insert(0, BIAS, grouped[FUSION_BIAS])
    frame.insert(1, ULTRASOUND, grouped[IMAGE_GROUP])
    frame.insert(2, TABULAR_ADJUSTMENT, 0.0)
    scored = grouped.notna().all(axis=1)
    frame.loc[~scored] = np.nan
    logit = pd.Series(fusion.decision_function(tabular, embeddings), index=tabular.index)
    return FusionAttribution(
        method, frame.rename_axis("patient_id"), logit.rename("logit"), features
    )


# --- from a predictor ---------------------------------------------------------------------------


def fusion_method(predictor: Any) -> str:
    """The run's fusion, a registered method's name (``"late"`` for runs that predate the
    choice)."""
    from deeppcos.fusion.stage import FUSION_METHODS

    method = getattr(predictor, "fusion_method", "late")
    if method not in FUSION_METHODS:
        raise DeepPCOSError(f"{predictor.run}: unknown fusion method {method!r}")
    return str(method)


def reads_embeddings(method: str | None) -> bool:
    """Whether a run fused by ``method`` scores with one model that reads the image embedding
    and the tabular features itself (its ``needs_embeddings``, as intermediate fusion), rather
    than combining the branch models' probabilities (as late fusion). Then the images' share is
    a part of that one model's score, and the branch models' own probabilities are separate
    estimates, not its inputs: the explanation's wording and attribution follow from this, not
    from the method's name. False for no method or an unregistered one."""
    from deeppcos.fusion.stage import FUSION_METHODS

    registered = FUSION_METHODS.get(method) if method is not None else None
    return registered is not None and registered.needs_embeddings


@dataclass
class ExplainedPredictions:
    """The predictor's output for some patients with everything needed to explain it.

    ``predictions``: ``Predictor.predict``'s frame indexed by ``patient_id``; ``design``: the
    tabular branch's inputs (None without a tabular branch); ``tabular_shap``: their TreeSHAP
    values; ``attribution``: the fused logit's exact split.
    """

    predictions: pd.DataFrame
    design: pd.DataFrame | None
    tabular_shap: shap.Explanation | None
    attribution: FusionAttribution


def explain_predictions(
    predictor: Any,
    cohort: Cohort,
    patient_ids: Sequence[str] | None = None,
    *,
    embeddings: pd.DataFrame | None = None,
) -> ExplainedPredictions:
    """Predict these patients (all when None) and attribute each fused logit.

    The late fusion is attributed on the very branch outputs ``predict`` fed it, and the result
    is checked against ``predict``'s own probability, so an explanation can never describe a
    different score from the one reported. ``embeddings`` (intermediate fusion only): the
    patients' image embeddings when the caller has them already (else the image branch
    computes them).
    """
    from deeppcos.explain.tabular import tabular_shap

    source = cohort.patients["patient_id"] if patient_ids is None else patient_ids
    ids = list(dict.fromkeys(str(i) for i in source))
    predicted = predictor.predict_with_inputs(cohort, ids)
    predictions = predicted.predictions.set_index("patient_id")
    design = predicted.tabular
    explanation = (
        tabular_shap(predictor.branches["tabular"], design) if design is not None else None
    )
    # A model on the features and embeddings is split by its grouped TreeSHAP values; one on
    # the branch probabilities by its per-branch terms.
    method = fusion_method(predictor)
    if reads_embeddings(method):
        if embeddings is None:
            embeddings = predicted.embeddings
        frame = design if design is not None else pd.DataFrame(index=pd.Index(ids))
        attribution = intermediate_attribution(predictor.fusion, frame, embeddings, method=method)
    else:
        used = [f"p_{name}" for name in predictor.branches]
        attribution = late_attribution(
            predictor.fusion, predictions[used], explanation, method=method
        )
    attribution = _by_route(attribution, predictor, predictions, explanation)
    _check_reproduces(attribution, predictions["probability"], predictor)
    return ExplainedPredictions(predictions, design, explanation, attribution)


def _by_route(
    fused: FusionAttribution,
    predictor: Any,
    predictions: pd.DataFrame,
    explanation: shap.Explanation | None,
) -> FusionAttribution:
    """The fusion's attribution for the patients it scored; a single branch's for the patients
    routed to it; all NaN for patients with no prediction."""
    routes = predictions["modalities"].astype(str)
    frame = fused.frame.copy()
    logit = fused.logit.copy()
    off_route = (routes != predictor.router.full).to_numpy()
    frame.loc[off_route] = np.nan
    logit[off_route] = np.nan
    phi, phi0 = _shap_arrays(explanation, predictions.index)
    for route in ("tabular", "image"):
        rows = (routes == route).to_numpy()
        if route == predictor.router.full or not rows.any():
            continue
        if route == "tabular":
            assert explanation is not None  # a tabular route exists only with a tabular branch
            names = [str(n) for n in explanation.feature_names]  # the branch's own order
            frame.loc[rows, names] = phi[rows]
            frame.loc[rows, BIAS] = phi0[rows]
            frame.loc[rows, TABULAR_ADJUSTMENT] = 0.0
            logit[rows] = phi0[rows] + phi[rows].sum(axis=1)
        else:
            base = _logit(predictor.router.routes["image"].base_rate)
            image_logit = _logit(predictions.loc[rows, "p_image"].to_numpy(dtype="float64"))
            frame.loc[rows, BIAS] = base
            frame.loc[rows, ULTRASOUND] = image_logit - base
            logit[rows] = image_logit
    return FusionAttribution(fused.method, frame, logit, fused.features, routes)


def _logit(p: Any) -> Any:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(q) - np.log1p(-q)


def _check_reproduces(
    attribution: FusionAttribution, probability: pd.Series, predictor: Any
) -> None:
    from deeppcos.fusion.late import sigmoid

    expected = probability.to_numpy(dtype="float64", na_value=np.nan)
    got = sigmoid(attribution.logit.to_numpy(dtype="float64"))
    same_gaps = np.array_equal(np.isnan(expected), np.isnan(got))
    if not same_gaps or np.nanmax(np.abs(expected - got), initial=0.0) > 1e-6:
        raise DeepPCOSError(
            f"{predictor.run}: the score attribution ({attribution.method} fusion run) does not "
            "reproduce the predictor's probability; the run's models and this explainer disagree "
            "(a bug: please report it with the run folder)"
        )
