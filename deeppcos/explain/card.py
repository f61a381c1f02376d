"""A short model-card summary for a report, read from the run folder's own records.

Out-of-fold figures come from ``metrics.json`` (written by training); locked-test figures from
``evaluation/metrics.json`` when ``deeppcos evaluate`` has been run (absent otherwise: the
summary then says the test part has not been scored, rather than showing nothing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeppcos.evaluation.model_card import DECISION_SUPPORT
from deeppcos.runs.folder import run_title

if TYPE_CHECKING:
    from deeppcos.inference.predictor import Predictor
    from deeppcos.knowledge.criteria import Guideline

__all__ = ["DECISION_SUPPORT_TEXT", "model_card_summary", "run_guideline"]

DECISION_SUPPORT_TEXT = DECISION_SUPPORT.replace("**", "")
_KEYS = ("roc_auc", "sensitivity", "specificity", "ppv", "npv", "brier")


def model_card_summary(predictor: Any) -> dict[str, Any]:
    """Run, cohort, model and performance facts, each figure as ``{"value", "ci"}``."""
    run = Path(predictor.run) if predictor.run is not None else None
    metrics = predictor.metrics
    fusion = metrics.get("fusion", {})
    # The locked test part is scored by `deeppcos evaluate`, into the run folder.
    evaluation = _read(run / "evaluation" / "metrics.json") if run is not None else {}
    record = predictor.record
    out: dict[str, Any] = {
        "run": run_title(run, record),
        "trained": record.get("started"),
        "deeppcos_version": record.get("versions", {}).get("deeppcos"),
        "cohort": record.get("cohort"),
        "development_patients": metrics.get("development_patients"),
        "test_patients": metrics.get("test_patients"),
        "branches": list(predictor.branches),
        "fusion_method": getattr(predictor, "fusion_method", "late"),
        "calibration": fusion.get("calibration", {}).get("method"),
        "routes": {
            route: entry.get("scored_by") for route, entry in fusion.get("routes", {}).items()
        },
        "guideline": run_guideline(predictor),
        "threshold": predictor.threshold,
        "target_sensitivity": fusion.get("decision", {}).get("target_sensitivity"),
        "out_of_fold": _figures(fusion.get("oof_at_threshold", {}), fusion.get("oof", {})),
        "locked_test": _figures(evaluation.get("fusion", {}), {}) if evaluation else None,
        "model_card": "evaluation/model_card.md"
        if run is not None and (run / "evaluation" / "model_card.md").is_file()
        else None,
    }
    return out


def run_guideline(predictor: Predictor) -> Guideline:
    """The diagnostic guideline of the run (its config's ``severity.guideline``): the one its
    criteria labeller used, and the one every checklist of this run applies."""
    return predictor.config.severity.guideline


def _figures(at_threshold: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """``{metric: {"value", "ci"}}`` from either layout (nested entries or flat keys)."""
    out: dict[str, Any] = {}
    for key in _KEYS:
        entry = at_threshold.get(key)
        if isinstance(entry, dict) and entry.get("value") is not None:
            out[key] = {"value": entry["value"], "ci": entry.get("ci")}
        elif isinstance(plain.get(key), int | float):
            out[key] = {"value": plain[key], "ci": plain.get(f"{key}_ci")}
    n = at_threshold.get("n", plain.get("n"))
    if n is not None:
        out["n"] = n
    return out


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
