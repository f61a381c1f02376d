"""Patient: find one by id or by kind of error on the locked test part (false negatives first),
then read the explanation: prediction, calibrated risk, decision, severity, the score's
waterfall, Grad-CAM overlays, modality shares, the criteria checklist (a PCOS cohort only) and
the HTML report.

The page speaks the cohort's own words (``expl.words``: its label, 'cardiomegaly', and its
images, 'chest X-ray images'), as the HTML report does; under intermediate fusion it says in
words that the images' share is their part inside one model, not the image model's opinion.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from dashboards import analysis, context, widgets

if TYPE_CHECKING:
    from deeppcos.explain.wording import CohortWords

PATIENT_KEY = context.PATIENT_KEY
BY_KIND, BY_ID = "kind of error (locked test part)", "patient id"


def by_kind(predictions: pd.DataFrame, label: str = "PCOS") -> str | None:
    kinds = analysis.patients_by_kind(predictions)
    options = [k for k in analysis.ERROR_KINDS if len(kinds[k])]
    if not options:
        st.info("No scored test patient.")
        return None
    kind = st.selectbox(
        "Kind",
        options,
        format_func=lambda k: f"{k}s ({len(kinds[k])})",
        key="patient_kind",
        help=f"False negatives first: the {label} the model missed, lowest risk first.",
    )
    table = kinds[kind]
    labels = {
        pid: f"{pid} · risk {widgets.percent(risk)}"
        for pid, risk in zip(table["patient_id"], table["risk"], strict=True)
    }
    return st.selectbox(
        f"Patient ({len(table)} {kind}s)",
        list(labels),
        format_func=labels.__getitem__,
        key="patient_in_kind",
    )


def by_id(ids: list[str]) -> str | None:
    current = st.session_state.get(PATIENT_KEY)
    index = ids.index(current) if current in ids else None
    return st.selectbox(
        f"Patient id ({len(ids)} patients; type to search)",
        ids,
        index=index,
        placeholder="type an id",
        key="patient_by_id",
    )


def choose(run: Path, ids: list[str], label: str = "PCOS") -> str | None:
    predictions = context.test_predictions(run)
    modes = [BY_KIND, BY_ID] if predictions is not None else [BY_ID]
    mode = st.radio("Find a patient by", modes, horizontal=True, key="patient_mode")
    if predictions is None:
        st.caption(f"Error kinds need the locked test part scored: `deeppcos evaluate {run}`.")
    chosen = by_kind(predictions, label) if mode == BY_KIND else by_id(ids)
    if chosen is not None:
        st.session_state[PATIENT_KEY] = str(chosen)
    return chosen


def truth(patient_id: str, cohort: Any, words: CohortWords | None = None) -> None:
    patients = cohort.patients
    row = patients[patients["patient_id"].astype(str) == patient_id]
    if row.empty or "label" not in row or pd.isna(row["label"].iloc[0]):
        return
    label = int(row["label"].iloc[0])
    if words is None:
        name = cohort.spec.label_name
        st.caption(f"Recorded label: **{name if label else 'no ' + name}**.")
        return
    st.caption(f"Recorded label: **{words.label if label else words.no_label}**.")


def main() -> None:
    from deeppcos.explain.wording import run_words

    st.title("Patient")
    run = context.require_run()
    context.predictor(run)  # a run whose models do not load stops here, with the reason
    cohort = context.cohort(run)
    words = run_words(run, cohort.spec)
    ids = cohort.patients["patient_id"].astype(str).tolist()
    patient_id = choose(run, ids, words.label)
    if patient_id is None:
        st.info("Choose a patient to see her explanation.")
        st.stop()
    st.header(f"Patient {patient_id}")
    truth(patient_id, cohort, words)
    expl = context.explanation(run, patient_id)
    if expl is None:
        st.stop()
    widgets.show_explanation(expl, key=f"patient-{patient_id}")
    st.page_link(
        "views/feedback.py",
        label="Agree or disagree with this prediction",
        icon=":material/rate_review:",
    )


main()
