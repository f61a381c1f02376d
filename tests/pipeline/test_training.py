"""``deeppcos train``: grouped CV, out-of-fold predictions, run folder round trip, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from deeppcos.cli import app
from deeppcos.config import load_config
from deeppcos.pipeline.training import train
from deeppcos.runs.folder import read_run_record
from tests.conftest import read_metrics

runner = CliRunner()


def _config(
    tmp_path: Path, image: bool, patients: int = 80, fusion: str = "best", **image_params
) -> Path:
    config = {
        "name": "tiny",
        "seed": 3,
        "synthetic": {
            "patients": patients,
            "seed": 1,
            "image_size": 48,
            "folder": str(tmp_path / "cohort"),
        },
        "split": {"n_folds": 3, "test_fraction": 0.2},
        "fusion": {"method": fusion, "intermediate": {"n_components": 4, "n_estimators": 60}},
        "tabular": {"enabled": True, "params": {"n_estimators": 60}},
        "image": {
            "enabled": image,
            "params": {
                "backbone": "compact",
                "image_size": 32,
                "epochs_head": 1,
                "max_epochs_compact": 2,
                **image_params,
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_tabular_run_folder_is_complete_and_reproducible(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, image=False))
    run = train(config, tmp_path / "run1")
    record = read_run_record(run)
    assert record["status"] == "complete" and record["branches"] == ["tabular"]
    metrics = read_metrics(run)
    tab = metrics["branches"]["tabular"]["oof"]
    assert tab["roc_auc"] > 0.7 and len(tab["roc_auc_ci"]) == 2
    oof = pd.read_csv(run / "oof_predictions.csv")
    split = json.loads((run / "split.json").read_text())["assignments"]
    # Out-of-fold only: development patients, each once, none from the locked test part.
    assert oof["patient_id"].is_unique
    assert set(oof["patient_id"]) == {p for p, part in split.items() if part.startswith("fold")}
    assert not set(oof["patient_id"]) & {p for p, part in split.items() if part == "test"}
    assert (run / "tabular" / "model.ubj").is_file() and (run / "curves" / "tabular.png").is_file()
    assert not list(run.rglob("*.pkl"))
    again = train(config, tmp_path / "run2")
    assert read_metrics(again)["branches"]["tabular"]["oof"] == tab


def test_saved_tabular_model_reloads_with_the_same_predictions(tmp_path: Path) -> None:
    from deeppcos.pipeline.training import cohort_for
    from deeppcos.tabular.branch import TabularBranch

    config = load_config(_config(tmp_path, image=False))
    run = train(config, tmp_path / "run")
    model = TabularBranch.load(run / "tabular")
    cohort = cohort_for(config)
    ids = cohort.patients["patient_id"].tolist()
    first = model.predict_proba(cohort, ids)
    assert first.dropna().between(0, 1).all()
    pd.testing.assert_series_equal(
        first, TabularBranch.load(run / "tabular").predict_proba(cohort, ids)
    )


def test_cli_train_refuses_to_overwrite_and_reports_bad_params(tmp_path: Path) -> None:
    config = _config(tmp_path, image=False)
    out = tmp_path / "run"
    assert runner.invoke(app, ["train", "--config", str(config), "--out", str(out)]).exit_code == 0
    again = runner.invoke(app, ["train", "--config", str(config), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    bad = yaml.safe_load(config.read_text())
    bad["tabular"]["params"]["max_depht"] = 3
    config.write_text(yaml.safe_dump(bad))
    result = runner.invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 1 and "tabular.params: unknown setting 'max_depht'" in result.output


@pytest.mark.slow
def test_image_and_tabular_run(tmp_path: Path) -> None:
    import deeppcos

    config = load_config(_config(tmp_path, image=True, patients=60, fusion="intermediate"))
    run = train(config, tmp_path / "run")
    metrics = read_metrics(run)
    assert set(metrics["branches"]) == {"tabular", "image"}
    assert (run / "image" / "model.keras").is_file()
    embeddings = pd.read_parquet(run / "oof_embeddings.parquet")
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert set(embeddings["patient_id"]) == set(oof["patient_id"])
    # Intermediate fusion as the config asks (``best`` runs both: see the demo test).
    fusion = metrics["fusion"]
    assert set(fusion["methods"]) == {"intermediate"} and fusion["method"] == "intermediate"
    assert (run / "fusion" / "model.ubj").is_file()
    predictor = deeppcos.load_run(run)
    assert predictor.fusion_method == "intermediate"
    cohort = predictor.cohort()
    predictions = predictor.predict(cohort)
    assert predictions["risk"].notna().sum() > 0 and "severity" in predictions

    # New patients' images as a folder of <patient_id>_<n>.png files; labs for half of them.
    images = pd.read_csv(tmp_path / "cohort" / "images.csv").head(12)
    folder = tmp_path / "new_images"
    folder.mkdir()
    for i, row in enumerate(images.itertuples()):
        (folder / f"{row.patient_id}_{i}.png").write_bytes(
            (tmp_path / "cohort" / row.path).read_bytes()
        )
    patients = pd.read_csv(tmp_path / "cohort" / "patients.csv")
    patients = patients[patients["patient_id"].isin(images["patient_id"])].drop(columns="pcos")
    features = [c for c in patients.columns if c not in ("patient_id", "site", "severity")]
    patients.loc[patients.index[::2], features] = None  # images only for these
    patients.to_csv(tmp_path / "labs.csv", index=False)
    out = tmp_path / "pred.csv"
    result = runner.invoke(
        app,
        [
            "predict",
            str(run),
            "--patients",
            str(tmp_path / "labs.csv"),
            "--images",
            str(folder),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out)
    assert set(scored["modalities"]) <= {"tabular+image", "tabular", "image"}
    assert scored["p_image"].notna().all()


def test_fusion_evaluate_and_predict_round_trip(tmp_path: Path) -> None:
    """Calibrated fusion in the run; the locked test part scored once; predict on new rows."""
    import deeppcos
    from deeppcos.pipeline.evaluate import evaluate_run

    config = _config(tmp_path, image=False, patients=120)
    run = train(load_config(config), tmp_path / "run")
    fusion = read_metrics(run)["fusion"]
    assert fusion["decision"]["target_sensitivity"] == 0.95
    assert fusion["oof_at_threshold"]["sensitivity"]["value"] >= 0.95  # chosen on these rows
    result = evaluate_run(run)
    split = json.loads((run / "split.json").read_text())["assignments"]
    assert result["test_patients"] == sum(part == "test" for part in split.values())
    # The reported sensitivity is the share of test patients with the label whose risk reached
    # the run's threshold, and its interval holds it.
    test = pd.read_csv(run / "evaluation" / "test_predictions.csv")
    positives = test[test["label"] == 1]
    expected = float((positives["risk"] >= result["threshold"]).mean())
    sensitivity = result["fusion"]["sensitivity"]
    assert sensitivity["value"] == pytest.approx(expected)
    assert (test["decision"] == (test["risk"] >= result["threshold"])).all()
    low, high = sensitivity["ci"]
    assert low <= sensitivity["value"] <= high
    assert set(result["calibration_ece"]) == {"before", "after"}
    for name in ("model_card.md", "roc.png", "calibration.png", "test_predictions.csv"):
        assert (run / "evaluation" / name).is_file()
    assert "decision support, not a diagnosis" in (run / "evaluation" / "model_card.md").read_text()
    assert result["rescored"] is False  # the first evaluation is not a re-score
    assert evaluate_run(run)["rescored"] is False  # stored, not scored again
    assert evaluate_run(run, force=True)["rescored"] is True

    # New patients: the same table without labels, one with every value missing.
    patients = pd.read_csv(tmp_path / "cohort" / "patients.csv").drop(columns=["pcos", "severity"])
    features = [c for c in patients.columns if c not in ("patient_id", "site")]
    patients.loc[0, features] = None
    patients.head(10).to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "pred.csv"
    result = runner.invoke(
        app, ["predict", str(run), "--patients", str(tmp_path / "new.csv"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(out)
    assert list(predictions.columns[:2]) == ["patient_id", "p_tabular"]
    assert predictions.loc[0, "modalities"] == "none" and pd.isna(predictions.loc[0, "risk"])
    has_labs = patients.head(10)[features].notna().any(axis=1).to_numpy()
    assert (predictions["modalities"] == "tabular").to_numpy().tolist() == has_labs.tolist()
    direct = deeppcos.load_run(run).predict(deeppcos.load_run(run).cohort())
    assert direct["risk"].dropna().between(0, 1).all()

    # Severity: trained on the synthetic cohort's own grades, scored on the test part.
    severity = read_metrics(run)["severity"]
    assert severity["source"] == "column" and severity["levels"][0] == "none"
    assert -1 <= severity["oof"]["quadratic_kappa"]["value"] <= 1
    assert set(predictions["severity"].dropna()) <= set(severity["levels"])
    assert pd.isna(predictions.loc[0, "severity"])  # no inputs, no grade
    probabilities = predictions.filter(like="p_severity_").dropna()
    assert len(probabilities.columns) == 4 and np.allclose(probabilities.sum(axis=1), 1)
    # One coherent output: graded only when flagged, and P(none) is 1 − risk.
    scored = predictions["risk"].notna()
    flagged = predictions["decision"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    assert ((predictions["severity"] == "none") == ~flagged)[scored].all()
    np.testing.assert_allclose(
        predictions.loc[scored, "p_severity_none"], 1 - predictions.loc[scored, "risk"]
    )
    assert severity["presence_agreement"]["contradictions"] == 0
    assert severity["head_levels"] == ["mild", "moderate", "severe"]
    tested = evaluate_run(run)["severity"]
    assert tested["n"] > 0 and len(tested["quadratic_kappa"]["ci"]) == 2
    assert tested["presence_agreement"]["contradictions"] == 0
    card = (run / "evaluation" / "model_card.md").read_text()
    assert "Severity grade" in card and "never disagree" in card
    assert "| Tabular branch | XGBoost" in card and "guideline rotterdam-2003" in card


def test_a_group_whose_labels_ignore_its_images_is_set_aside_and_reported(tmp_path: Path) -> None:
    """``split.label_noise: exclude``: ten patients' images are one picture (a video labelled
    frame by frame), five patients labelled each way; the split sets them aside, the load
    report lists each, and neither the folds nor the locked test part hold them."""
    import cv2

    from deeppcos.data.configured import cohort_for

    path = _config(tmp_path, image=False)
    data = yaml.safe_load(path.read_text())
    data["split"]["label_noise"] = "exclude"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    cohort = cohort_for(config)  # generates the synthetic cohort
    labelled = cohort.patients.set_index("patient_id")["label"].astype(int)
    chosen = [*labelled[labelled == 1].index[:5], *labelled[labelled == 0].index[:5]]
    paths = cohort.images[cohort.images["patient_id"].isin(chosen)]["path"].tolist()
    picture = cv2.imread(paths[0], cv2.IMREAD_UNCHANGED)
    for k, path in enumerate(paths[1:]):  # every image of the ten: one picture, near-copies
        copy = picture.copy()  # (a byte-identical copy would be an exact conflicting copy)
        copy[0, 0] = k
        cv2.imwrite(path, copy)
    run = train(config, tmp_path / "run")

    split = json.loads((run / "split.json").read_text())
    aside = sorted(p for p, part in split["assignments"].items() if part == "label_noise")
    assert aside == sorted(chosen)
    (record,) = split["label_noise"]
    # Two images each: 190 pairs of the 20 images, less the 10 of one patient's own two.
    assert len(paths) == 20 and record["patients"] == 10 and record["near_copy_pairs"] == 180
    assert record["label_consistency"] < 0
    report = pd.read_csv(run / "load_report.csv")
    noted = report[report["action"] == "label_noise"]
    assert sorted(noted["row"].astype(str)) == sorted(chosen)
    assert (noted["level"] == "excluded").all()
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert not set(chosen) & set(oof["patient_id"].astype(str))
    metrics = read_metrics(run)
    assert metrics["label_noise"]["patients_set_aside"] == 10
    assert metrics["development_patients"] + metrics["test_patients"] == 80 - 10
    # Her explanation says so: no recorded label to check the score against.
    from deeppcos.explain.patient import explain_patient
    from deeppcos.inference.predictor import load_run

    explanation = explain_patient(load_run(run), chosen[0], saliency=None)
    assert explanation.in_training_data == "label_noise"
    assert any("set aside by the run's split as label noise" in c for c in explanation.caveats)
