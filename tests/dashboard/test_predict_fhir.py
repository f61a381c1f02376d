"""The Predict page on a FHIR NDJSON upload: what reading left out is shown, and every patient in
the upload is scored with the run's predictor — the same risks ``deeppcos predict --fhir``
gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.dashboard.dashboard_helpers import no_exception, texts


def _observation(pid: str, code: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-03-01",
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org"},
    }


def _export() -> bytes:
    lines = [
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1995-05-01"},
        {"resourceType": "Patient", "id": "p2", "gender": "female", "birthDate": "1988-02-11"},
        _observation("p1", "10501-5", 14.0, "[IU]/L"),  # LH
        _observation("p1", "15067-2", 5.0, "[IU]/L"),  # FSH
        _observation("p2", "10501-5", 4.0, "[IU]/L"),
        _observation("p2", "15067-2", 6.5, "kg"),  # not convertible: left out, listed
    ]
    text = [json.dumps(line) for line in lines]
    text.insert(3, '{"resourceType": "Observation", ')  # line 4: cut short
    return ("\n".join(text) + "\n").encode()


def test_a_fhir_upload_is_scored_and_its_problems_shown(app: Any, tabular_run: Path) -> None:
    from dashboards import uploads
    from deeppcos.inference.batch import model_inputs
    from deeppcos.inference.predictor import load_run
    from deeppcos.knowledge.catalog import CATALOG

    at = app(tabular_run).switch_page("views/predict.py").run()
    (uploader,) = [u for u in at.get("file_uploader") if u.key == "predict_fhir"]
    uploader.set_value([("export.ndjson", _export(), "application/x-ndjson")]).run()
    no_exception(at)
    shown = texts(at)
    assert "export.ndjson: 2 patient(s)" in shown
    assert "left out or changed 2 value(s) or line(s)" in shown
    problems = at.dataframe[0].value
    assert sorted(problems["level"]) == ["excluded", "warning"]
    assert "not valid JSON" in " ".join(problems["message"]) and "4" in problems["row"].tolist()
    at.button(key="predict_fhir_score").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    scores = next(d.value for d in at.dataframe if "risk" in d.value)
    assert scores["patient_id"].tolist() == ["p1", "p2"]
    assert "2 patient(s) scored with this run's predictor" in texts(at)
    # The risks are the predictor's own on the same upload (as deeppcos predict --fhir reads it).
    predictor = load_run(tabular_run)
    read = uploads.read_fhir_upload(
        "export.ndjson", _export(), predictor.input_ranges(list(CATALOG))
    )
    expected = predictor.predict(read.to_cohort(model_inputs(predictor)))
    np.testing.assert_allclose(scores["risk"].to_numpy(float), expected["risk"].to_numpy(float))
    assert read.patients.set_index("patient_id").loc["p2", "lh_iu_l"] == 4.0
    assert np.isnan(read.patients.set_index("patient_id").loc["p2", "fsh_iu_l"])
    # The scores stay on the page across reruns (another widget touched).
    at.selectbox(key="predict_fhir_patient").set_value("p2").run()
    assert any("risk" in d.value for d in at.dataframe)
