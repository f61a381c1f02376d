"""Performance on the locked test part: metrics with confidence intervals, ROC, PR,
calibration, confusion matrix and confidence histograms, a live threshold slider, subgroups,
branches against fusion, and severity grading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboards import analysis, context, figures, runinfo
from dashboards.widgets import metric_value


def metrics_section(result: dict[str, Any]) -> None:
    fusion = result["fusion"]
    st.markdown(
        f"**{result.get('fusion_method', '')} fusion, calibrated** · {result.get('scored')} of "
        f"{result.get('test_patients')} test patients scored · threshold "
        f"{result.get('threshold', 0):.3f} (chosen out of fold for the target sensitivity)"
        + (" · re-scored with --force" if result.get("rescored") else "")
    )
    cells = st.columns(4)
    for cell, key in zip(cells, ("roc_auc", "sensitivity", "specificity", "brier"), strict=True):
        entry = fusion.get(key) or {}
        ci = entry.get("ci")
        cell.metric(
            analysis.METRIC_NAMES[key],
            metric_value(entry.get("value")),
            help=f"95% CI {ci[0]:.3f}–{ci[1]:.3f}" if ci else "no interval",
        )
    st.dataframe(analysis.metrics_table(fusion), hide_index=True, key="metrics_table")
    ece = result.get("calibration_ece", {})
    if ece:
        st.caption(
            f"ECE before calibration {metric_value(_value(ece.get('before')))}, after "
            f"{metric_value(_value(ece.get('after')))}."
        )


def _value(entry: Any) -> Any:
    return entry.get("value") if isinstance(entry, dict) else entry


def threshold_section(predictions: pd.DataFrame, run_threshold: float, key: str) -> float:
    """The slider and what it changes: sensitivity, specificity, PPV, NPV, the confusion
    matrix. Returns the chosen threshold."""
    st.subheader("Decision threshold")
    if key not in st.session_state:
        st.session_state[key] = round(float(run_threshold), 3)
    threshold = st.slider(
        "Threshold on the calibrated risk",
        min_value=0.0,
        max_value=1.0,
        step=0.001,
        format="%.3f",
        key=key,
        help="Patients with a risk at or above it are flagged. Moving it re-scores the test "
        "part live (point estimates; the table above holds the run's own threshold).",
    )
    if st.button(f"Back to the run's threshold ({run_threshold:.3f})", key="reset_threshold"):
        st.session_state.pop(key)
        st.rerun()
    live = analysis.at_threshold(predictions, threshold)
    base = analysis.at_threshold(predictions, run_threshold)
    cells = st.columns(4)
    for cell, key in zip(cells, ("sensitivity", "specificity", "ppv", "npv"), strict=True):
        delta = None
        if (
            live[key] is not None
            and base[key] is not None
            and abs(threshold - run_threshold) > 5e-4
        ):
            delta = f"{live[key] - base[key]:+.3f} vs run's"
        cell.metric(analysis.METRIC_NAMES[key], metric_value(live[key]), delta=delta)
    left, right = st.columns(2)
    matrix = [[live["tn"], live["fp"]], [live["fn"], live["tp"]]]
    with left:
        st.plotly_chart(
            figures.confusion_figure(matrix, ["negative", "positive"], f"At {threshold:.3f}"),
            key="confusion",
        )
    with right:
        frame = analysis.scored(predictions)
        st.plotly_chart(
            figures.confidence_figure(frame["label"], frame["risk"], threshold), key="confidence"
        )
    st.caption(
        f"At {threshold:.3f}: {live['tp']} true positives, {live['fn']} false negatives, "
        f"{live['fp']} false positives, {live['tn']} true negatives."
    )
    return threshold


def curves_section(predictions: pd.DataFrame, branches: list[str], threshold: float) -> None:
    frame = analysis.scored(predictions)
    y = frame["label"].to_numpy(dtype="float64")
    curves = {"fusion (calibrated)": (y, frame["risk"].to_numpy(dtype="float64"))}
    for name in branches:
        column = f"p_{name}"
        if column in frame and frame[column].notna().any():
            curves[f"{name} branch"] = (y, frame[column].to_numpy(dtype="float64"))
    roc, pr, calibration = st.tabs(["ROC", "Precision–recall", "Calibration"])
    with roc:
        st.plotly_chart(figures.roc_figure(curves, threshold), key="roc")
    with pr:
        st.plotly_chart(figures.pr_figure(curves, threshold), key="pr")
    with calibration:
        reliability = {
            "calibrated": (y, frame["risk"].to_numpy(dtype="float64")),
            "uncalibrated": (y, frame["probability"].to_numpy(dtype="float64")),
        }
        st.plotly_chart(figures.calibration_figure(reliability), key="calibration")
        st.caption("Marker size: patients in the bin. Bins are 0.1 wide.")


def subgroups_section(result: dict[str, Any]) -> None:
    st.subheader("Subgroups")
    records = result.get("subgroups") or []
    if not records:
        st.caption("No subgroup columns (age, BMI, site) in this cohort.")
        return
    st.dataframe(analysis.subgroup_table(records), hide_index=True, key="subgroups")
    st.caption("gap: the subgroup's value minus the whole test part's.")


def branches_section(result: dict[str, Any]) -> None:
    st.subheader("Branches against fusion")
    st.dataframe(analysis.branches_table(result), hide_index=True, key="branches")
    modalities = result.get("modalities") or {}
    if modalities:
        st.caption(
            "Modalities used on the test part: "
            + ", ".join(f"{k}: {v}" for k, v in modalities.items())
        )


def severity_section(result: dict[str, Any]) -> None:
    severity = result.get("severity")
    if not severity:
        return
    st.subheader("Severity grade")
    if "quadratic_kappa" not in severity:
        st.caption(severity.get("note", "no graded patient in the locked test part"))
        return
    cells = st.columns(3)
    for cell, key, name in (
        (cells[0], "quadratic_kappa", "quadratic weighted kappa"),
        (cells[1], "macro_f1", "macro F1"),
    ):
        entry = severity[key]
        ci = entry.get("ci")
        cell.metric(
            name,
            metric_value(entry.get("value")),
            help=f"95% CI {ci[0]:.3f}–{ci[1]:.3f}" if ci else None,
        )
    cells[2].metric("graded patients", str(severity.get("n")))
    labels = [str(v) for v in severity["labels"]]
    st.plotly_chart(
        figures.confusion_figure(np.array(severity["confusion"]), labels, "Severity grades"),
        key="severity_confusion",
    )
    st.caption(
        "A grade is given only with a positive decision: 'none' means not flagged, and a "
        "flagged patient gets her most probable grade given PCOS."
        + (f" Training grades from: {severity['source']}." if severity.get("source") else "")
    )
    agreement = severity.get("presence_agreement")
    if agreement:
        st.markdown("**Decision against grade** (no flagged patient is graded 'none')")
        st.table(pd.DataFrame(agreement["table"]).T)


def not_evaluated(run: Path) -> None:
    context.explain_evaluate(run)
    metrics = context.training_metrics(run)
    table = analysis.oof_table(metrics)
    if not table.empty:
        st.subheader("Out-of-fold figures from training")
        st.dataframe(table, hide_index=True, key="oof")
        st.caption("Out of fold: each development patient scored by a model that never saw her.")


def main() -> None:
    st.title("Performance")
    run = context.require_run()
    result = context.evaluation(run)
    predictions = context.test_predictions(run)
    if result is None or predictions is None:
        not_evaluated(run)
        st.stop()
    if analysis.scored(predictions).empty:
        st.warning("No test patient has both a label and a prediction: nothing to score.")
        st.stop()
    metrics_section(result)
    threshold = threshold_section(predictions, float(result["threshold"]), f"threshold::{run}")
    curves_section(predictions, list(result.get("branches", {})), threshold)
    branches_section(result)
    subgroups_section(result)
    severity_section(result)
    st.caption(f"from {run / runinfo.EVALUATION}")


main()
