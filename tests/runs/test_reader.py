"""``Run`` reads a run folder; ``RunMetrics`` types its ``metrics.json`` without changing a key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deeppcos.exceptions import RunError
from deeppcos.inference.predictor import load_run
from deeppcos.runs.reader import Run
from deeppcos.runs.records import METRICS_FORMAT, BinarySummary, RunMetrics, ThresholdSummary
from tests.conftest import read_metrics


def test_the_typed_record_writes_back_exactly_the_file(tabular_run: Path) -> None:
    data = read_metrics(tabular_run)
    assert data["format_version"] == METRICS_FORMAT
    again = RunMetrics.from_json(data).to_json()
    # The same keys, values and order: what scripts and older readers of the file rely on.
    assert json.dumps(again) == json.dumps(data)


def test_a_file_from_before_the_format_version_still_reads(tabular_run: Path) -> None:
    data = read_metrics(tabular_run)
    old = {k: v for k, v in data.items() if k not in ("format_version", "pcos", "image_modality")}
    record = RunMetrics.from_json(old)
    assert record.branches["tabular"].oof == RunMetrics.from_json(data).branches["tabular"].oof
    assert record.pcos is None and "pcos" not in record.to_json()  # nothing invented
    assert record.to_json()["format_version"] == METRICS_FORMAT


def test_a_newer_or_broken_file_is_refused_with_what_to_do(tabular_run: Path) -> None:
    data = read_metrics(tabular_run)
    newer = r"x/metrics.json: metrics format 99 .* 'pip install -U deeppcos'"
    with pytest.raises(RunError, match=newer):
        RunMetrics.from_json({**data, "format_version": 99}, "x/metrics.json")
    broken = {**data, "branches": {"tabular": {"folds": []}}}  # no out-of-fold figures
    with pytest.raises(RunError, match=r"x/metrics.json: not a deeppcos metrics record.*train"):
        RunMetrics.from_json(broken, "x/metrics.json")
    for wrong in ({"branches": 3}, {"branches": {"tabular": {"oof": "high"}}}):  # wrong types
        with pytest.raises(RunError, match=r"x/metrics.json: not a deeppcos metrics record"):
            RunMetrics.from_json(wrong, "x/metrics.json")


def test_both_summary_layouts_answer_one_schema(tabular_run: Path) -> None:
    """The flat summary (roc_auc beside roc_auc_ci) and the nested one ({value, ci}) give the
    same Estimate for the same figure: consumers no longer reconcile them."""
    fusion = RunMetrics.from_json(read_metrics(tabular_run)).fusion
    assert fusion is not None and fusion.oof is not None and fusion.oof_at_threshold is not None
    flat, nested = fusion.oof.figure("roc_auc"), fusion.oof_at_threshold.figure("roc_auc")
    assert flat is not None and nested is not None
    assert flat.value == pytest.approx(nested.value, abs=1e-4)
    assert flat.ci is not None and flat.ci[0] <= flat.value <= flat.ci[1]
    # Threshold figures exist only in the nested layout; the flat one says so by None.
    assert fusion.oof.figure("sensitivity") is None
    assert fusion.oof_at_threshold.figure("sensitivity") is not None
    assert fusion.threshold == pytest.approx(fusion.oof_at_threshold.threshold)


def test_a_single_class_summary_keeps_its_note() -> None:
    summary = {"n": 4, "positives": 0, "roc_auc": None, "roc_auc_ci": None, "note": "one class"}
    record = BinarySummary.from_json(summary)
    assert record.to_json() == summary and record.figure("roc_auc").value is None
    nested = {"roc_auc": {"value": None, "ci": None}, "threshold": 0.5, "n": 4, "positives": 0}
    assert ThresholdSummary.from_json(nested).figure("roc_auc") is None


def test_run_reads_what_the_predictor_loads(tabular_run: Path) -> None:
    run = Run.open(tabular_run)
    predictor = load_run(tabular_run)
    assert run.threshold() == predictor.threshold
    assert run.fusion_method() == predictor.fusion_method
    assert run.metrics() == predictor.metrics
    assert run.config().name == predictor.config.name
    parts = set(run.split_assignments().values())
    assert "test" in parts and {"fold0", "fold1"} <= parts
    assert run.oof_predictions()["patient_id"].is_unique
    assert run.load_report() is not None and not run.is_evaluated
    assert run.evaluation_metrics() is None and run.test_predictions() is None
    assert run.external_reports() == {} and run.label_corrections() is None


def test_run_open_refuses_what_is_not_a_whole_run(tmp_path: Path, tabular_run: Path) -> None:
    with pytest.raises(RunError, match="run folder not found"):
        Run.open(tmp_path / "nothing")
    copy = tmp_path / "copy"
    shutil.copytree(tabular_run, copy)
    (copy / "run.json").unlink()
    with pytest.raises(RunError, match=r"not a complete run \(no run.json\)"):
        Run.open(copy)
    assert not Run(copy).is_complete  # Run() itself checks nothing: pages say why
