"""The command line: fast help, exit codes scripts rely on, messages instead of tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from deeppcos.cli import app
from tests.conftest import REPO

runner = CliRunner()


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from deeppcos.cli import app; "
        "heavy = [m for m in ('tensorflow', 'keras', 'shap', 'pandas', 'sklearn', 'cv2', "
        "'xgboost', 'optuna', 'streamlit') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "validate", "audit", "demo"):
        assert command in result.output


def _tiny_cohort(tmp_path: Path, bad_cell: bool = False) -> Path:
    lh = ["12", "oops" if bad_cell else "5", "6"]
    pd.DataFrame({"patient_id": ["a", "b", "c"], "pcos": [1, 0, 0], "lh_iu_l": lh}).to_csv(
        tmp_path / "patients.csv", index=False
    )
    spec = tmp_path / "cohort.yaml"
    spec.write_text("name: tiny\npatients: {path: patients.csv, label_column: pcos}\n")
    return spec


def test_validate_prints_counts_and_writes_json(tmp_path: Path) -> None:
    spec = _tiny_cohort(tmp_path)
    result = runner.invoke(app, ["validate", str(spec), "--json", str(tmp_path / "v.json")])
    assert result.exit_code == 0, result.output
    assert "patients" in result.output and "0: 2, 1: 1" in result.output
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["summary"]["patients"] == 3


def test_validate_strict_exits_3_on_warnings(tmp_path: Path) -> None:
    spec = _tiny_cohort(tmp_path, bad_cell=True)
    assert runner.invoke(app, ["validate", str(spec)]).exit_code == 0
    result = runner.invoke(app, ["validate", str(spec), "--strict"])
    assert result.exit_code == 3
    assert "row 2, column 'lh_iu_l'" in result.output and "'oops'" in result.output


def test_bad_input_exits_1_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    spec = _tiny_cohort(tmp_path)
    (tmp_path / "patients.csv").write_text("patient_id,pcos\na,1\na,0\n")
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 1
    assert "ids repeat" in result.output and "Traceback" not in result.output
    missing = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "spec file not found" in missing.output


def test_validate_real_kaggle_table(shared_data) -> None:
    result = runner.invoke(app, ["validate", str(REPO / "configs" / "pcos-kaggle-tabular.yaml")])
    assert result.exit_code == 0
    assert "541" in result.output and "0: 364, 1: 177" in result.output


def test_synth_then_audit_writes_reports_and_honours_fail_on(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    result = runner.invoke(app, ["synth", str(out), "-n", "40", "--image-size", "64"])
    assert result.exit_code == 0, result.output
    assert (out / "cohort.yaml").is_file() and (out / "images").is_dir()
    spec = str(out / "cohort.yaml")
    html, js = tmp_path / "a.html", tmp_path / "a.json"
    result = runner.invoke(app, ["audit", spec, "--html", str(html), "--json", str(js)])
    assert result.exit_code == 0, result.output
    assert "Verdicts" in html.read_text() and json.loads(js.read_text())["findings"]
    # Plant an exact duplicate across two patients: 'high' now, so --fail-on high exits 4.
    images = sorted((out / "images").glob("*.png"))
    other = next(i for i in images if i.name[:9] != images[0].name[:9])  # another patient
    other.write_bytes(images[0].read_bytes())
    result = runner.invoke(app, ["audit", spec, "--fail-on", "high"])
    assert result.exit_code == 4
    assert "byte-identical" in result.output


def test_audit_rejects_an_unknown_fail_on(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", str(_tiny_cohort(tmp_path)), "--fail-on", "always"])
    assert result.exit_code == 2


def test_demo_cohort_and_audit(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--patients", "60", "--skip-training"])
    assert result.exit_code == 0, result.output
    for name in ("audit.html", "audit.json", "cohort/cohort.yaml"):
        assert (out / name).is_file()
    assert not (out / "run").exists()


@pytest.mark.slow
def test_demo_trains_and_evaluates(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--patients", "80"])
    assert result.exit_code == 0, result.output
    assert (out / "run" / "run.json").is_file()
    assert (out / "run" / "evaluation" / "model_card.md").is_file()
    assert "locked test part" in result.output
    # Both fusion methods cross-validated, the higher out-of-fold AUC kept; severity graded.
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    methods = metrics["fusion"]["methods"]
    assert set(methods) == {"late", "intermediate"}
    auc = {m: methods[m]["oof_uncalibrated"]["roc_auc"] for m in methods}
    assert metrics["fusion"]["method"] == max(auc, key=auc.get)
    assert "quadratic_kappa" in metrics["severity"]["oof"]
    assert "severity grade" in result.output
