"""The Predict page reads a new patient through Cohort.from_frames (issue 17): the values
entered as a one-row frame, the uploaded images (written to a private temporary folder, as image
readers take paths) as an images frame; "keep" keeps the folder with the values beside them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dashboards import uploads
from deeppcos.data.cohort import Cohort
from deeppcos.data.manifest import PATIENTS_FRAME
from tests.dashboard.dashboard_helpers import no_exception, texts


def _png() -> bytes:
    import cv2

    pixels = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    ok, buffer = cv2.imencode(".png", pixels)
    assert ok
    return buffer.tobytes()


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any, Any]]:
    """Record every Cohort.from_frames call (patients, images, spec), then load as before."""
    calls: list[tuple[Any, Any, Any]] = []
    original = Cohort.from_frames.__func__  # type: ignore[attr-defined]

    def spy(
        cls: type[Cohort], patients: Any = None, images: Any = None, spec: Any = None, **kw: Any
    ):
        calls.append((patients, images, spec))
        return original(cls, patients, images, spec, **kw)

    monkeypatch.setattr(Cohort, "from_frames", classmethod(spy))
    return calls


def test_a_new_patient_is_read_from_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch)
    table = pd.DataFrame([{"patient_id": " p1 ", "amh_ng_ml": 9.5, "lh_iu_l": 400.0}])
    patient = uploads.write_patient(" p1 ", table, [uploads.Upload("a.jpg", _png())], tmp_path)
    assert [p.name for p in patient.folder.rglob("*") if p.is_file()] == ["p1_1.png"]
    cohort = uploads.load_patient(patient)
    ((patients, images, spec),) = calls
    assert patients["patient_id"].tolist() == ["p1"]  # the checked id, as the images have it
    assert images.to_dict("records") == [{"patient_id": "p1", "path": "p1_1.png"}]
    assert spec.images.root == patient.folder / "images"
    assert cohort.patients["patient_id"].tolist() == ["p1"] and len(cohort.images) == 1
    assert np.isnan(cohort.patients["lh_iu_l"].iloc[0])  # out of range: missing, reported
    ((file, row),) = [(e.file, e.row) for e in cohort.report.by_action("out_of_range")]
    assert (file, row) == (PATIENTS_FRAME, 1)
    assert patient.keep() == patient.folder
    kept = pd.read_csv(patient.folder / "patients.csv")
    assert kept["patient_id"].tolist() == ["p1"] and kept["amh_ng_ml"].tolist() == [9.5]
    patient.remove()
    assert not patient.folder.exists()


def test_the_predict_page_reads_the_patient_from_frames_and_keeps_the_uploads(
    app: Any, dashboard_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the upload folder goes
    calls = _spy(monkeypatch)
    at = app(dashboard_run).switch_page("views/predict.py").run()
    at.number_input(key="lab-amh_ng_ml").set_value(9.5).run()
    (uploader,) = [u for u in at.get("file_uploader") if u.key == "predict_images"]
    uploader.set_value([("scan.png", _png(), "image/png")]).run()
    at.checkbox(key="predict_keep").check().run()
    at.button(key="predict_go").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert "Patient new-1" in texts(at)
    ((patients, images, spec),) = calls
    assert patients["patient_id"].tolist() == ["new-1"] and patients["amh_ng_ml"].tolist() == [9.5]
    assert images["path"].tolist() == ["new-1_1.png"]
    assert spec.label_name and spec.patients.infer_categorical is False  # the run's kind
    (folder,) = tmp_path.glob("deeppcos-predict-*")
    assert any(str(folder) in i.value for i in at.info)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "images/new-1_1.png",
        "patients.csv",
    ]
