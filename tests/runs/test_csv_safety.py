"""CSV outputs never carry a live spreadsheet formula (OWASP CSV injection), numbers stay numbers,
and ``train`` prints the cohort's load-report summary."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from deeppcos.cli import app
from tests.conftest import write_tabular_config

runner = CliRunner()

# Cells a spreadsheet would run as a formula (OWASP): these first characters, unless the whole
# cell is a plain number (a negative number is a number, not a formula).
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
HYPERLINK = '=HYPERLINK("http://x")'


def live_formulas(path: Path) -> list[tuple[int, int, str]]:
    """(line, column, cell) of every cell of ``path`` a spreadsheet would evaluate."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            (line, column, cell)
            for line, row in enumerate(csv.reader(handle), start=1)
            for column, cell in enumerate(row)
            if cell[:1] in TRIGGERS and not NUMBER.fullmatch(cell)
        ]


def cells(path: Path) -> set[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {cell for row in csv.reader(handle) for cell in row}


def _cohort(folder: Path, ids: dict[int, str] | None = None) -> Path:
    """A tables cohort from the synthetic generator with formula text in cells that the load
    report quotes (and optionally in patient ids); returns the run config."""
    from deeppcos.data.synthetic import generate_cohort

    generate_cohort(folder / "synthetic", n_patients=70, seed=1, image_size=32)
    table = pd.read_csv(folder / "synthetic" / "patients.csv", dtype=str)
    table.loc[0, "lh_iu_l"] = HYPERLINK
    table.loc[1, "fsh_iu_l"] = "+cmd"
    table.loc[2, "amh_ng_ml"] = "@SUM(1)"
    table.loc[3, "lh_iu_l"] = "-5"  # out of range: reported, and must stay a number
    table.loc[4, "tsh_miu_l"] = "\tx"
    table["=evil()"] = "1"  # an unknown column: its name is reported
    for row, pid in (ids or {}).items():
        table.loc[row, "patient_id"] = pid
    table.to_csv(folder / "patients.csv", index=False)
    spec = {
        "name": "formulas",
        "format": "tables",
        "patients": {
            "path": "patients.csv",
            "label_column": "pcos",
            "severity_column": "severity",
            "severity_levels": ["none", "mild", "moderate", "severe"],
            "group_column": "site",
        },
    }
    (folder / "cohort.yaml").write_text(yaml.safe_dump(spec))
    return write_tabular_config(folder, folder / "cohort.yaml", "formulas", seed=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(run folder, what ``deeppcos train`` printed) for the formula cohort."""
    folder = tmp_path_factory.mktemp("formulas")
    config = _cohort(folder)
    result = runner.invoke(app, ["train", "-c", str(config), "--out", str(folder / "run")])
    assert result.exit_code == 0, result.output
    return folder / "run", result.output


def test_train_prints_the_load_report_summary(trained: tuple[Path, str]) -> None:
    run, output = trained
    assert "load report (5 warnings, 1 info)" in output, output
    assert "4 unreadable values set to missing" in output
    assert "1 value outside its plausible range" in output
    assert str(run / "load_report.csv") in output


def test_run_csvs_hold_no_live_formula(trained: tuple[Path, str]) -> None:
    run, _ = trained
    assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0
    written = sorted(run.rglob("*.csv"))
    assert {p.name for p in written} >= {
        "load_report.csv",
        "oof_predictions.csv",
        "test_predictions.csv",
    }
    for path in written:
        assert live_formulas(path) == [], path
    report = cells(run / "load_report.csv")
    assert {"'" + HYPERLINK, "'+cmd", "'@SUM(1)", "'\tx", "'=evil()"} <= report
    assert "-5" in report  # a number, written as one
    # The run still reads back: evaluation joined predictions, labels and grades by id.
    assert len(pd.read_csv(run / "evaluation" / "test_predictions.csv")) == 14


def test_predict_and_batch_outputs_hold_no_live_formula(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    run, _ = trained
    table = pd.read_csv(run.parent / "patients.csv", dtype=str).head(8)
    table["patient_id"] = [HYPERLINK, "+cmd", "@SUM(1)", "-2+3", "@@x", "-7", "P7", "P8"]
    table.to_csv(tmp_path / "new.csv", index=False)
    base = ["predict", str(run), "--patients", str(tmp_path / "new.csv")]
    whole = runner.invoke(app, [*base, "--out", str(tmp_path / "p.csv")])
    assert whole.exit_code == 0, whole.output
    chunks = [*base, "--chunk-size", "3", "--out", str(tmp_path / "s.parquet")]
    batch = runner.invoke(app, chunks)
    assert batch.exit_code == 0, batch.output
    for path in (tmp_path / "p.csv", tmp_path / "s.report.csv"):
        assert live_formulas(path) == [], path
    ids = pd.read_csv(tmp_path / "p.csv", dtype=str, keep_default_na=False)["patient_id"]
    assert list(ids) == ["'" + HYPERLINK, "'+cmd", "'@SUM(1)", "'-2+3", "'@@x", "-7", "P7", "P8"]
    assert {"'" + HYPERLINK, "'+cmd"} <= cells(tmp_path / "s.report.csv")


def test_validate_and_criteria_csvs_hold_no_live_formula(tmp_path: Path) -> None:
    config = _cohort(tmp_path, ids={5: "@id", 6: "=1+1"})
    spec = str(config.parent / "cohort.yaml")
    report = tmp_path / "report.csv"
    assert runner.invoke(app, ["validate", spec, "--report-csv", str(report)]).exit_code == 0
    labels = tmp_path / "labels.csv"
    assert runner.invoke(app, ["criteria", spec, "--labels-csv", str(labels)]).exit_code == 0
    for path in (report, labels):
        assert live_formulas(path) == [], path
    assert {"'@id", "'=1+1"} <= cells(labels)


def test_train_refuses_formula_patient_ids(tmp_path: Path) -> None:
    config = _cohort(tmp_path, ids={7: HYPERLINK})
    result = runner.invoke(app, ["train", "-c", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert HYPERLINK in message and "formula" in message
    assert not (tmp_path / "run").exists()


def test_feedback_export_holds_no_live_formula(tmp_path: Path) -> None:
    from deeppcos.runs.feedback import FeedbackEntry, FeedbackLog

    log = FeedbackLog(tmp_path / "log.sqlite")
    log.append(FeedbackEntry("run", "P1", "@admin", False, "=cmd|' /C calc'!A0", 1, -0.5))
    log.to_csv(tmp_path / "feedback.csv")
    assert live_formulas(tmp_path / "feedback.csv") == []
    assert {"'@admin", "'=cmd|' /C calc'!A0", "-0.5"} <= cells(tmp_path / "feedback.csv")


def test_defuse_touches_text_only() -> None:
    from deeppcos.runs.csvsafe import csv_text, defuse

    frame = pd.DataFrame(
        {
            "text": ["=a", "-1.5", "-x", "ok", None, "'=b"],
            "mixed": [3, -2.5, "+1", "@x", "", "\rz"],
            "number": [-1.0, 2.0, -3.0, 4.0, 5.0, 6.0],
            "=name": pd.array(["+p", "q", None, "r", "s", "t"], dtype="string"),
            "grade": pd.Categorical(["-m", "n", "-m", "n", "n", "n"]),
        }
    )
    out = defuse(frame)
    assert list(out["text"].fillna("NA")) == ["'=a", "-1.5", "'-x", "ok", "NA", "'=b"]
    assert list(out["mixed"]) == [3, -2.5, "+1", "'@x", "", "'\rz"]
    assert out["number"].equals(frame["number"])
    assert list(out.columns) == ["text", "mixed", "number", "'=name", "grade"]
    assert list(out["'=name"].astype(object).fillna("NA")) == ["'+p", "q", "NA", "r", "s", "t"]
    assert list(out["grade"].astype(str)) == ["'-m", "n", "'-m", "n", "n", "n"]
    assert frame.loc[0, "text"] == "=a"  # the caller's frame is untouched
    assert csv_text(frame, index=False).splitlines()[1].startswith("'=a,")
