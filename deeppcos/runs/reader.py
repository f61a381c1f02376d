"""Reading a run folder: :class:`Run`, the only reader that knows its files.

Everything that reads a run (loading a predictor, evaluation, external validation, explanations,
the service, batch scoring, the dashboards, the CLI) goes through a :class:`Run`; the names come
from :mod:`deeppcos.runs.layout`, shared with the writer. ``Run(path)`` checks nothing;
:meth:`Run.open` checks the completion record and its format first (what every command that
needs a whole run does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from deeppcos.exceptions import RunError
from deeppcos.runs.folder import read_run_record
from deeppcos.runs.layout import ReportFiles, RunFiles
from deeppcos.runs.records import RunMetrics

if TYPE_CHECKING:
    from deeppcos.config import RunConfig
    from deeppcos.data.splits import CohortSplit

__all__ = ["Run"]


@dataclass(frozen=True)
class Run:
    """A run folder, read on demand."""

    path: Path

    @classmethod
    def open(cls, path: Path | str) -> Run:
        """A complete run of this format: a clear error otherwise (``read_run_record``)."""
        run = cls(Path(path))
        _ = run.record
        return run

    def file(self, relative: str) -> Path:
        return self.path / relative

    # --- the records training wrote ---------------------------------------------------------

    @cached_property
    def record(self) -> dict[str, Any]:
        """``run.json``, checked: complete, and of a format this version reads."""
        return read_run_record(self.path)

    @property
    def is_complete(self) -> bool:
        return self.file(RunFiles.RECORD).is_file()

    @property
    def record_file(self) -> Path:
        return self.file(RunFiles.RECORD)

    @property
    def config_file(self) -> Path:
        return self.file(RunFiles.CONFIG)

    def config(self) -> RunConfig:
        from deeppcos.config import load_config

        return load_config(self.file(RunFiles.CONFIG))

    def metrics(self) -> RunMetrics:
        """``metrics.json`` as typed records (a file from before its format version reads too)."""
        file = self.file(RunFiles.METRICS)
        return RunMetrics.from_json(_json(file), str(file))

    @property
    def metrics_file(self) -> Path:
        return self.file(RunFiles.METRICS)

    def cohort_summary(self) -> dict[str, Any]:
        """``cohort.json``; empty when the run has none."""
        return _json_or_empty(self.file(RunFiles.COHORT))

    @property
    def cohort_file(self) -> Path:
        return self.file(RunFiles.COHORT)

    def split(self) -> CohortSplit:
        from deeppcos.data.splits import CohortSplit

        return CohortSplit.load(self.file(RunFiles.SPLIT))

    def split_assignments(self) -> dict[str, str]:
        """patient_id → part (``fold0`` …, ``test``, ``unlabelled``); empty without a split."""
        file = self.file(RunFiles.SPLIT)
        if not file.is_file():
            return {}
        assignments = _json(file).get("assignments", {})
        return {str(k): str(v) for k, v in assignments.items()}

    def load_report(self) -> pd.DataFrame | None:
        file = self.file(RunFiles.LOAD_REPORT)
        return pd.read_csv(file, dtype=str, keep_default_na=False) if file.is_file() else None

    @property
    def load_report_file(self) -> Path:
        return self.file(RunFiles.LOAD_REPORT)

    def oof_predictions(self) -> pd.DataFrame:
        return pd.read_csv(self.oof_predictions_file, dtype={"patient_id": str})

    @property
    def oof_predictions_file(self) -> Path:
        return self.file(RunFiles.OOF_PREDICTIONS)

    def label_corrections(self) -> pd.Series | None:
        """patient_id → corrected label, when training applied corrections."""
        file = self.file(RunFiles.LABEL_CORRECTIONS)
        if not file.is_file():
            return None
        table = pd.read_csv(file, dtype={"patient_id": str})
        return table.set_index("patient_id")["label"]

    # --- the models' folders ----------------------------------------------------------------

    def branch_folder(self, name: str) -> Path:
        return self.file(name)

    @property
    def fusion_folder(self) -> Path:
        return self.file(RunFiles.FUSION)

    @property
    def has_fusion(self) -> bool:
        return self.file(RunFiles.FUSION_RECORD).is_file()

    def fusion_method(self) -> str:
        return str(_json(self.file(RunFiles.FUSION_RECORD))["method"])

    def threshold(self) -> float:
        return float(_json(self.file(RunFiles.FUSION_DECISION))["threshold"])

    @property
    def severity_folder(self) -> Path:
        return self.file(RunFiles.SEVERITY)

    @property
    def has_severity(self) -> bool:
        return self.file(RunFiles.SEVERITY_RECORD).is_file()

    def severity_info(self) -> dict[str, Any]:
        return _json(self.file(RunFiles.SEVERITY_RECORD))

    def severity_grades(self) -> pd.DataFrame:
        """Every development patient's grade (the labeller's or the table's), as trained on."""
        return pd.read_csv(self.file(RunFiles.SEVERITY_GRADES), dtype={"patient_id": str})

    # --- reports written after training -----------------------------------------------------

    @property
    def evaluation_folder(self) -> Path:
        return self.file(RunFiles.EVALUATION)

    @property
    def is_evaluated(self) -> bool:
        folder = self.evaluation_folder
        return (folder / ReportFiles.METRICS).is_file() and (
            folder / ReportFiles.TEST_PREDICTIONS
        ).is_file()

    def evaluation_metrics(self) -> dict[str, Any] | None:
        """``evaluation/metrics.json`` (the locked test part), None before ``deeppcos evaluate``
        or when unreadable."""
        file = self.evaluation_folder / ReportFiles.METRICS
        return _json_or_empty(file) or None

    @property
    def evaluation_metrics_file(self) -> Path:
        return self.evaluation_folder / ReportFiles.METRICS

    def test_predictions(self) -> pd.DataFrame | None:
        file = self.test_predictions_file
        return pd.read_csv(file, dtype={"patient_id": str}) if file.is_file() else None

    @property
    def test_predictions_file(self) -> Path:
        return self.evaluation_folder / ReportFiles.TEST_PREDICTIONS

    @property
    def model_card_file(self) -> Path:
        return self.evaluation_folder / ReportFiles.MODEL_CARD

    def external_folder(self, name: str) -> Path:
        return self.file(RunFiles.EXTERNAL) / name

    def external_reports(self) -> dict[str, Path]:
        """External validation report folders (``external/<cohort>/`` with a metrics file)."""
        root = self.file(RunFiles.EXTERNAL)
        if not root.is_dir():
            return {}
        return {
            folder.name: folder
            for folder in sorted(root.iterdir())
            if (folder / ReportFiles.METRICS).is_file()
        }


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunError(f"{path}: missing from the run folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object")
    return data


def _json_or_empty(path: Path) -> dict[str, Any]:
    """A record that may be absent or damaged without stopping a report: empty then."""
    try:
        return _json(path)
    except (OSError, RunError):
        return {}
