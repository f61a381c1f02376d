"""A run folder loaded back into a predictor: ``deeppcos.load_run(path)``.

The predictor applies what training saved, in the same order: each branch's model (with its own
preprocessing), the late fusion, the calibrator and the decision threshold. Every prediction
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
]


@dataclass
class Predictor:
    run: Path
    config: RunConfig
    record: dict[str, Any]
    branches: dict[str, Any] = field(default_factory=dict)
    fusion: Any = None
    calibrator: Any = None
    threshold: float | None = None

    def cohort(self) -> Cohort:
        """The cohort the run was trained on, checked against the run's fingerprint."""
        from deeppcos.training import cohort_for

        cohort = cohort_for(self.config)
        if cohort.fingerprint() != self.record.get("cohort_fingerprint"):
            raise RunError(
                f"{self.run}: the cohort's content changed since training (fingerprint "
                f"{cohort.fingerprint()[:12]} ≠ {str(self.record.get('cohort_fingerprint'))[:12]})"
            )
        return cohort

    def predict(self, cohort: Cohort, patient_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per patient: branch probabilities, fused probability, calibrated risk,
        decision at the run's threshold, and the modalities used."""
        ids = list(cohort.patients["patient_id"]) if patient_ids is None else list(patient_ids)
        frame = pd.DataFrame(index=pd.Index(ids, name="patient_id"))
        for name in ("tabular", "image"):
            branch = self.branches.get(name)
            frame[f"p_{name}"] = (
                branch.predict_proba(cohort, ids).to_numpy() if branch is not None else np.nan
            )
        used = [f"p_{name}" for name in self.branches]
        fused = self.fusion.predict_proba(frame[used])
        risk = self.calibrator.transform(fused)
        decision = pd.array(
            [pd.NA if np.isnan(r) else bool(r >= self.threshold) for r in risk], dtype="boolean"
        )
        out = frame.reset_index()
        out["probability"] = fused
        out["risk"] = risk
        out["decision"] = decision
        out["modalities"] = self.fusion.modalities_used(frame[used])
        return out[PREDICTION_COLUMNS]


def load_run(run: Path | str) -> Predictor:
    """Load a complete run folder's models for prediction."""
    run = Path(run)
    record = read_run_record(run)
    config = load_config(run / "config.yaml")
    if not (run / "fusion" / "late_fusion.json").is_file():
        raise RunError(f"{run}: no fusion stage in this run; retrain with fusion enabled")
    from deeppcos.fusion.calibration import Calibrator
    from deeppcos.fusion.late import LateFusion

    predictor = Predictor(run=run, config=config, record=record)
    for name in record.get("branches", []):
        predictor.branches[name] = _load_branch(name, run / name)
    predictor.fusion = LateFusion.load(run / "fusion")
    predictor.calibrator = Calibrator.from_dict(_json(run / "fusion" / "calibrator.json"))
    predictor.threshold = float(_json(run / "fusion" / "decision.json")["threshold"])
    return predictor


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
