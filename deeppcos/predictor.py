"""A run folder loaded back into a predictor: ``deeppcos.load_run(path)``.

The predictor applies what training saved, in the same order: each branch's model (with its own
preprocessing), the fusion (late or intermediate, whichever won on validation), the calibrator,
the decision threshold and, when the run has one, the ordinal severity head. Every prediction
says which modalities it used; a patient with neither labs nor images gets no prediction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.config import RunConfig, load_config
from deeppcos.data.cohort import Cohort
from deeppcos.data.spec import CohortSpec
from deeppcos.exceptions import RunError
from deeppcos.runs import read_run_record

PREDICTION_COLUMNS = [
    "patient_id",
    "p_tabular",
    "p_image",
    "probability",
    "risk",
    "decision",
    "modalities",
    "severity",
]


@dataclass
class Prediction:
    """Predictions and the inputs they were computed from: the tabular design matrix and the
    per-patient image embeddings (``None`` without that branch), both indexed by patient_id."""

    predictions: pd.DataFrame
    tabular: pd.DataFrame | None
    embeddings: pd.DataFrame | None


@dataclass
class Predictor:
    run: Path
    config: RunConfig
    record: dict[str, Any]
    branches: dict[str, Any] = field(default_factory=dict)
    fusion: Any = None
    fusion_method: str = "late"
    calibrator: Any = None
    threshold: float | None = None
    severity: Any = None  # OrdinalHead, or None when the run has no severity head
    severity_info: dict[str, Any] = field(default_factory=dict)

    def cohort(self) -> Cohort:
        """The cohort the run was trained on, checked against the run's fingerprint."""
        from deeppcos.training import cohort_for

        cohort = cohort_for(self.config)
        if cohort.fingerprint() != self.record.get("cohort_fingerprint"):
            raise RunError(
                f"{self.run}: the cohort's content changed since training (fingerprint "
                f"{cohort.fingerprint()[:12]} ≠ {str(self.record.get('cohort_fingerprint'))[:12]})"
            )
        corrections = self.run / "label_corrections.csv"
        if corrections.is_file():
            from deeppcos.training import apply_label_corrections

            table = pd.read_csv(corrections, dtype={"patient_id": str})
            apply_label_corrections(cohort, table.set_index("patient_id")["label"])
        return cohort

    def training_spec(self) -> CohortSpec:
        """The spec of the cohort the run was trained on (not loaded): new patients in the same
        layout are read with it (``deeppcos.scoring.new_patients_spec``)."""
        from deeppcos.data.spec import load_spec, spec_from_dict

        config = self.config
        if config.synthetic is not None:
            return load_spec(config.resolve(config.synthetic.folder) / "cohort.yaml")
        if config.cohort_spec is not None:
            return load_spec(config.resolve(config.cohort_spec))
        assert config.cohort is not None
        return spec_from_dict(config.cohort, base_dir=config.base_dir, source=config.name)

    def predict(self, cohort: Cohort, patient_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per patient: branch probabilities, fused probability, calibrated risk,
        decision at the run's threshold, the modalities used and the severity grade (most
        probable; ``p_severity_<grade>`` columns hold each grade's probability)."""
        return self.predict_with_inputs(cohort, patient_ids).predictions

    def predict_with_inputs(
        self, cohort: Cohort, patient_ids: Sequence[str] | None = None
    ) -> Prediction:
        """:meth:`predict`, keeping the model inputs it computed (for explanations)."""
        ids = list(cohort.patients["patient_id"]) if patient_ids is None else list(patient_ids)
        frame = pd.DataFrame(index=pd.Index(ids, name="patient_id"))
        # Each branch reads its inputs once: the design matrix and the images' single pass
        # (probability and embedding) also feed the fusion and the severity head.
        tabular = self._tabular_inputs(cohort, ids)
        frame["p_tabular"] = (
            self.branches["tabular"].predict_design(tabular).to_numpy()
            if tabular is not None
            else np.nan
        )
        embeddings = None
        if "image" in self.branches:
            p_image, embeddings = self.branches["image"].predict_patients(cohort, ids)
            frame["p_image"] = p_image.to_numpy()
        else:
            frame["p_image"] = np.nan
        fused, modalities = self._fuse(frame, tabular, embeddings)
        risk = self.calibrator.transform(fused)
        decision = pd.array(
            [pd.NA if np.isnan(r) else bool(r >= self.threshold) for r in risk], dtype="boolean"
        )
        out = frame.reset_index()
        out["probability"] = fused
        out["risk"] = risk
        out["decision"] = decision
        out["modalities"] = modalities
        severity = self._grade(frame, tabular, np.array(modalities) != "none")
        out = pd.concat([out, severity.reset_index(drop=True)], axis=1)
        columns = [*PREDICTION_COLUMNS, *severity.columns.drop("severity")]
        return Prediction(out[columns], tabular, embeddings)

    def _tabular_inputs(self, cohort: Cohort, ids: list[str]) -> pd.DataFrame | None:
        branch = self.branches.get("tabular")
        return branch.design_matrix(cohort, ids) if branch is not None else None

    def _fuse(
        self,
        frame: pd.DataFrame,
        tabular: pd.DataFrame | None,
        embeddings: pd.DataFrame | None,
    ) -> tuple[np.ndarray, list[str]]:
        if self.fusion_method == "intermediate":
            return (
                self.fusion.predict_proba(tabular, embeddings),
                self.fusion.modalities_used(tabular, embeddings),
            )
        used = frame[[f"p_{name}" for name in self.branches]]
        return self.fusion.predict_proba(used), self.fusion.modalities_used(used)

    def _grade(
        self, frame: pd.DataFrame, tabular: pd.DataFrame | None, scored: np.ndarray
    ) -> pd.DataFrame:
        """The severity grade and per-grade probabilities (missing where nothing was scored)."""
        if self.severity is None:
            return pd.DataFrame({"severity": pd.Series([pd.NA] * len(frame), dtype="string")})
        from deeppcos.fusion.grading import severity_inputs

        p_image = frame["p_image"] if "image" in self.branches else None
        excluded = self.severity_info.get("excluded_inputs", [])
        x = severity_inputs(tabular, p_image, excluded, frame.index)
        probabilities = self.severity.predict_proba(x[self.severity.feature_names_])
        probabilities[~scored] = np.nan
        levels = [str(level) for level in self.severity.levels_]
        best = np.where(scored, probabilities.argmax(axis=1), -1)
        grades = pd.Categorical.from_codes(best, categories=levels, ordered=True)
        out = pd.DataFrame(probabilities, columns=[f"p_severity_{lv}" for lv in levels])
        out.insert(0, "severity", grades)
        return out


def load_run(run: Path | str) -> Predictor:
    """Load a complete run folder's models for prediction."""
    run = Path(run)
    record = read_run_record(run)
    config = load_config(run / "config.yaml")
    if not (run / "fusion" / "calibrator.json").is_file():
        raise RunError(f"{run}: no fusion stage in this run; retrain with fusion enabled")
    from deeppcos.fusion.calibration import Calibrator

    predictor = Predictor(run=run, config=config, record=record)
    for name in record.get("branches", []):
        predictor.branches[name] = _load_branch(name, run / name)
    method = _json(run / "fusion" / "fusion.json")["method"]
    predictor.fusion_method = method
    predictor.fusion = _load_fusion(method, run / "fusion")
    predictor.calibrator = Calibrator.from_dict(_json(run / "fusion" / "calibrator.json"))
    predictor.threshold = float(_json(run / "fusion" / "decision.json")["threshold"])
    if (run / "severity" / "severity.json").is_file():
        from deeppcos.fusion.severity import OrdinalHead

        predictor.severity = OrdinalHead.load(run / "severity")
        predictor.severity_info = _json(run / "severity" / "severity.json")
    return predictor


def _load_fusion(method: str, folder: Path) -> Any:
    if method == "late":
        from deeppcos.fusion.late import LateFusion

        return LateFusion.load(folder)
    if method == "intermediate":
        from deeppcos.fusion.intermediate import IntermediateFusion

        return IntermediateFusion.load(folder)
    raise RunError(f"{folder / 'fusion.json'}: unknown fusion method {method!r}")


def _load_branch(name: str, folder: Path) -> Any:
    if name == "tabular":
        from deeppcos.tabular.branch import TabularBranch

        return TabularBranch.load(folder)
    from deeppcos.image.branch import ImageBranch

    return ImageBranch.load(folder)


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunError(f"{path}: missing from the run folder")
    return json.loads(path.read_text(encoding="utf-8"))
