"""``deeppcos predict`` reads new patients the way the run's cohort was read; severity from the
criteria labeller on the real Kaggle table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from deeppcos.cli import app
from deeppcos.config import load_config
from deeppcos.exceptions import DataFileError
from deeppcos.inference.scoring import images_manifest
from deeppcos.pipeline.training import train
from tests.conftest import read_metrics

runner = CliRunner()
KAGGLE = Path("pcos-kaggle-tabular")


def test_images_folder_layouts(tmp_path: Path) -> None:
    (tmp_path / "P1").mkdir()
    (tmp_path / "P1" / "left.png").write_bytes(b"x")
    (tmp_path / "P1" / "right.png").write_bytes(b"x")
    (tmp_path / "P2_scan3.jpg").write_bytes(b"x")
    (tmp_path / "P3.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    manifest = images_manifest(tmp_path)
    assert manifest.to_dict("records") == [
        {"patient_id": "P1", "path": "P1/left.png"},
        {"patient_id": "P1", "path": "P1/right.png"},
        {"patient_id": "P2", "path": "P2_scan3.jpg"},
        {"patient_id": "P3", "path": "P3.png"},
    ]
    (tmp_path / "P4" / "deep").mkdir(parents=True)
    (tmp_path / "P4" / "deep" / "x.png").write_bytes(b"x")
    with pytest.raises(DataFileError, match="nested too deep"):
        images_manifest(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataFileError, match="no image files found"):
        images_manifest(tmp_path / "empty")


@pytest.fixture(scope="module")
def kaggle_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tabular run on the real Kaggle table, severity derived by the criteria labeller."""
    folder = tmp_path_factory.mktemp("kaggle")
    config = yaml.safe_load((Path("configs") / "pcos-kaggle-tabular.yaml").read_text())
    base = (Path("configs").resolve()).as_posix()
    config["cohort"]["patients"]["path"] = f"{base}/{config['cohort']['patients']['path']}"
    config["cohort"]["options"]["infertility_csv"] = (
        f"{base}/{config['cohort']['options']['infertility_csv']}"
    )
    config["split"]["n_folds"] = 3
    config["tabular"]["params"]["n_estimators"] = 80
    config["severity"] = {"source": "criteria", "params": {"n_estimators": 40}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return train(load_config(path), folder / "run")


@pytest.mark.realdata
def test_criteria_severity_on_the_kaggle_table(kaggle_run: Path) -> None:
    severity = read_metrics(kaggle_run)["severity"]
    assert severity["source"] == "criteria" and severity["guideline"] == "rotterdam-2003"
    # The columns the rules read never reach the head (it would relearn the rule).
    read = {"cycle_irregular", "hair_growth", "follicle_count_left", "follicle_count_right"}
    assert read <= set(severity["excluded_inputs"])
    assert not read & set(severity["inputs"])
    assert "follicle_count_max" not in severity["inputs"]  # derived from them
    # The reference's proxy counts on this table (2003 rules).
    agreement = severity["criteria"]["label_agreement"]
    assert agreement["label_1_fewer_than_2_met"] == 80
    assert agreement["label_0_2_or_more_met"] == 16
    assert (
        severity["oof"]["n"]
        == severity["graded_patients"]
        - read_metrics(kaggle_run)["test_patients"]
        + severity["oof"]["excluded"]
        or severity["oof"]["n"] > 200
    )


@pytest.mark.realdata
def test_predict_reads_the_raw_kaggle_layout(
    kaggle_run: Path, shared_data: Path, tmp_path: Path
) -> None:
    from deeppcos.data.tables import read_table

    sheet = shared_data / KAGGLE / "PCOS_data_without_infertility.xlsx"
    raw = read_table(sheet, "Full_new").head(6).drop(columns=["PCOS (Y/N)"])
    raw.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "pred.csv"
    args = ["predict", str(kaggle_run), "--patients", str(tmp_path / "new.csv"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(out)
    assert len(predictions) == 6 and predictions["risk"].between(0, 1).all()
    assert set(predictions["severity"]) <= {"none", "mild", "moderate", "severe"}
    # The same rows scored inside the training cohort give the same risk.
    import deeppcos

    predictor = deeppcos.load_run(kaggle_run)
    cohort = predictor.cohort()
    ids = predictions["patient_id"].astype(str).tolist()
    same = predictor.predict(cohort, ids)
    assert same["risk"].round(10).tolist() == predictions["risk"].round(10).tolist()

    raw.drop(columns=["AMH(ng/mL)"]).to_csv(tmp_path / "short.csv", index=False)
    args[3] = str(tmp_path / "short.csv")
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "AMH(ng/mL)" in result.output


def test_criteria_command_counts(tmp_path: Path) -> None:
    runner.invoke(app, ["synth", str(tmp_path / "c"), "--patients", "40", "--image-size", "32"])
    result = runner.invoke(
        app, ["criteria", str(tmp_path / "c" / "cohort.yaml"), "--json", str(tmp_path / "c.json")]
    )
    assert result.exit_code == 0, result.output
    counts = json.loads((tmp_path / "c.json").read_text())
    assert counts["n_patients"] == 40 and "ovulatory_dysfunction" in counts["criteria"]
    bad = runner.invoke(app, ["criteria", str(tmp_path / "c" / "cohort.yaml"), "--guideline", "x"])
    assert bad.exit_code == 2
