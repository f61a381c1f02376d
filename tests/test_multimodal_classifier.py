"""``deeppcos.MultimodalClassifier``: the whole model fitted in memory, scikit-learn style;
``deeppcos train`` is its fit then save, so both give the same run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import deeppcos
from deeppcos.config import load_config
from deeppcos.data import Cohort, load_cohort
from deeppcos.data.synthetic import generate_cohort
from deeppcos.exceptions import NotFittedError
from deeppcos.pipeline.training import cohort_for, train

SECTIONS = {
    "seed": 3,
    "split": {"n_folds": 3, "test_fraction": 0.2},
    "tabular": {"enabled": True, "params": {"n_estimators": 40}},
    "image": {"enabled": False},
}


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mm_cohort")
    generate_cohort(folder, n_patients=90, seed=1, image_size=32)
    return folder


@pytest.fixture(scope="module")
def fitted(cohort_dir: Path) -> deeppcos.MultimodalClassifier:
    cohort = load_cohort(cohort_dir / "cohort.yaml")
    return deeppcos.MultimodalClassifier({"name": "mm", **SECTIONS}).fit(cohort)


def test_fit_predict_and_the_outputs_agree(fitted, cohort_dir: Path) -> None:
    cohort = load_cohort(cohort_dir / "cohort.yaml")
    frame = fitted.predict_frame(cohort)
    proba = fitted.predict_proba(cohort)
    assert proba.shape == (90, 2)
    np.testing.assert_allclose(proba[:, 1], frame["risk"].to_numpy())
    # A tabular-only model cannot score the synthetic cohort's patients without labs: NaN.
    scored = ~np.isnan(proba[:, 1])
    assert 0 < (~scored).sum() < 10
    np.testing.assert_allclose(proba[scored].sum(axis=1), 1.0)
    decision = fitted.predict(cohort)
    assert decision.isna().tolist() == (~scored).tolist()
    flagged = np.asarray(decision[scored], dtype=bool)
    np.testing.assert_array_equal(flagged, proba[scored, 1] >= fitted.threshold_)
    grades = fitted.predict_severity(cohort)[scored]
    lowest = frame.columns[frame.columns.str.startswith("p_severity_")][0].removeprefix(
        "p_severity_"
    )
    assert ((grades == lowest).to_numpy() == ~flagged).all()  # a grade only when flagged
    assert fitted.metrics_.branches["tabular"].oof.roc_auc > 0.6  # 90 patients
    assert fitted.fusion_method_ == "late" and fitted.branches_ == ["tabular"]
    assert fitted.run_ is None


def test_new_patients_from_data_frames(fitted, cohort_dir: Path) -> None:
    table = pd.read_csv(cohort_dir / "patients.csv").head(5).drop(columns=["pcos", "severity"])
    new = Cohort.from_frames(table, spec={"name": "new", "patients": {"label_column": None}})
    risk = fitted.predict_proba(new)[:, 1]
    own = fitted.predict_frame(load_cohort(cohort_dir / "cohort.yaml"), list(table["patient_id"]))
    np.testing.assert_allclose(risk, own["risk"].to_numpy())


def test_explain_one_patient_in_memory(fitted, cohort_dir: Path) -> None:
    cohort = load_cohort(cohort_dir / "cohort.yaml")
    patient = str(cohort.patients["patient_id"].iloc[0])
    explanation = fitted.explain(cohort, patient)
    data = explanation.to_dict()
    assert data["patient_id"] == patient
    assert data["prediction"]["risk"] == pytest.approx(fitted.predict_proba(cohort)[0, 1])
    assert "not saved" in data["run"]
    assert explanation.in_training_data in ("development", "test")


def test_train_is_fit_then_save(fitted, cohort_dir: Path, tmp_path: Path) -> None:
    config = {"name": "mm", **SECTIONS, "cohort_spec": str(cohort_dir / "cohort.yaml")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    trained = train(load_config(path), tmp_path / "trained")
    model = deeppcos.MultimodalClassifier(load_config(path)).fit(cohort_for(load_config(path)))
    saved = model.save(tmp_path / "saved")
    assert model.run_ == saved
    for name in ("metrics.json", "split.json", "fusion/decision.json", "severity/severity.json"):
        assert json.loads((trained / name).read_text()) == json.loads((saved / name).read_text())
    pd.testing.assert_frame_equal(
        pd.read_csv(trained / "oof_predictions.csv"), pd.read_csv(saved / "oof_predictions.csv")
    )
    cohort = load_cohort(cohort_dir / "cohort.yaml")
    loaded = deeppcos.MultimodalClassifier.load(saved)
    np.testing.assert_allclose(loaded.predict_proba(cohort), model.predict_proba(cohort))
    np.testing.assert_allclose(
        deeppcos.load_run(trained).predict(cohort)["risk"], loaded.predict_proba(cohort)[:, 1]
    )
    with pytest.raises(Exception, match="already a run folder"):
        loaded.save(tmp_path / "again")


def test_unfitted_and_bad_config_say_what_to_do(cohort_dir: Path) -> None:
    cohort = load_cohort(cohort_dir / "cohort.yaml")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        deeppcos.MultimodalClassifier().predict_proba(cohort)
    with pytest.raises(Exception, match="max_depht"):
        deeppcos.MultimodalClassifier({"tabular": {"params": {"max_depht": 3}}}).fit(cohort)


def test_the_readme_notebook_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    """The README's notebook example, as written, on a small synthetic cohort."""
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- readme-example: multimodal -->\n```python\n(.*?)```", readme, re.S)
    assert block is not None, "the README lost its MultimodalClassifier example"
    generate_cohort(tmp_path / "demo" / "cohort", n_patients=80, seed=0, image_size=32)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {})  # our own README, as written
    out = capsys.readouterr().out
    assert re.search(r"out of fold: 0\.\d+\nlocked test: 0\.\d+", out)
    assert "Explanation of a PCOS risk prediction" in (tmp_path / "patient.html").read_text()
    assert (tmp_path / "runs" / "notebook" / "run.json").is_file()
