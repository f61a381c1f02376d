"""Pieces several pages share: one patient's explanation, metric cards, tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from dashboards import figures

if TYPE_CHECKING:
    from deeppcos.explain.patient import PatientExplanation


def percent(value: float | None) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:.1f}%"


def call_text(decision: Any) -> str:
    """A stored decision in words (True, False, numpy booleans or missing)."""
    if decision is None or pd.isna(decision):
        return "no call"
    return "flagged" if bool(decision) else "not flagged"


def decision_text(expl: PatientExplanation) -> str:
    decision = expl.prediction.get("decision")
    if decision is None:
        return "no prediction"
    return "flagged" if decision else "not flagged"


def show_explanation(expl: PatientExplanation, key: str) -> None:
    """Prediction, score waterfall, modality shares, Grad-CAM overlays, the criteria checklist
    (a PCOS cohort only) and the HTML report to download, in the cohort's words."""
    words = expl.words
    _summary(expl)
    if expl.logit is None:
        st.info(f"Neither {words.table} nor images: there is no prediction to explain.")
        return
    if expl.fusion_note and "ultrasound" in expl.shares:
        st.info(expl.fusion_note)
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(figures.waterfall_figure(expl), key=f"{key}-waterfall")
    with right:
        _shares(expl, key)
    _top_features(expl)
    _images(expl)
    if words.pcos:
        _criteria(expl)
    _report(expl, key)
    with st.expander("Caveats"):
        for caveat in expl.caveats:
            st.markdown(f"- {caveat}")


def _summary(expl: PatientExplanation) -> None:
    from deeppcos.explain.report import branch_estimates

    p = expl.prediction
    cells = st.columns(4)
    cells[0].metric(
        "Calibrated risk",
        percent(p.get("risk")),
        help=f"probability of {expl.words.label} after calibration",
    )
    cells[1].metric(
        "Decision",
        decision_text(expl),
        help=f"flagged = risk at or above the run's threshold "
        f"{percent(p.get('threshold'))}: look closer for {expl.words.label}",
    )
    severity = expl.severity_summary()
    cells[2].metric(
        "Severity grade",
        severity[0] if severity else "–",
        help=severity[1] if severity else None,
    )
    cells[3].metric("Modalities used", expl.modalities)
    parts = [
        f"Scored from {expl.modality_summary()}",
        f"score before calibration {percent(p.get('probability'))}",
    ]
    estimates = branch_estimates(expl, percent)
    if estimates:
        parts.append(estimates)
    if severity:
        parts.append(f"severity: {severity[1]}")
    st.caption(" · ".join(parts))
    part = {
        "development": "This patient was in the run's development data: the score is in-sample.",
        "test": "This patient is in the run's locked test part (never trained on).",
        "label_noise": "This patient was set aside as label noise (never trained on; her "
        "recorded label is unreliable).",
    }.get(expl.in_training_data or "")
    if part:
        st.caption(part)


def _shares(expl: PatientExplanation, key: str) -> None:
    """The shares of the modalities she has; with one, a sentence instead of a lone bar."""
    s, words = expl.shares, expl.words
    if "ultrasound" not in s or "tabular" not in s:
        st.caption(f"Scored from {expl.modality_summary()}.")
        return
    st.plotly_chart(figures.shares_figure(expl), key=f"{key}-shares")
    fraction = s.get("ultrasound_fraction")
    if fraction is not None and fraction == fraction:
        from deeppcos.explain.fusion import reads_embeddings

        inside = (
            f" Under {expl.fusion_method} fusion both are parts of one model's score."
            if reads_embeddings(expl.fusion_method)
            else ""
        )
        st.caption(
            f"The {words.images} carry {percent(fraction)} of the two modalities' "
            f"contributions.{inside} Risk from the {words.table} alone: "
            f"{percent(s.get('risk_without_ultrasound'))}; from the {words.images} "
            f"alone: {percent(s.get('risk_without_tabular'))} (the run's "
            "single-modality models, calibrated)."
        )


def _images(expl: PatientExplanation) -> None:
    if "image" not in expl.model_card.get("branches", []):
        return  # a run without an image model: nothing to show or to miss
    words = expl.words
    st.subheader(f"Grad-CAM on the {words.images}")
    if not expl.images:
        st.caption(
            f"This patient has no {words.images}."
            if expl.prediction.get("p_image") is None
            else "No image maps were drawn."
        )
        return
    columns = st.columns(min(len(expl.images), 4))
    for column, image in zip(columns, expl.images, strict=False):
        column.image(
            image.overlay_png(max_side=480),
            caption=f"{image.caption}: image model {percent(image.probability)}",
        )
    from deeppcos.explain.fusion import reads_embeddings

    note = (
        f" The maps and percentages are the image model's own; under {expl.fusion_method} "
        "fusion the score reads the images through that model's embedding, together with the "
        "table."
        if reads_embeddings(expl.fusion_method)
        else ""
    )
    st.caption(
        f"Colour marks where the image model found evidence for {words.label} (blue weak, red "
        "strong), at the coarse resolution of its last feature map; burned-in margin text is "
        f"blanked.{note}"
    )


def _criteria(expl: PatientExplanation) -> None:
    """The Rotterdam checklist (shown for a PCOS cohort only)."""
    st.subheader("Rotterdam criteria from the data present")
    checklist = expl.criteria
    if checklist is None:
        st.caption("No tabular data to check the criteria against.")
        return
    from deeppcos.explain.report import GUIDELINE_NAMES

    st.markdown(
        f"Guideline: **{GUIDELINE_NAMES.get(checklist.guideline, checklist.guideline)}** (the "
        f"run's). {checklist.n_met} of 3 criteria met, {checklist.n_known} known: **Rotterdam "
        "criteria "
        f"{checklist.rotterdam_pcos}**"
        + (f" (phenotype {checklist.phenotype})" if checklist.phenotype else "")
    )
    table = pd.DataFrame(
        [
            {
                "criterion": item.title,
                "state": item.state,
                "rule": item.rule,
                "data": "; ".join(item.evidence) or "–",
            }
            for item in checklist.items
        ]
    )
    st.table(table.set_index("criterion"))


def _top_features(expl: PatientExplanation) -> None:
    rows = [
        {
            "feature": f.label,
            "value": f.value_text if f.measured else "not measured (effect of its absence)",
            "typical": f.typical,
            "logit points": f"{f.logit:+.2f}",
            "risk without it": percent(f.risk_without),
        }
        for f in expl.top_features(8)
    ]
    if rows:
        st.markdown("**Largest tabular effects**")
        st.table(pd.DataFrame(rows).set_index("feature"))


def _report(expl: PatientExplanation, key: str) -> None:
    from deeppcos.explain.report import render_html

    st.download_button(
        "Download the HTML report",
        data=_report_html(render_html, expl),
        file_name=f"deeppcos-patient-{expl.patient_id}.html",
        mime="text/html",
        key=f"{key}-report",
        on_click="ignore",
    )


def _report_html(render: Any, expl: PatientExplanation) -> str:
    # Rendering draws two matplotlib figures (closed by the renderer); keep it per explanation.
    cache = st.session_state.setdefault("_reports", {})
    marker = (expl.run, expl.patient_id, expl.created, id(expl))
    if marker not in cache:
        if len(cache) > 16:
            cache.clear()
        cache[marker] = render(expl)
    return cache[marker]


def metric_value(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return f"{value:.{digits}f}"
