"""External validations of a run, read for the Performance page: what
``deeppcos evaluate RUN --cohort SPEC [--recalibrate FRACTION]`` writes under
``RUN/external/<cohort>/`` (see :mod:`deeppcos.evaluation.external`), set beside the run's
internal figures. No Streamlit here: the page calls these; tests call them directly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from dashboards.analysis import read_predictions
from deeppcos.runs.layout import ReportFiles
from deeppcos.runs.reader import Run

METRICS = ReportFiles.METRICS
PREDICTIONS = ReportFiles.PREDICTIONS
RECALIBRATION = ReportFiles.RECALIBRATION_SPLIT
DECISION_CURVE = ReportFiles.DECISION_CURVE
# What a report needs for the page to show it (written by every version of the report).
REQUIRED = ("cohort", "at_run_threshold", "calibration", "threshold_for_target_sensitivity")


def report_folders(run: Path) -> list[Path]:
    """The run's external reports: ``RUN/external/*/`` holding a ``metrics.json``, by name."""
    return list(Run(run).external_reports().values())


def read_report(folder: Path) -> dict[str, Any]:
    """A report's ``metrics.json``; ValueError with a sentence when it is unreadable or lacks
    what the page shows."""
    try:
        report = json.loads((folder / METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder / METRICS} cannot be read: {exc}") from None
    missing = [key for key in REQUIRED if key not in (report if isinstance(report, dict) else {})]
    if missing:
        raise ValueError(
            f"{folder / METRICS} is not an external-validation report (no {', '.join(missing)}); "
            "write it again with `deeppcos evaluate RUN --cohort SPEC`"
        )
    return report


def label(folder: Path, report: dict[str, Any] | None) -> str:
    """How the picker names a report: the cohort, its scored patients, and a recalibration."""
    if report is None:
        return folder.name
    text = f"{report.get('cohort', folder.name)} ({report.get('scored', '?')} scored)"
    if report.get("recalibration"):
        text += f", recalibrated on {report['recalibration']['fraction']:.0%}"
    if report.get("cohort") and _slug(report["cohort"]) != folder.name:
        text += f" · {folder.name}/"
    return text


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "cohort"


def predictions(folder: Path) -> pd.DataFrame | None:
    """The external cohort's predictions (``predictions.csv``), or None when absent."""
    file = folder / PREDICTIONS
    return read_predictions(file) if file.is_file() else None


def recalibration_rows(folder: Path) -> pd.DataFrame | None:
    """``recalibration_split.csv``: each scored patient's part, risk before and after."""
    file = folder / RECALIBRATION
    if not file.is_file():
        return None
    return pd.read_csv(file, dtype={"patient_id": str, "part": str})


# --- tables ---------------------------------------------------------------------------------------


MEASURES = (
    ("ROC AUC", "roc_auc"),
    ("PR AUC", "pr_auc"),
    ("sensitivity at the run's threshold", "sensitivity"),
    ("specificity at the run's threshold", "specificity"),
    ("Brier score", "brier"),
)


def comparison_table(
    report: dict[str, Any],
    training: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Internal (out of fold; the locked test part when evaluated) and external figures side by
    side: one row per measure, one column per source, each "value (95% interval)"."""
    sources: dict[str, tuple[Any, dict[str, Any]]] = {}
    fusion = (training or {}).get("fusion") or {}
    oof = fusion.get("oof") or {}
    if oof:
        at = fusion.get("oof_at_threshold") or {}
        sources["internal: out of fold"] = (
            oof.get("n"),
            {
                "roc_auc": {"value": oof.get("roc_auc"), "ci": oof.get("roc_auc_ci")},
                "pr_auc": at.get("pr_auc") or {"value": oof.get("pr_auc")},
                "sensitivity": at.get("sensitivity"),
                "specificity": at.get("specificity"),
                "brier": at.get("brier") or {"value": oof.get("brier")},
            },
        )
    test = (evaluation or {}).get("fusion") or {}
    if test:
        sources["internal: locked test part"] = (
            (evaluation or {}).get("scored"),
            test,
        )
    outside = report["at_run_threshold"]
    sources[f"external: {report['cohort']}"] = (outside.get("n", report.get("scored")), outside)
    rows = [{"measure": "patients scored", **{k: _count(n) for k, (n, _) in sources.items()}}]
    for name, key in MEASURES:
        rows.append({"measure": name, **{k: with_ci(m.get(key)) for k, (_, m) in sources.items()}})
    return pd.DataFrame(rows)


def _count(n: Any) -> str:
    return "–" if n is None else str(int(n))


def with_ci(entry: Any) -> str:
    """``0.778 (0.737–0.821)``; the value alone without an interval; ``–`` when undefined."""
    value = value_of(entry)
    if value is None:
        return "–"
    interval = ci_text(entry)
    return f"{value:.3f}" if interval == "–" else f"{value:.3f} ({interval})"


def value_of(entry: Any) -> float | None:
    value = entry.get("value") if isinstance(entry, dict) else entry
    return None if value is None else float(value)


def ci_text(entry: Any) -> str:
    ci = entry.get("ci") if isinstance(entry, dict) else None
    if not ci or any(c is None for c in ci):
        return "–"
    return f"{ci[0]:.3f}–{ci[1]:.3f}"


def calibration_table(report: dict[str, Any]) -> pd.DataFrame:
    """Calibration on the whole external cohort: in the large and slope, with intervals."""
    cal = report["calibration"]
    rows = [
        ("calibration in the large", "0", cal.get("in_the_large")),
        ("calibration slope", "1", cal.get("slope")),
        ("observed rate of positives", "", cal.get("observed_rate")),
        ("mean predicted risk", "", cal.get("mean_predicted")),
    ]
    return pd.DataFrame(
        [{"measure": name, "ideal": ideal, "here (95% CI)": with_ci(e)} for name, ideal, e in rows]
    )


def recalibration_table(recalibration: dict[str, Any]) -> pd.DataFrame:
    """On the held-out part, before and after recalibration, each with its interval."""
    held = recalibration["held_out"]
    before, after = held["before"], held["after"]
    threshold = before.get("threshold")
    at = f" at {threshold:.3f}" if isinstance(threshold, int | float) else ""
    rows = [
        ("calibration in the large (0 = ideal)", "calibration", "in_the_large"),
        ("calibration slope (1 = ideal)", "calibration", "slope"),
        ("Brier score", None, "brier"),
        (f"sensitivity{at} (the run's threshold)", None, "sensitivity"),
        (f"specificity{at} (the run's threshold)", None, "specificity"),
    ]
    out = []
    for name, section, key in rows:
        one, two = ((part[section] if section else part).get(key) for part in (before, after))
        out.append(
            {
                "on the held-out part": name,
                "before (95% CI)": with_ci(one),
                "after (95% CI)": with_ci(two),
            }
        )
    return pd.DataFrame(out)


CASE_MIX_COLUMNS = {
    "feature": "model input",
    "internal_mean": "development mean",
    "internal_sd": "development SD",
    "internal_missing": "development missing share",
    "external_mean": "mean here",
    "external_sd": "SD here",
    "external_missing": "missing share here",
    "standardised_difference": "standardised difference",
    "absent_here": "absent here",
}


def case_mix_table(report: dict[str, Any]) -> pd.DataFrame:
    """Each model input in development and here, the largest standardised differences first
    (columns named for reading: ``CASE_MIX_COLUMNS``)."""
    table = pd.DataFrame((report.get("case_mix") or {}).get("table") or [])
    if table.empty:
        return table
    order = table["standardised_difference"].abs().fillna(-1.0)  # undefined last
    table = table.assign(_order=order).sort_values("_order", ascending=False, kind="stable")
    return table.drop(columns="_order").reset_index(drop=True).rename(columns=CASE_MIX_COLUMNS)


def contamination_warning(report: dict[str, Any]) -> str | None:
    return (report.get("contamination") or {}).get("warning")


def part_sizes(recalibration: dict[str, Any]) -> str:
    """``fitted on 190 (64 positive), scored on 190 (64 positive)``, for captions."""
    split = recalibration["split"]
    fit, rest = split["fit"], split["held out"]
    return (
        f"fitted on {fit['patients']} patients ({fit['positives']} positive), scored on the "
        f"held-out {rest['patients']} ({rest['positives']} positive)"
    )
