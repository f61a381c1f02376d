"""Performance on the locked test part: metrics with confidence intervals, ROC, PR,
calibration, confusion matrix and confidence histograms, a live threshold slider, subgroups,
branches against fusion, and severity grading; and, when the run has been validated on other
cohorts (``deeppcos evaluate RUN --cohort SPEC``), one of those reports beside the internal
figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboards import analysis, context, figures, runinfo
from dashboards import external as ext
from dashboards.widgets import metric_value
from deeppcos.runs.reader import Run


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


# --- external validation -------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=16)
def _report(path: str, stamp: int) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return ext.read_report(Path(path)), None
    except ValueError as exc:
        return None, str(exc)


def _stamp(folder: Path, name: str) -> int:
    return runinfo.stamp(folder / name)


@st.cache_data(show_spinner=False, max_entries=16)
def _frame(path: str, stamp: int, kind: str) -> pd.DataFrame | None:
    folder = Path(path)
    if kind == "predictions":
        return ext.predictions(folder)
    if kind == "recalibration":
        return ext.recalibration_rows(folder)
    file = Run(folder).oof_predictions_file
    return analysis.read_predictions(file) if file.is_file() else None


def external_section(
    run: Path, result: dict[str, Any] | None, internal: pd.DataFrame | None
) -> None:
    """A chosen external report beside the internal figures (``result``: the run's evaluation,
    ``internal``: its test predictions; None when the run has not been evaluated)."""
    st.header("External validation")
    folders = ext.report_folders(run)
    if not folders:
        st.caption(
            "No external validation of this run yet: `deeppcos evaluate RUN --cohort SPEC` scores "
            "it on another cohort and writes RUN/external/NAME/, shown here."
        )
        return
    reports = {f.name: _report(str(f), _stamp(f, ext.METRICS)) for f in folders}
    names = {f.name: ext.label(f, reports[f.name][0]) for f in folders}
    chosen = st.selectbox(
        "External cohort",
        list(names),
        format_func=lambda name: names.get(name, name),
        key=f"external_report::{run}",
        help="Reports written by `deeppcos evaluate RUN --cohort SPEC` into RUN/external/.",
    )
    folder = Run(run).external_folder(str(chosen))
    report, problem = reports[str(chosen)]
    if report is None:
        st.warning(f"This report cannot be shown: {problem}")
        return
    warning = ext.contamination_warning(report)
    if warning:
        st.warning(f"Contamination: {warning}.")
    mix = report.get("case_mix") or {}
    rates = mix.get("label_rate") or {}
    st.markdown(
        f"**{report['cohort']}** · {report.get('scored')} of {report.get('patients')} patients "
        f"scored · label rate {metric_value(rates.get('external'))} here, "
        f"{metric_value(rates.get('internal'))} in development · from `{folder}`"
    )
    _external_figures(run, report, folder, result, internal)
    _external_calibration(report)
    _external_case_mix(mix)
    if report.get("recalibration"):
        _recalibration(report["recalibration"], folder)


def _external_figures(
    run: Path,
    report: dict[str, Any],
    folder: Path,
    result: dict[str, Any] | None,
    internal: pd.DataFrame | None,
) -> None:
    st.subheader("Internal and external, side by side")
    st.dataframe(
        ext.comparison_table(report, context.training_metrics(run), result),
        hide_index=True,
        key="external_comparison",
    )
    cut = report["threshold_for_target_sensitivity"]
    st.caption(
        "Each figure with its 95% patient-bootstrap interval. The run's threshold "
        f"{cut['run_threshold']:.3f} was chosen out of fold for {cut['target']:.0%} sensitivity, "
        "so sensitivity and specificity out of fold are optimistic; this cohort would need "
        f"{cut['threshold_here']:.3f} for {cut['target']:.0%}."
    )
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    oof = _frame(str(run), runinfo.stamp(Run(run).oof_predictions_file), "oof")
    for name, frame in (("internal: out of fold", oof), ("internal: locked test part", internal)):
        if frame is not None and {"label", "risk"} <= set(frame.columns):
            curves[name] = _curve(frame)
    outside = _frame(str(folder), _stamp(folder, ext.PREDICTIONS), "predictions")
    if outside is not None:
        curves[f"external: {report['cohort']}"] = _curve(outside)
    roc, calibration, decision = st.tabs(["ROC", "Calibration", "Decision curve"])
    with roc:
        figure = figures.roc_figure(curves)
        figure.update_layout(title="ROC, internal and external")
        st.plotly_chart(figure, key="external_roc")
    with calibration:
        st.plotly_chart(figures.calibration_figure(curves), key="external_calibration_figure")
        st.caption("Calibrated risk. Marker size: patients in the bin. Bins are 0.1 wide.")
    with decision:
        image = folder / ext.DECISION_CURVE
        if image.is_file():
            st.image(
                str(image),
                caption="Net benefit of the model against treating everyone and no one "
                "(from the report).",
            )
        else:
            st.caption("No decision curve in this report.")


def _curve(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    scored = analysis.scored(frame)
    return scored["label"].to_numpy(dtype="float64"), scored["risk"].to_numpy(dtype="float64")


def _external_calibration(report: dict[str, Any]) -> None:
    st.subheader("Calibration and the decision here")
    at, cal = report["at_run_threshold"], report["calibration"]
    cut = report["threshold_for_target_sensitivity"]
    cells = st.columns(4)
    for cell, name, entry in (
        (cells[0], "external calibration in the large", cal.get("in_the_large")),
        (cells[1], "external calibration slope", cal.get("slope")),
        (cells[2], "external sensitivity", at.get("sensitivity")),
        (cells[3], "external specificity", at.get("specificity")),
    ):
        cell.metric(
            name,
            metric_value(ext.value_of(entry)),
            help=f"95% CI {ext.ci_text(entry)}"
            + (
                ""
                if "calibration" in name
                else f"; at the run's threshold {cut['run_threshold']:.3f}"
            ),
        )
    st.dataframe(ext.calibration_table(report), hide_index=True, key="external_calibration")
    st.caption(
        f"{cal.get('reading', '')}. Threshold {cut['run_threshold']:.3f} (the run's); "
        f"{cut['target']:.0%} sensitivity here would need {cut['threshold_here']:.3f}."
    )


def _external_case_mix(mix: dict[str, Any]) -> None:
    st.subheader("Case mix")
    table = ext.case_mix_table({"case_mix": mix})
    if table.empty:
        st.caption("The model has no tabular inputs to compare.")
        return
    st.dataframe(table, hide_index=True, key="external_case_mix")
    notes = [mix.get("rule", "")]
    if mix.get("absent_inputs"):
        notes.append(f"Inputs absent here (scored as missing): {', '.join(mix['absent_inputs'])}")
    if mix.get("large_shifts"):
        notes.append(f"Large shifts: {', '.join(mix['large_shifts'])}")
    st.caption(". ".join(n for n in notes if n) + ".")


def _recalibration(recal: dict[str, Any], folder: Path) -> None:
    st.subheader("Logistic recalibration on a held-out part")
    split, held = recal["split"], recal["held_out"]
    coef = recal["coefficients"]
    st.markdown(
        f"{ext.part_sizes(recal).capitalize()} (the fitting part: {recal['fraction']:.0%} of "
        f"the scored patients, split by patient, stratified by label, with the run's seed "
        f"{split['seed']}). Recalibrated risk: logit = {coef['intercept']:.3f} + "
        f"{coef['slope']:.3f} × logit(risk). The fitting patients: `{folder / split['ids_file']}`."
    )
    st.dataframe(ext.recalibration_table(recal), hide_index=True, key="external_recalibration")
    discrimination = held["discrimination"]
    cut = held["threshold_for_target_sensitivity"]
    st.caption(
        f"ROC AUC on the held-out part {metric_value(ext.value_of(discrimination['roc_auc']))} "
        f"({ext.ci_text(discrimination['roc_auc'])}): {discrimination['note']}. For "
        f"{cut['target']:.0%} sensitivity after recalibration the threshold is "
        f"{cut['chosen_on_fitting_part']:.3f} (chosen on the fitting part): sensitivity "
        f"{metric_value(ext.value_of(cut['sensitivity']))} "
        f"({ext.ci_text(cut['sensitivity'])}), specificity "
        f"{metric_value(ext.value_of(cut['specificity']))} ({ext.ci_text(cut['specificity'])}) "
        "on the held-out part."
    )
    rows = _frame(str(folder), _stamp(folder, ext.RECALIBRATION), "recalibration")
    if rows is not None:
        rest = rows[rows["part"] == "held out"]
        y = rest["label"].to_numpy(dtype="float64")
        figure = figures.calibration_figure(
            {
                "before": (y, rest["risk"].to_numpy(dtype="float64")),
                "after recalibration": (y, rest["risk_recalibrated"].to_numpy(dtype="float64")),
            }
        )
        figure.update_layout(title=f"Held-out {len(rest)} patients, before and after")
        st.plotly_chart(figure, key="external_recalibration_figure")
        st.caption("Held-out part only: the patients the recalibration was not fitted on.")


def main() -> None:
    st.title("Performance")
    run = context.require_run()
    external = ext.report_folders(run)
    if external:
        st.caption(
            f"External validation on {len(external)} other "
            f"{'cohort' if len(external) == 1 else 'cohorts'} "
            f"({', '.join(f.name for f in external)}): at the bottom of this page, beside the "
            "internal figures."
        )
    result = context.evaluation(run)
    predictions = context.test_predictions(run)
    if result is None or predictions is None:
        not_evaluated(run)
        external_section(run, None, None)
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
    st.caption(f"from {Run(run).evaluation_folder}")
    external_section(run, result, predictions)


main()
