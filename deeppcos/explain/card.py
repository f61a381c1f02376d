"""The model-card summary: what a loaded model says of itself, in one schema everywhere.

The patient report, the HTTP service's ``GET /model`` and external validation's record of the
internal figures all take this one summary. Out-of-fold figures come from the run's metrics
(``RunMetrics``, held by the predictor, so a model fitted in memory has them too); locked-test
figures from ``deeppcos evaluate``'s report when the run has been evaluated (None otherwise: the
summary then says the test part has not been scored, rather than showing nothing). Every figure
is ``{"value", "ci"}`` (and ``ci_note`` when a bootstrap gave no interval).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deeppcos.evaluation.model_card import decision_support
from deeppcos.explain.wording import predictor_words
from deeppcos.runs.folder import run_title
from deeppcos.runs.layout import RunFiles
from deeppcos.runs.reader import Run
from deeppcos.runs.records import Estimate, ThresholdSummary, headline

if TYPE_CHECKING:
    from deeppcos.inference.predictor import Predictor
    from deeppcos.knowledge.criteria import Guideline

__all__ = ["model_card_summary", "run_guideline"]


def model_card_summary(predictor: Predictor) -> dict[str, Any]:
    """Run, cohort, model and performance facts of a loaded (or in-memory) model."""
    run = Run(predictor.run) if predictor.run is not None else None
    metrics = predictor.metrics
    fusion = metrics.fusion if metrics is not None else None
    record = predictor.record
    words = predictor_words(predictor)
    routes = fusion.routes if fusion is not None else {}
    fused_n = fusion.oof.n if fusion is not None and fusion.oof is not None else None
    return {
        "run": run_title(predictor.run, record),
        "trained": record.get("started"),
        "deeppcos_version": record.get("versions", {}).get("deeppcos"),
        "cohort": record.get("cohort"),
        "label": words.label,
        "intended_use": decision_support(words.label).replace("**", ""),
        "development_patients": metrics.development_patients if metrics else None,
        "test_patients": metrics.test_patients if metrics else None,
        "branches": list(predictor.branches),
        "fusion_method": predictor.fusion_method,
        "calibration": fusion.calibration_method if fusion else None,
        "routes": {route: entry.get("scored_by") for route, entry in routes.items()},
        "guideline": run_guideline(predictor),
        "threshold": predictor.threshold,
        "target_sensitivity": fusion.target_sensitivity if fusion else None,
        "out_of_fold": _figures(metrics.oof_headline() if metrics else {}, fused_n),
        "branches_out_of_fold": {
            name: _figures(headline(branch.oof), branch.oof.n)
            for name, branch in (metrics.branches.items() if metrics else [])
        },
        "locked_test": _locked_test(run),
        "model_card": f"{RunFiles.EVALUATION}/{run.model_card_file.name}"
        if run is not None and run.model_card_file.is_file()
        else None,
    }


def run_guideline(predictor: Predictor) -> Guideline:
    """The diagnostic guideline of the run (its config's ``severity.guideline``): the one its
    criteria labeller used, and the one every checklist of this run applies."""
    return predictor.config.severity.guideline


def _locked_test(run: Run | None) -> dict[str, Any] | None:
    """The fused risk's figures on the locked test part, at the run's threshold."""
    evaluation = run.evaluation_metrics() if run is not None else None
    if not evaluation or not evaluation.get("fusion"):
        return None
    summary = ThresholdSummary.from_json(evaluation["fusion"])
    return _figures(headline(summary), summary.n)


def _figures(figures: dict[str, Estimate], n: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, estimate in figures.items():
        entry = {"value": estimate.value, "ci": list(estimate.ci) if estimate.ci else None}
        if estimate.details.get("ci_note"):
            entry["ci_note"] = estimate.details["ci_note"]
        out[key] = entry
    if n is not None:
        out["n"] = n
    return out
