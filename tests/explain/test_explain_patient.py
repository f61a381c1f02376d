"""The per-patient explanation object, its HTML and PDF reports, and ``deeppcos explain``."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from deeppcos.cli import app
from deeppcos.exceptions import SchemaError
from deeppcos.explain.patient import PatientExplanation, explain_patient
from deeppcos.explain.report import render_html, write_report
from deeppcos.knowledge.criteria import CriteriaRules, label_criteria

runner = CliRunner()


def _patient_with_everything(cohort: Any, predictor: Any) -> str:
    """A patient with labs and two images."""
    counts = cohort.images["patient_id"].value_counts()
    two = set(counts[counts >= 2].index)
    scored = predictor.branches["tabular"].predict_proba(cohort).dropna().index
    return sorted(two & set(scored))[0]


@pytest.fixture(scope="module")
def patient(cohort: Any, predictor: Any) -> str:
    return _patient_with_everything(cohort, predictor)


@pytest.fixture(scope="module")
def explanation(predictor: Any, cohort: Any, patient: str) -> PatientExplanation:
    return explain_patient(predictor, patient, cohort)


def test_explanation_matches_the_prediction(
    explanation: PatientExplanation, predictor: Any, cohort: Any, patient: str
) -> None:
    row = predictor.predict(cohort, [patient]).iloc[0]
    assert explanation.prediction["risk"] == pytest.approx(row["risk"])
    assert explanation.prediction["probability"] == pytest.approx(row["probability"])
    assert explanation.prediction["decision"] == bool(row["decision"])
    assert explanation.prediction["threshold"] == predictor.threshold
    assert explanation.modalities == "tabular+image" == row["modalities"]
    if "severity" in row.index and row["severity"] == row["severity"]:
        severity = explanation.severity
        assert severity["grade"] == str(row["severity"])
        assert sum(severity["probabilities"].values()) == pytest.approx(1, abs=1e-6)
        assert severity["probabilities"]["none"] == pytest.approx(1 - row["risk"])
        assert (severity["grade"] == "none") == (not row["decision"])
        assert sum(severity["given_pcos"].values()) == pytest.approx(1, abs=1e-9)
    shares = explanation.shares
    assert shares["bias"] + shares["ultrasound"] + shares["tabular"] == pytest.approx(
        explanation.logit, abs=1e-9
    )
    assert sum(f.logit for f in explanation.features) == pytest.approx(
        shares["tabular_features"], abs=1e-9
    )
    assert 1 / (1 + np.exp(-explanation.logit)) == pytest.approx(row["probability"], abs=1e-9)
    logits = [abs(f.logit) for f in explanation.features]
    assert logits == sorted(logits, reverse=True)


def test_effects_in_plain_language(explanation: PatientExplanation, predictor: Any) -> None:
    top = explanation.top_features(5)
    assert top and all(f.direction in ("raised", "lowered") for f in top)
    effect = top[0]
    # The risk without one contribution is the route's calibrated sigmoid of the logit without it.
    expected = predictor.calibrate(
        1 / (1 + np.exp(-(explanation.logit - effect.logit))), explanation.modalities
    )[0]
    assert effect.risk_without == pytest.approx(expected)
    sentence = effect.sentence(explanation.risk)
    assert effect.label in sentence and effect.direction in sentence and "logit points" in sentence
    assert "without it" in sentence
    amh = next(f for f in explanation.features if f.name == "amh_ng_ml")
    assert amh.unit == "ng/mL" and "PCOS" in amh.typical
    if amh.value is not None:
        assert amh.value_text.endswith("ng/mL")


def test_criteria_and_images(
    explanation: PatientExplanation, cohort: Any, patient: str, predictor: Any
) -> None:
    guideline = predictor.config.severity.guideline  # the run's, everywhere
    row = cohort.patients[cohort.patients["patient_id"] == patient]
    labelled = label_criteria(row, CriteriaRules(guideline=guideline)).frame.iloc[0]
    checklist = explanation.criteria
    assert checklist.guideline == explanation.guideline == guideline == "rotterdam-2003"
    assert "Rotterdam 2003" in render_html(explanation)
    state = {item.key: item.state for item in checklist.items}
    words = {True: "met", False: "not met"}
    for key in ("ovulatory_dysfunction", "hyperandrogenism", "pcom"):
        value = labelled[key]
        assert state[key] == ("unknown" if value is pd.NA else words[bool(value)])
    assert checklist.n_met == int(labelled["n_criteria_met"])
    assert len(explanation.images) == len(cohort.images_of(patient))
    for image in explanation.images:
        png = base64.b64decode(image.to_dict()["overlay_png_base64"])
        decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape[:2] == image.original_shape
    data = explanation.to_dict()
    json.dumps(data)  # JSON-safe
    assert data["patient_id"] == patient and len(data["images"]) == len(explanation.images)
    text = json.dumps(explanation.to_dict(images=False))
    for _, image in cohort.images_of(patient).iterrows():
        assert Path(image["path"]).stem not in text  # no file names or paths
        assert str(image["image_id"]) not in text


def test_unknown_patient_names_the_run_and_how_to_find_ids(predictor: Any, cohort: Any) -> None:
    with pytest.raises(SchemaError) as error:
        explain_patient(predictor, "NOT-A-PATIENT", cohort)
    message = str(error.value)
    assert str(predictor.run) in message and "NOT-A-PATIENT" in message
    assert str(cohort.patients["patient_id"].iloc[0]) in message and "patient_id" in message


def test_patient_without_labs_gets_no_tabular_share(predictor: Any, cohort: Any) -> None:
    no_labs = predictor.branches["tabular"].predict_proba(cohort)
    patient = str(no_labs[no_labs.isna()].index[0])
    explanation = explain_patient(predictor, patient, cohort, saliency=None)
    assert explanation.modalities == "image" and explanation.scored_by == "the image model alone"
    assert explanation.features == [] and explanation.tabular_branch is None
    shares = explanation.shares
    assert "tabular" not in shares and "risk_without_tabular" not in shares
    assert "ultrasound_fraction" not in shares
    assert shares["bias"] + shares["ultrasound"] == pytest.approx(explanation.logit, abs=1e-9)
    html = render_html(explanation)
    assert "ultrasound images only" in html and "Calibrated risk without it" not in html


def test_patient_without_images_is_scored_from_her_labs_alone(
    predictor: Any, cohort: Any
) -> None:
    """No share, percentage or "risk without it" for the scan she does not have; her risk is
    the tabular model's own, with its own calibrator."""
    with_images = set(cohort.images["patient_id"])
    labs = predictor.branches["tabular"].predict_proba(cohort).dropna()
    patient = next(str(p) for p in labs.index if p not in with_images)
    explanation = explain_patient(predictor, patient, cohort)
    assert explanation.modalities == "tabular" and explanation.images == []
    assert explanation.prediction["risk"] == pytest.approx(
        predictor.calibrate(labs[patient], "tabular")[0], abs=1e-12
    )
    shares = explanation.shares
    assert not {"ultrasound", "ultrasound_fraction", "risk_without_ultrasound"} & set(shares)
    assert shares["bias"] + shares["tabular"] == pytest.approx(explanation.logit, abs=1e-9)
    html = render_html(explanation)
    for absent in ("No scan", "The images account for", "Ultrasound images</td>"):
        assert absent not in html
    assert "has no ultrasound images" in html and "not used as evidence" in html
    from deeppcos.explain.plots import _bars

    assert all(kind != "image" for _, _, kind in _bars(explanation, 8))


def test_a_test_not_done_is_worded_as_an_absence(predictor: Any, cohort: Any) -> None:
    design = predictor.branches["tabular"].design_matrix(cohort)
    partial = design.isna().any(axis=1) & design.notna().any(axis=1)
    patient = str(design.index[partial.to_numpy()][0])
    explanation = explain_patient(predictor, patient, cohort, saliency=None)
    absent = [f for f in explanation.features if not f.measured and f.direction != "no effect"]
    assert absent, "the tiny cohort has missing lab values with an effect"
    sentence = absent[0].sentence(explanation.risk)
    assert "not measured" in sentence and "absence of this measurement" in sentence
    assert "not a finding" in sentence and absent[0].display.endswith(": not measured")
    assert absent[0].to_dict()["measured"] is False


def test_html_report_is_self_contained(
    explanation: PatientExplanation, cohort: Any, tmp_path: Path, patient: str
) -> None:
    path = write_report(explanation, tmp_path / "report.html")
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and patient in html
    assert "not a diagnosis" in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|file:|/)""", html)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 2 + len(explanation.images)  # two charts and each scan
    for encoded in images:
        assert base64.b64decode(encoded).startswith(b"\x89PNG")
    folder = str(Path(cohort.images["path"].iloc[0]).parent)
    assert folder not in html  # no file paths
    for effect in explanation.top_features(3):
        assert effect.label in html
    for item in explanation.criteria.items:
        assert item.title in html


def test_pdf_report(explanation: PatientExplanation, tmp_path: Path) -> None:
    path = write_report(explanation, tmp_path / "report.pdf")
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type /Page\b", data)) == 3
    with pytest.raises(ValueError, match=r"\.html or \.pdf"):
        write_report(explanation, tmp_path / "report.docx")


def test_cli_patient_report(run_dir: Path, patient: str, tmp_path: Path) -> None:
    out = tmp_path / "r" / "report.html"
    result = runner.invoke(
        app,
        [
            "explain",
            str(run_dir),
            "--patient",
            patient,
            "--out",
            str(out),
            "--pdf",
            "--json",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".pdf").is_file()
    assert json.loads((tmp_path / "r.json").read_text())["patient_id"] == patient
    assert "calibrated risk" in result.output
    unknown = runner.invoke(app, ["explain", str(run_dir), "--patient", "X9", "--out", str(out)])
    assert unknown.exit_code == 1 and "X9" in unknown.output and "patient_id" in unknown.output
    neither = runner.invoke(app, ["explain", str(run_dir), "--out", str(out)])
    assert neither.exit_code == 2
    bad = runner.invoke(app, ["explain", str(run_dir), "--patient", patient, "--out", "r.txt"])
    assert bad.exit_code == 2
