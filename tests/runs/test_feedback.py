"""Reviewers' feedback: an append-only log, and opt-in label corrections for training."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from deeppcos.cli import app
from deeppcos.exceptions import SchemaError
from deeppcos.runs.feedback import FeedbackEntry, FeedbackLog, feedback_path
from tests.conftest import read_metrics

runner = CliRunner()


def _entry(patient: str, agrees: bool, label: int | None = None, **kw) -> FeedbackEntry:
    reason = kw.pop("reason", "" if agrees else "labs and scan disagree with the model")
    return FeedbackEntry(
        run_id="run-1",
        patient_id=patient,
        user_name="dr who",
        agrees=agrees,
        reason=reason,
        corrected_label=label,
        **kw,
    )


def test_log_is_append_only_and_the_latest_correction_wins(tmp_path: Path) -> None:
    log = FeedbackLog(feedback_path(tmp_path / "run"))
    assert log.path == tmp_path / "run.feedback.sqlite"
    assert log.read().empty and log.label_corrections().empty
    log.append(_entry("P1", agrees=False, label=1, risk=0.2, decision=False))
    log.append(_entry("P2", agrees=False, label=0))
    log.append(_entry("P2", agrees=True))  # the reviewer withdrew the P2 correction
    log.append(_entry("P3", agrees=False, label=0))
    log.append(_entry("P3", agrees=False, label=1))
    entries = log.read()
    assert len(entries) == 5 and entries["user_name"].eq("dr who").all()
    assert entries["created_at"].str.endswith("+00:00").all()
    assert log.label_corrections().to_dict() == {"P1": 1, "P3": 1}
    with sqlite3.connect(log.path) as connection, pytest.raises(sqlite3.DatabaseError):
        connection.execute("UPDATE feedback SET agrees = 1")
    with sqlite3.connect(log.path) as connection, pytest.raises(sqlite3.DatabaseError):
        connection.execute("DELETE FROM feedback")
    assert len(log.read()) == 5
    log.to_csv(tmp_path / "feedback.csv")
    assert len(pd.read_csv(tmp_path / "feedback.csv")) == 5


def test_entries_are_checked() -> None:
    with pytest.raises(SchemaError, match="reason is required"):
        _entry("P1", agrees=False, label=1, reason=" ").check()
    with pytest.raises(SchemaError, match="user_name"):
        FeedbackEntry("run", "P1", " ", True, "").check()
    with pytest.raises(SchemaError, match="cannot carry a corrected label"):
        _entry("P1", agrees=True, label=0).check()


def test_train_takes_corrections_opt_in_and_evaluation_uses_them(tmp_path: Path) -> None:
    from deeppcos.inference.predictor import load_run

    config = {
        "name": "tiny",
        "synthetic": {"patients": 60, "image_size": 32, "folder": str(tmp_path / "cohort")},
        "split": {"n_folds": 2, "test_fraction": 0.25},
        "tabular": {"params": {"n_estimators": 30}},
        "image": {"enabled": False},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    runner.invoke(
        app, ["synth", str(tmp_path / "cohort"), "--patients", "60", "--image-size", "32"]
    )
    patients = pd.read_csv(tmp_path / "cohort" / "patients.csv", dtype={"patient_id": str})
    first = patients.iloc[0]
    log = FeedbackLog(tmp_path / "review.sqlite")
    log.append(_entry(first["patient_id"], agrees=False, label=1 - int(first["pcos"])))
    args = ["train", "-c", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run")]
    result = runner.invoke(app, [*args, "--label-corrections", str(log.path)])
    assert result.exit_code == 0, result.output
    changed = read_metrics(tmp_path / "run")["label_corrections"]["labels_changed"]
    assert changed == {first["patient_id"]: [int(first["pcos"]), 1 - int(first["pcos"])]}
    cohort = load_run(tmp_path / "run").cohort()  # fingerprint of the source data still matches
    label = cohort.patients.set_index("patient_id").loc[first["patient_id"], "label"]
    assert int(label) == 1 - int(first["pcos"])

    log.append(_entry("nobody", agrees=False, label=1))
    again = runner.invoke(
        app, [*args[:-1], str(tmp_path / "run2"), "--label-corrections", str(log.path)]
    )
    assert again.exit_code == 1 and "nobody" in again.output
