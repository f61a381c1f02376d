"""Every dashboard page in Streamlit's AppTest: it loads without exception and shows its key
elements; the threshold slider re-scores live; feedback is written and read back; uploads and
lab ranges are checked; broken runs give messages, not tracebacks."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from tests.dashboard.dashboard_helpers import PAGES, no_exception, texts

KEY_TEXT = {
    "cohort": ("Distributions by label", "Missing values", "Image gallery", "Audit"),
    "performance": ("Decision threshold", "Branches against fusion", "Subgroups"),
    "patient": ("Grad-CAM", "Rotterdam criteria", "Calibrated risk"),
    "tuning": ("Tuning",),
    "predict": ("Laboratory values", "Ultrasound images"),
    "feedback": ("Entries", "Your verdict"),
}


def page(at: Any, name: str) -> Any:
    return at.switch_page(f"views/{name}.py").run()


def test_every_page_loads_and_shows_its_key_elements(app: Any, dashboard_run: Path) -> None:
    at = app(dashboard_run)
    for name in PAGES:
        page(at, name)
        no_exception(at)
        assert not at.error, (name, [e.value for e in at.error])
        shown = texts(at) + " ".join(w.label for w in at.radio)
        for text in KEY_TEXT[name]:
            assert text in shown, (name, text)
    page(at, "cohort")
    assert at.metric[0].label == "Patients" and at.metric[0].value == "70"
    assert len(at.get("plotly_chart")) >= 3  # labels, distribution, missingness/correlations
    assert len(at.image) >= 6, "the gallery shows thumbnails"


def _counts(caption: str) -> tuple[int, int, int, int]:
    found = re.search(
        r"(\d+) true positives, (\d+) false negatives, (\d+) false positives, (\d+) true neg",
        caption,
    )
    assert found, caption
    tp, fn, fp, tn = (int(g) for g in found.groups())
    return tp, fn, fp, tn


def _expected(run: Path, threshold: float) -> tuple[int, int, int, int]:
    frame = pd.read_csv(run / "evaluation" / "test_predictions.csv").dropna(
        subset=["risk", "label"]
    )
    called, y = frame["risk"].to_numpy() >= threshold, frame["label"].to_numpy() == 1
    return (
        int((called & y).sum()),
        int((~called & y).sum()),
        int((called & ~y).sum()),
        int((~called & ~y).sum()),
    )


def test_threshold_slider_rescores_live(app: Any, dashboard_run: Path) -> None:
    at = page(app(dashboard_run), "performance")
    slider = at.slider[0]
    caption = next(c.value for c in at.caption if "true positives" in c.value)
    assert _counts(caption) == _expected(dashboard_run, slider.value)
    seen = {}
    for threshold in (0.0, 0.5, 1.0):
        at.slider[0].set_value(threshold).run()
        no_exception(at)
        caption = next(c.value for c in at.caption if "true positives" in c.value)
        assert _counts(caption) == _expected(dashboard_run, threshold)
        metrics = {m.label: m.value for m in at.metric}
        seen[threshold] = (metrics["sensitivity"], metrics["specificity"])
    assert seen[0.0] == ("1.000", "0.000")  # everyone flagged
    assert seen[0.0] != seen[1.0] and len(set(seen.values())) >= 2
    at.button(key="reset_threshold").click().run()
    assert at.slider[0].value == pytest.approx(
        float(
            pd.read_json(dashboard_run / "evaluation" / "metrics.json", typ="series")["threshold"]
        ),
        abs=1e-3,
    )


def test_patient_page_finds_by_error_kind_and_id(app: Any, dashboard_run: Path) -> None:
    at = page(app(dashboard_run), "patient")
    kinds = at.selectbox(key="patient_kind")
    order = ["false negative", "false positive", "true positive", "true negative"]
    assert (
        kinds.options == [o for o in kinds.options if o.split("s (")[0] in order]
        and sorted(kinds.options, key=lambda o: order.index(o.split("s (")[0])) == kinds.options
    )
    shown = at.selectbox(key="patient_in_kind").value
    frame = pd.read_csv(dashboard_run / "evaluation" / "test_predictions.csv", dtype=str)
    row = frame[frame["patient_id"] == shown].iloc[0]
    kind = kinds.value
    assert (row["label"] == "1") == (kind in ("false negative", "true positive"))
    assert f"Patient {shown}" in texts(at)
    report = at.get("download_button")[0]
    assert "HTML report" in report.proto.label
    at.radio(key="patient_mode").set_value("patient id").run()
    other = frame["patient_id"].iloc[-1]
    at.selectbox(key="patient_by_id").set_value(other).run()
    no_exception(at)
    assert f"Patient {other}" in texts(at)
    assert any(m.label == "Calibrated risk" for m in at.metric)


def test_feedback_is_written_and_read_back(app: Any, dashboard_run: Path, tmp_path: Path) -> None:
    from deeppcos.runs.feedback import FeedbackLog, feedback_path

    run = tmp_path / "run"  # a copy: the log is created beside the run
    shutil.copytree(dashboard_run, run)
    at = page(app(run), "feedback")
    patient = at.selectbox(key="feedback_patient").value
    at.text_input(key="feedback_user").input("Dr Rao").run()
    at.radio(key="feedback_verdict").set_value("I disagree")
    at.button[0].click().run()  # no reason: refused, nothing stored
    assert any("reason is required" in e.value for e in at.error)
    assert FeedbackLog(feedback_path(run)).read().empty
    at.radio(key="feedback_verdict").set_value("I disagree")
    at.selectbox(key="feedback_label").set_value(0)
    at.text_area(key="feedback_reason").input("follicle count normal on review")
    at.button[0].click().run()
    no_exception(at)
    assert any("Saved as entry 1" in s.value for s in at.success)
    stored = FeedbackLog(feedback_path(run)).read()
    assert len(stored) == 1
    entry = stored.iloc[0]
    assert entry["patient_id"] == patient and entry["user_name"] == "Dr Rao"
    assert not entry["agrees"] and entry["corrected_label"] == 0
    assert entry["reason"] == "follicle count normal on review"
    table = at.dataframe[0].value
    assert table["reason"].tolist() == ["follicle count normal on review"]
    assert "--label-corrections" in texts(at) and str(feedback_path(run)) in texts(at)
    csv = at.get("download_button")[0]
    assert "CSV" in csv.proto.label


def _png(tmp_path: Path) -> bytes:
    import cv2

    pixels = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    ok, buffer = cv2.imencode(".png", pixels)
    assert ok
    return buffer.tobytes()


def _uploaders(at: Any, key: str) -> list[Any]:
    return [u for u in at.get("file_uploader") if u.key == key]


def _uploader(at: Any, key: str) -> Any:
    (uploader,) = _uploaders(at, key)
    return uploader


def test_predict_fills_the_form_from_a_fhir_bundle(app: Any, dashboard_run: Path) -> None:
    """A FHIR Bundle upload fills the id and the labs it holds (units converted), to predict."""
    at = page(app(dashboard_run), "predict")
    bundle = (REPO / "tests" / "data" / "fhir" / "two_patients.json").read_bytes()
    _uploader(at, "predict_fhir").set_value([("b.json", bundle, "application/json")]).run()
    no_exception(at)
    chosen = at.selectbox(key="predict_fhir_patient")
    assert len(chosen.options) == 2
    at.button(key="predict_fhir_fill").click().run()
    no_exception(at)
    assert at.text_input(key="predict_id").value == chosen.value
    filled = [n for n in at.number_input if n.value is not None]
    assert filled, "no lab value was filled from the bundle"
    at.button(key="predict_go").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert f"Patient {chosen.value}" in texts(at)


def test_predict_checks_ranges_and_uploads(
    app: Any, dashboard_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the upload folder goes
    at = page(app(dashboard_run), "predict")
    lh = at.number_input(key="lab-lh_iu_l")
    assert "IU/L" in lh.label
    lh.set_value(400.0).run()
    assert any("LH" in w.value and "0–250 IU/L" in w.value for w in at.warning)
    at.number_input(key="lab-lh_iu_l").set_value(12.0).run()
    assert not at.warning
    at.number_input(key="lab-amh_ng_ml").set_value(9.5).run()
    uploader = _uploader(at, "predict_images")
    uploader.set_value([("scan.png", b"GIF89a not a png", "image/png")]).run()
    assert any("not an image" in e.value and "scan.png" in e.value for e in at.error)
    _uploader(at, "predict_images").set_value([("scan.png", _png(tmp_path), "image/png")]).run()
    assert not at.error
    at.button(key="predict_go").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Modalities used"] == "tabular+image"
    assert metrics["Calibrated risk"].endswith("%")
    assert "Patient new-1" in texts(at)
    assert not list(tmp_path.glob("deeppcos-predict-*")), "the upload folder is deleted"


def test_tuning_page_reads_a_study(app: Any, dashboard_run: Path, tmp_path: Path) -> None:
    import optuna

    from deeppcos.tuning import open_storage

    journal = tmp_path / "tuning" / "optuna-journal.log"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="tiny-tabular", storage=open_storage(str(journal)), direction="maximize"
    )
    study.optimize(lambda t: -((t.suggest_float("eta", 0.0, 1.0) - 0.3) ** 2), n_trials=6)
    at = page(app(dashboard_run), "tuning")
    at.text_input(key="tuning_storage").input(str(journal)).run()
    no_exception(at)
    table = at.dataframe[0].value
    assert table["study"].tolist() == ["tiny-tabular"]
    assert len(at.get("plotly_chart")) == 3  # history, importances, parallel coordinates
    assert any(c.value == f"optuna-dashboard {journal}" for c in at.code)
    best = at.dataframe[1].value
    assert best["eta"].iloc[0] == pytest.approx(study.best_params["eta"])
    at.text_input(key="tuning_storage").input(str(tmp_path / "none.log")).run()
    assert any("no journal file" in w.value for w in at.warning) and not at.exception


def test_a_tabular_only_unevaluated_run(app: Any, tabular_run: Path) -> None:
    at = app(tabular_run)
    no_exception(at)
    page(at, "performance")
    assert "deeppcos evaluate" in texts(at)
    assert "tabular branch" in at.dataframe[0].value["model"].tolist()
    page(at, "patient")
    assert [r.value for r in at.radio] == ["patient id"]
    at.selectbox(key="patient_by_id").set_value(at.selectbox(key="patient_by_id").options[0])
    at.run()
    no_exception(at)
    assert {m.label: m.value for m in at.metric}["Modalities used"] == "tabular"
    assert "Grad-CAM" not in texts(at)  # a run without an image model: no image section, caveat
    assert "laboratory data only" in texts(at)
    page(at, "predict")
    assert not _uploaders(at, "predict_images") and "no image branch" in texts(at)
    at.number_input(key="lab-amh_ng_ml").set_value(9.5).run()
    at.button(key="predict_go").click().run()
    no_exception(at)
    assert {m.label: m.value for m in at.metric}["Modalities used"] == "tabular"
    page(at, "feedback")
    assert "deeppcos evaluate" in texts(at)


def test_broken_runs_give_messages_not_tracebacks(
    app: Any, dashboard_run: Path, tmp_path: Path
) -> None:
    (tmp_path / ".half.partial").mkdir()
    (tmp_path / "notrun").mkdir()
    (tmp_path / "notrun" / "x.txt").write_text("x")
    cases = {
        tmp_path / "missing": "Run folder not found",
        tmp_path / "half": "half-written",
        tmp_path / ".half.partial": "half-written run",
        tmp_path / "notrun": "not a complete run",
    }
    for run, message in cases.items():
        at = app(run)  # the Cohort page; every page starts with the same check
        no_exception(at)
        assert any(message in e.value for e in at.error), run
    at = page(app(tmp_path / "half"), "predict")
    assert any("half-written" in e.value for e in at.error) and not at.exception
    old = tmp_path / "old"  # a run from an older deeppcos: no fusion/fusion.json
    shutil.copytree(dashboard_run, old, ignore=shutil.ignore_patterns("fusion.json"))
    at = page(app(old), "patient")
    no_exception(at)
    assert any("older deeppcos" in e.value for e in at.error)


def test_cohort_audit_on_request_or_from_file_and_gallery_filters(
    app: Any, dashboard_run: Path, tmp_path: Path
) -> None:
    import json

    at = app(dashboard_run)
    at.multiselect(key="gallery_labels").set_value([1]).run()
    captions = [caption for image in at.image for caption in image.captions]
    assert captions and all(" · PCOS" in c for c in captions), captions  # the label as said
    at.button(key="run_audit").click().run()
    no_exception(at)
    findings = at.dataframe[0].value
    assert {"severity", "check", "finding"} <= set(findings.columns) and len(findings) > 5
    assert "Worst finding" in texts(at)
    copy = tmp_path / "run"  # a run with the audit ``deeppcos demo`` writes beside it
    shutil.copytree(dashboard_run, copy)
    stored = {"worst_severity": "high", "counts": {"high": 1}, "findings": [
        {"check": "exact.bytes", "severity": "high", "title": "Byte-identical copies",
         "detail": "3 images in 1 cluster", "figures": {}}]}  # fmt: skip
    (tmp_path / "audit.json").write_text(json.dumps(stored))
    at = app(copy)
    assert f"from {tmp_path / 'audit.json'}" in texts(at)
    assert at.dataframe[0].value["finding"].tolist() == ["Byte-identical copies"]
    assert not at.get("button") or all(b.key != "run_audit" for b in at.button)


@pytest.mark.slow
@pytest.mark.realdata
def test_every_page_on_a_kaggle_table_run(app: Any, shared_data: Path, tmp_path: Path) -> None:
    """The real Kaggle table (tabular only, criteria-derived severity): every page, no error."""
    from deeppcos.config import load_config
    from deeppcos.pipeline.evaluate import evaluate_run
    from deeppcos.pipeline.training import train

    run = train(load_config(REPO / "configs" / "pcos-kaggle-tabular.yaml"), tmp_path / "run")
    evaluate_run(run)
    at = app(run)
    for name in PAGES:
        page(at, name)
        no_exception(at)
        assert not at.error, (name, [e.value for e in at.error])
    page(at, "patient")
    assert {m.label: m.value for m in at.metric}["Modalities used"] == "tabular"
    page(at, "predict")
    assert not _uploaders(at, "predict_images")
    at.number_input(key="lab-amh_ng_ml").set_value(9.5).run()
    at.button(key="predict_go").click().run()
    assert {m.label: m.value for m in at.metric}["Modalities used"] == "tabular"
