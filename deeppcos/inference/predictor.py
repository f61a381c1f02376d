"""A run folder loaded back into a predictor: ``deeppcos.load_run(path)``.

The predictor applies what training saved, in the same order: each branch's model (with its own
preprocessing); the route each patient takes by the modalities she has — the fusion (late or
intermediate, whichever won on validation) when she has all of them, the other branch alone when
she lacks one (:mod:`deeppcos.fusion.routing`: a missing modality is not evidence); that route's
calibrator; the decision threshold; and, when the run has one, the severity head, whose grade
is conditional on PCOS (:func:`severity_columns`). Every prediction says which modalities it
used; a patient with neither labs nor images gets no prediction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.config import RunConfig
from deeppcos.data.cohort import Cohort
from deeppcos.data.spec import CohortSpec
from deeppcos.exceptions import RunError
from deeppcos.knowledge.ranges import RangeRule
from deeppcos.runs.reader import Run
from deeppcos.runs.records import RunMetrics


@dataclass
class Prediction:
    """Predictions and the inputs they were computed from: the tabular design matrix and the
    per-patient image embeddings (``None`` without that branch), both indexed by patient_id."""

    predictions: pd.DataFrame
    tabular: pd.DataFrame | None
    embeddings: pd.DataFrame | None


@dataclass
class Predictor:
    run: Path | None  # None for models fitted in memory and not saved (MultimodalClassifier)
    config: RunConfig
    record: dict[str, Any]
    branches: dict[str, Any] = field(default_factory=dict)
    fusion: Any = None
    fusion_method: str = "late"
    router: Any = None  # deeppcos.fusion.routing.Router: route, score and calibrate
    threshold: float | None = None
    severity: Any = None  # OrdinalHead, or None when the run has no severity head
    severity_info: dict[str, Any] = field(default_factory=dict)
    # What training recorded (metrics.json, cohort.json, split.json's assignments), read once:
    # explanations and checks take them from here, whether the model is a folder or in memory.
    metrics: RunMetrics | None = None  # None: a run written without metrics
    cohort_summary: dict[str, Any] = field(default_factory=dict)
    split_assignments: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run's folder name, else its config's name (a model not saved)."""
        return self.run.name if self.run is not None else str(self.record.get("name", ""))

    def cohort(self) -> Cohort:
        """The cohort the run was trained on, checked against the run's fingerprint."""
        from deeppcos.data.configured import cohort_for

        cohort = cohort_for(self.config)
        if cohort.fingerprint() != self.record.get("cohort_fingerprint"):
            raise RunError(
                f"{self.run}: the cohort's content changed since training (fingerprint "
                f"{cohort.fingerprint()[:12]} ≠ {str(self.record.get('cohort_fingerprint'))[:12]})"
            )
        corrections = Run(self.run).label_corrections() if self.run is not None else None
        if corrections is not None:
            from deeppcos.data.configured import apply_label_corrections

            apply_label_corrections(cohort, corrections)
        return cohort

    def training_spec(self) -> CohortSpec:
        """The spec of the cohort the run was trained on (not loaded): new patients in the same
        layout are read with it (``deeppcos.inference.scoring.new_patients_spec``)."""
        from deeppcos.data.spec import load_spec, spec_from_dict

        config = self.config
        if config.synthetic is not None:
            return load_spec(config.resolve(config.synthetic.folder) / "cohort.yaml")
        if config.cohort_spec is not None:
            return load_spec(config.resolve(config.cohort_spec))
        assert config.cohort is not None
        return spec_from_dict(config.cohort, base_dir=config.base_dir, source=config.name)

    def input_ranges(self, columns: Sequence[str]) -> dict[str, RangeRule]:
        """The plausible range each of ``columns`` was checked against when the run's cohort was
        loaded (recorded in ``cohort.json``), so new patients are checked the same way; a column
        the run did not record gets the catalog's range for the run's kind of cohort."""
        from deeppcos.knowledge.ranges import catalog_rule, rules_from_json

        summary = self.cohort_summary
        recorded = rules_from_json(summary.get("ranges"))
        pcos = bool(summary.get("pcos", True))  # runs from before the field were PCOS runs
        rules: dict[str, RangeRule] = {}
        for column in columns:
            rule = (recorded or {}).get(column) or catalog_rule(column, pcos=pcos)
            if rule is not None:
                rules[column] = rule
        return rules

    def predict(self, cohort: Cohort, patient_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per patient: branch probabilities, the route's probability, calibrated risk,
        decision at the run's threshold, the modalities used and, with a severity head, the
        grade (``none`` unless the decision is positive) with ``p_severity_<grade>`` columns
        (``p_severity_none`` = 1 − risk; see :func:`severity_columns`)."""
        return self.predict_with_inputs(cohort, patient_ids).predictions

    def predict_with_inputs(
        self, cohort: Cohort, patient_ids: Sequence[str] | None = None
    ) -> Prediction:
        """:meth:`predict`, keeping the model inputs it computed (for explanations)."""
        ids = list(cohort.patients["patient_id"]) if patient_ids is None else list(patient_ids)
        # Arrays until the one output frame: for the one or few patients of a service request,
        # pandas' per-operation cost is most of a prediction's (the models take ~0.5 ms).
        tabular = self._tabular_inputs(cohort, ids)
        p_tabular = (
            self.branches["tabular"].predict_design(tabular).to_numpy()
            if tabular is not None
            else np.full(len(ids), np.nan)
        )
        embeddings = None
        p_image = np.full(len(ids), np.nan)
        if "image" in self.branches:
            image_p, embeddings = self.branches["image"].predict_patients(cohort, ids)
            p_image = image_p.to_numpy()
        # Each branch read its inputs once: the design matrix and the images' single pass
        # (probability and embedding) also feed the fusion and the severity head.
        frame = pd.DataFrame(
            {"p_tabular": p_tabular, "p_image": p_image},
            index=pd.Index(ids, name="patient_id"),
        )
        routes = self.router.route(frame)
        fused = self._fuse(frame, tabular, embeddings, routes == self.router.full)
        probability = self.router.score(frame, fused, routes)
        risk = self.router.calibrate(probability, routes)
        unscored = np.isnan(risk)
        flagged = np.where(unscored, False, risk >= self.threshold)
        decision = pd.arrays.BooleanArray(flagged, unscored)
        severity = self._grade(frame, tabular, risk, decision)
        out = pd.DataFrame(
            {
                "patient_id": frame.index.to_numpy(),
                "p_tabular": p_tabular,
                "p_image": p_image,
                "probability": probability,
                "risk": risk,
                "decision": decision,
                "modalities": routes,
                **severity,
            }
        )
        return Prediction(out, tabular, embeddings)

    def calibrate(self, probability: Any, route: str) -> np.ndarray:
        """Probabilities of one route through that route's calibrator (for what-if risks)."""
        values = np.atleast_1d(np.asarray(probability, dtype="float64"))
        return self.router.calibrate(values, np.full(len(values), route, dtype=object))

    def _tabular_inputs(self, cohort: Cohort, ids: list[str]) -> pd.DataFrame | None:
        branch = self.branches.get("tabular")
        return branch.design_matrix(cohort, ids) if branch is not None else None

    def _fuse(
        self,
        frame: pd.DataFrame,
        tabular: pd.DataFrame | None,
        embeddings: pd.DataFrame | None,
        full: np.ndarray,
    ) -> np.ndarray:
        """The fusion model's probability for the patients with every modality (NaN for the
        rest: the router scores them with a single branch)."""
        out = np.full(len(frame), np.nan)
        if not full.any():
            return out
        from deeppcos.fusion.stage import fused_probability

        out[full] = fused_probability(
            self.fusion_method,
            self.fusion,
            frame.loc[full, self._branch_columns()],
            tabular[full] if tabular is not None else None,
            embeddings[full] if embeddings is not None else None,
        )
        return out

    def _branch_columns(self) -> list[str]:
        return [f"p_{name}" for name in self.branches]

    def _grade(
        self,
        frame: pd.DataFrame,
        tabular: pd.DataFrame | None,
        risk: np.ndarray,
        decision: Any,
    ) -> dict[str, Any]:
        """The severity grade and per-grade probabilities (missing where nothing was scored),
        as output columns."""
        if self.severity is None:
            return {"severity": pd.array([pd.NA] * len(frame), dtype="string")}
        from deeppcos.fusion.grading import severity_inputs

        p_image = frame["p_image"] if "image" in self.branches else None
        excluded = self.severity_info.get("excluded_inputs", [])
        x = severity_inputs(tabular, p_image, excluded, frame.index)
        given_pcos = self.severity.predict_proba(x)  # the head picks its own columns, by name
        pcos_levels = [str(v) for v in self.severity.levels_]
        return _severity_arrays(given_pcos, risk, decision, self.severity_levels(), pcos_levels)

    def severity_levels(self) -> list[str]:
        """Every grade, lowest ("no disease") first: the head's PCOS grades after it."""
        return [str(v) for v in self.severity_info.get("levels", [])]


def severity_columns(
    given_pcos: np.ndarray,
    risk: np.ndarray,
    decision: Any,
    levels: Sequence[str],
    pcos_levels: Sequence[str],
) -> pd.DataFrame:
    """One coherent severity output from the presence risk and the grade model given PCOS.

    ``levels``: every grade, lowest (no PCOS) first; ``pcos_levels``: the head's grades (the
    rest), ``given_pcos``: their probabilities given PCOS, rows summing to 1.

    * ``p_severity_<lowest>`` = 1 − risk and ``p_severity_<g>`` = risk × P(g | PCOS): one
      distribution over every grade, summing to 1, whose "no PCOS" share is exactly the
      calibrated presence risk's complement.
    * ``severity``: the lowest grade when the decision is negative, else the most probable grade
      *given PCOS* — a grade is only ever reported together with a positive decision, and a
      positive decision always comes with a PCOS grade.
    """
    return pd.DataFrame(_severity_arrays(given_pcos, risk, decision, levels, pcos_levels))


def _severity_arrays(
    given_pcos: np.ndarray,
    risk: np.ndarray,
    decision: Any,
    levels: Sequence[str],
    pcos_levels: Sequence[str],
) -> dict[str, Any]:
    """:func:`severity_columns` as columns (``severity``, then ``p_severity_<grade>``)."""
    if list(levels[1:]) != list(pcos_levels):
        raise RunError(f"severity levels {list(levels)} do not extend the head's {pcos_levels}")
    risk = np.asarray(risk, dtype="float64")
    given = np.asarray(given_pcos, dtype="float64")
    scored = ~np.isnan(risk)
    flagged = pd.array(decision, dtype="boolean").to_numpy(dtype=bool, na_value=False)
    codes = np.where(flagged, 1 + given.argmax(axis=1), 0)
    codes = np.where(scored, codes, -1)
    grades = pd.Categorical.from_codes(codes, dtype=_grade_dtype(tuple(levels)))
    joint = np.column_stack([1 - risk, risk[:, None] * given])
    joint[~scored] = np.nan
    return {
        "severity": grades,
        **{f"p_severity_{level}": joint[:, k] for k, level in enumerate(levels)},
    }


@functools.lru_cache(maxsize=16)
def _grade_dtype(levels: tuple[str, ...]) -> pd.CategoricalDtype:
    # Built once per run's grades: checking the categories costs more than the coding.
    return pd.CategoricalDtype(list(levels), ordered=True)


def given_pcos(probabilities: dict[str, float | None]) -> dict[str, float] | None:
    """From one patient's ``p_severity_<grade>`` values (every grade, lowest first): the PCOS
    grades' shares given PCOS, summing to 1 (None when her risk is 0 or missing)."""
    pcos = {k: v for k, v in list(probabilities.items())[1:] if v is not None and v == v}
    total = sum(pcos.values())
    return {k: v / total for k, v in pcos.items()} if total > 0 else None


def load_run(run: Path | str) -> Predictor:
    """Load a complete run folder's models for prediction."""
    folder = Run.open(run)
    if not folder.has_fusion:
        raise RunError(f"{folder.path}: no fusion stage in this run; retrain with fusion enabled")
    from deeppcos.fusion.routing import Router

    record = folder.record
    predictor = Predictor(
        run=folder.path,
        config=folder.config(),
        record=record,
        metrics=folder.metrics() if folder.metrics_file.is_file() else None,
        cohort_summary=folder.cohort_summary(),
        split_assignments=folder.split_assignments(),
    )
    for name in record.get("branches", []):
        predictor.branches[name] = _load_branch(name, folder.branch_folder(name))
    method = folder.fusion_method()
    predictor.fusion_method = method
    predictor.fusion = _load_fusion(method, folder.fusion_folder)
    predictor.router = Router.load(folder.fusion_folder)
    predictor.threshold = folder.threshold()
    if folder.has_severity:
        from deeppcos.fusion.severity import OrdinalHead

        predictor.severity = OrdinalHead.load(folder.severity_folder)
        predictor.severity_info = folder.severity_info()
    return predictor


def _load_fusion(method: str, folder: Path) -> Any:
    from deeppcos.fusion.stage import FUSION_METHODS

    if method not in FUSION_METHODS:
        raise RunError(f"{folder}: unknown fusion method {method!r}")
    return FUSION_METHODS[method].load(folder)


def _load_branch(name: str, folder: Path) -> Any:
    from deeppcos.branches import branch_kind

    return branch_kind(name).load(folder)
