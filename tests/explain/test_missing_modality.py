"""A missing modality is not evidence (issue 15): a patient without images is scored from her
labs alone, one without labs from her images alone, on the tiny synthetic run whose cohort
lacks images and labs independently of the label."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deeppcos.explain.patient import explain_patient
from tests.conftest import read_metrics

# How far the tabular-only route of a two-branch run may be from a run trained on the labs
# alone: both use the same tabular branch (same folds and seeds), calibrated on the same
# out-of-fold scores; the labs-only run stacks one logistic layer more before its calibrator.
SEPARATE_RUN_TOLERANCE = 0.05


def _both(predictor: Any, cohort: Any) -> list[str]:
    predictions = predictor.predict(cohort)
    return predictions.loc[predictions["modalities"] == "tabular+image", "patient_id"].tolist()


def _without(cohort: Any, patient: str, modality: str) -> Any:
    """The cohort with one patient's images, or her labs, taken away."""
    if modality == "image":
        kept = cohort.images[cohort.images["patient_id"] != patient]
        return dataclasses.replace(cohort, images=kept)
    patients = cohort.patients.copy()
    keys = ("patient_id", "label", "severity", "group")
    features = [c for c in patients.columns if c not in keys]
    patients.loc[patients["patient_id"] == patient, features] = np.nan
    return dataclasses.replace(cohort, patients=patients)


def test_missingness_is_independent_of_the_label_in_this_cohort(run_dir: Path) -> None:
    report = read_metrics(run_dir)["fusion"]["missing_modalities"]
    assert set(report) == {"tabular", "image"}
    assert not any(entry["informative"] for entry in report.values())


def test_without_her_images_she_gets_the_labs_only_models_risk(
    predictor: Any, cohort: Any, tmp_path: Path, make_config: Any
) -> None:
    patients = _both(predictor, cohort)[:5]
    full = predictor.predict(cohort, patients).set_index("patient_id")
    for patient in patients:
        row = predictor.predict(_without(cohort, patient, "image"), [patient]).iloc[0]
        assert row["modalities"] == "tabular" and np.isnan(row["p_image"])
        assert row["p_tabular"] == full.loc[patient, "p_tabular"]  # the labs, scored the same
        expected = predictor.calibrate(row["p_tabular"], "tabular")[0]
        assert row["risk"] == pytest.approx(expected, abs=1e-12)
    # The same patients scored by a run trained on the labs alone.
    from deeppcos.config import BranchConfig
    from deeppcos.inference.predictor import load_run
    from deeppcos.pipeline.training import train

    config = make_config(tmp_path).model_copy(update={"image": BranchConfig(enabled=False)})
    labs_only = load_run(train(config, tmp_path / "labs-only"))
    alone = labs_only.predict(labs_only.cohort(), patients).set_index("patient_id")
    for patient in patients:
        row = predictor.predict(_without(cohort, patient, "image"), [patient]).iloc[0]
        assert row["risk"] == pytest.approx(alone.loc[patient, "risk"], abs=SEPARATE_RUN_TOLERANCE)


def test_without_her_labs_she_gets_the_image_models_risk(predictor: Any, cohort: Any) -> None:
    patient = _both(predictor, cohort)[0]
    without = _without(cohort, patient, "tabular")
    row = predictor.predict(without, [patient]).iloc[0]
    assert row["modalities"] == "image" and np.isnan(row["p_tabular"])
    assert row["risk"] == pytest.approx(predictor.calibrate(row["p_image"], "image")[0], abs=1e-12)
    explanation = explain_patient(predictor, patient, without, saliency=None)
    assert explanation.prediction["risk"] == pytest.approx(row["risk"])
    assert "tabular" not in explanation.shares and explanation.features == []


def test_with_both_the_risk_without_each_is_the_other_routes_risk(
    predictor: Any, cohort: Any
) -> None:
    patient = _both(predictor, cohort)[0]
    shares = explain_patient(predictor, patient, cohort, saliency=None).shares
    no_images = predictor.predict(_without(cohort, patient, "image"), [patient]).iloc[0]
    no_labs = predictor.predict(_without(cohort, patient, "tabular"), [patient]).iloc[0]
    assert shares["risk_without_ultrasound"] == pytest.approx(no_images["risk"], abs=1e-12)
    assert shares["risk_without_tabular"] == pytest.approx(no_labs["risk"], abs=1e-12)
