"""The names of a run folder's files: the one place that spells them.

The writer (:class:`~deeppcos.runs.folder.RunWriter` and what training, ``deeppcos evaluate`` and
external validation write through it) and the reader (:class:`~deeppcos.runs.reader.Run`) both
take the names from here; no other module names a run file (``tests/runs/test_layout.py``).

Layout::

    run.json             completion record: status, timings, versions, cohort fingerprint
    config.yaml          the resolved config
    cohort.json          the cohort's summary (counts, labels, load-report counts, fingerprint)
    split.json           patient -> part (fold0..k-1, test, unlabelled)
    load_report.csv      every load-report entry of the training cohort
    label_corrections.csv  labels reviewers corrected, when training applied them
    metrics.json         out-of-fold metrics per branch (keys documented in README)
    oof_predictions.csv  patient_id, fold, label, p_tabular, p_image, route, p_fusion, risk
                         (out-of-fold only), severity grades when graded
    oof_embeddings.parquet  patient_id + image embedding columns (out-of-fold)
    tabular/             model.ubj + tabular_branch.json (XGBoost's own format, no pickle)
    image/               model.keras + image_branch.json (Keras's own format, no pickle)
    curves/              training histories (JSON) and their plots (PNG)
    fusion/              the fusion model, fusion.json (method), routes, decision.json (threshold)
    severity/            the ordinal head, severity.json, grades.csv (the grades trained on)
    evaluation/          `deeppcos evaluate`: metrics.json, test_predictions.csv, model_card.md …
    external/<cohort>/   `deeppcos evaluate --cohort`: metrics.json, predictions.csv, …
"""

from __future__ import annotations

__all__ = ["ReportFiles", "RunFiles"]


class RunFiles:
    """A run folder, relative to its root."""

    RECORD = "run.json"  # the completion record: status, timings, versions, cohort fingerprint
    CONFIG = "config.yaml"
    COHORT = "cohort.json"
    SPLIT = "split.json"
    LOAD_REPORT = "load_report.csv"
    METRICS = "metrics.json"
    OOF_PREDICTIONS = "oof_predictions.csv"
    OOF_EMBEDDINGS = "oof_embeddings.parquet"
    LABEL_CORRECTIONS = "label_corrections.csv"
    CURVES = "curves"
    FUSION = "fusion"
    FUSION_RECORD = "fusion/fusion.json"
    FUSION_DECISION = "fusion/decision.json"
    SEVERITY = "severity"
    SEVERITY_RECORD = "severity/severity.json"
    SEVERITY_GRADES = "severity/grades.csv"
    EVALUATION = "evaluation"  # `deeppcos evaluate`: a report folder (ReportFiles)
    EXTERNAL = "external"  # `deeppcos validate-external`: external/<cohort>/ report folders

    @staticmethod
    def curve(branch: str) -> str:
        return f"{RunFiles.CURVES}/{branch}.json"


class ReportFiles:
    """A report folder inside a run: ``evaluation/`` and each ``external/<cohort>/``."""

    METRICS = "metrics.json"
    TEST_PREDICTIONS = "test_predictions.csv"  # evaluation/
    PREDICTIONS = "predictions.csv"  # external/<cohort>/
    MODEL_CARD = "model_card.md"
    CASE_MIX = "case_mix.csv"
    DECISION_CURVE = "decision_curve.png"
    RECALIBRATION_SPLIT = "recalibration_split.csv"  # external/<cohort>/ with --recalibrate
    RECALIBRATION_RELIABILITY = "recalibration_reliability.png"
