"""``deeppcos predict`` with --fhir and --chunk-size, and ``deeppcos serve``'s refusal paths."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from deeppcos.cli import app
from tests.conftest import REPO

runner = CliRunner()
FHIR_EXAMPLE = REPO / "tests" / "data" / "fhir" / "two_patients.json"


def test_predict_from_a_fhir_bundle(tabular_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "fhir.csv"
    result = runner.invoke(
        app, ["predict", str(tabular_run), "--fhir", str(FHIR_EXAMPLE), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(out)
    assert list(predictions["patient_id"]) == ["p1", "p2"]
    assert predictions["risk"].between(0, 1).all() and set(predictions["modalities"]) == {"tabular"}
    assert "2 patients scored" in result.output
    assert "2243-4" in result.output  # the unknown code is in the printed load report


def test_predict_fhir_window_and_malformed_bundle(tabular_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "fhir.csv"
    args = ["predict", str(tabular_run), "--fhir", str(FHIR_EXAMPLE), "--out", str(out)]
    assert runner.invoke(app, [*args, "--fhir-window-days", "30"]).exit_code == 0
    bundle = json.loads(FHIR_EXAMPLE.read_text())
    bundle["entry"][3]["resource"]["effectiveDateTime"] = "10/01/2023"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(bundle))
    result = runner.invoke(
        app, ["predict", str(tabular_run), "--fhir", str(broken), "--out", str(out)]
    )
    assert result.exit_code == 1
    assert (
        "entry[3].resource.effectiveDateTime" in result.output and "Traceback" not in result.output
    )


def test_predict_in_chunks(tabular_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "chunked.parquet"
    patients = tabular_run.parent / "cohort" / "patients.csv"
    args = ["predict", str(tabular_run), "--patients", str(patients), "--out", str(out)]
    result = runner.invoke(app, [*args, "--chunk-size", "25"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(out)) == len(pd.read_csv(patients))
    assert "in 3 chunks on 1 worker(s)" in result.output
    assert (tmp_path / "chunked.report.csv").is_file()


def test_predict_usage_errors_exit_2(tabular_run: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "x.parquet")
    both = ["predict", str(tabular_run), "--fhir", str(FHIR_EXAMPLE), "--patients", "p.csv"]
    assert runner.invoke(app, [*both, "--out", out]).exit_code == 2
    fhir_chunks = ["predict", str(tabular_run), "--fhir", str(FHIR_EXAMPLE), "--chunk-size", "5"]
    assert runner.invoke(app, [*fhir_chunks, "--out", out]).exit_code == 2
