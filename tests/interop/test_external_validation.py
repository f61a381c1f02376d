"""External validation: a run scored on another cohort read with its own spec."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from deeppcos.cli import app
from deeppcos.evaluation.external import external_validation, net_benefit
from deeppcos.exceptions import SchemaError


@pytest.fixture(scope="module")
def other_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another synthetic cohort (other seed), read through a spec that drops AMH, one of the
    model's inputs, and keeps only the older half of the women: another case mix."""
    from deeppcos.data.synthetic import generate_cohort

    folder = tmp_path_factory.mktemp("external")
    generate_cohort(folder / "cohort", n_patients=160, seed=9, image_size=32)
    table = pd.read_csv(folder / "cohort" / "patients.csv")
    older = table[table["age_years"] >= table["age_years"].median()]
    older.to_csv(folder / "older.csv", index=False)
    spec = {
        "name": "older women",
        "patients": {
            "path": str(folder / "older.csv"),
            "label_column": "pcos",
            "drop_columns": ["amh_ng_ml", "severity", "site"],
        },
    }
    path = folder / "older.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def run_copy(tabular_run: Path, tmp_path: Path) -> Path:
    """The session's tiny run, copied (its model card is written to), with a model card."""
    copy = tmp_path / "run"
    shutil.copytree(tabular_run, copy)
    (copy / "evaluation").mkdir(exist_ok=True)
    (copy / "evaluation" / "model_card.md").write_text("# Model card\n\nInternal figures.\n")
    return copy


def test_the_report_covers_discrimination_calibration_decision_and_case_mix(
    run_copy: Path, other_cohort: Path
) -> None:
    result = external_validation(run_copy, other_cohort)
    at = result["at_run_threshold"]
    low, high = at["roc_auc"]["ci"]
    assert low <= at["roc_auc"]["value"] <= high and at["roc_auc"]["value"] > 0.6
    calibration = result["calibration"]
    for key in ("in_the_large", "slope"):
        entry = calibration[key]
        assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
    assert 0 < result["threshold_for_target_sensitivity"]["threshold_here"] < 1
    mix = result["case_mix"]
    assert mix["absent_inputs"] == ["amh_ng_ml"]
    rows = {row["feature"]: row for row in mix["table"]}
    assert rows["amh_ng_ml"]["absent_here"] and rows["amh_ng_ml"]["external_missing"] == 1.0
    assert rows["age_years"]["standardised_difference"] > 0.5  # the older half
    assert "age_years" in mix["large_shifts"]
    folder = run_copy / "external" / "older-women"
    for name in (
        "metrics.json",
        "predictions.csv",
        "roc.png",
        "reliability.png",
        "decision_curve.png",
        "case_mix.csv",
        "model_card.md",
    ):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "metrics.json").read_text())["cohort"] == "older women"


def test_the_model_card_gets_one_section_per_cohort(run_copy: Path, other_cohort: Path) -> None:
    external_validation(run_copy, other_cohort, check_contamination=False)
    external_validation(run_copy, other_cohort, check_contamination=False)  # again: replaced
    card = (run_copy / "evaluation" / "model_card.md").read_text()
    assert card.startswith("# Model card") and "Internal figures." in card
    assert card.count("## External validation: older women") == 1


def test_net_benefit_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0])
    risk = np.array([0.9, 0.2, 0.6, 0.1, 0.05])
    table = net_benefit(y, risk, np.array([0.5]))
    # At 50%: called 0.9 (TP) and 0.6 (FP): 1/5 − 1/5 × 1 = 0; everyone: 2/5 − 3/5 = −0.2.
    assert table.loc[0, "model"] == pytest.approx(0.0)
    assert table.loc[0, "treat_all"] == pytest.approx(-0.2)
    assert table.loc[0, "treat_none"] == 0


def test_an_unlabelled_cohort_is_refused(tabular_run: Path, other_cohort: Path, tmp_path) -> None:
    spec = yaml.safe_load(other_cohort.read_text())
    spec["patients"]["label_column"] = None
    spec["patients"]["drop_columns"].append("pcos")
    path = tmp_path / "unlabelled.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SchemaError, match="no labels"):
        external_validation(tabular_run, path, tmp_path / "out")


def test_the_cli_prints_the_figures(run_copy: Path, other_cohort: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(run_copy), "--cohort", str(other_cohort)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps at 80 columns
    for words in ("ROC AUC", "calibration slope", "inputs absent here: amh_ng_ml", "report:"):
        assert words in text
