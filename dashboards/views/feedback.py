"""Feedback: a clinician agrees or disagrees with a prediction, says why (and, disagreeing, what
the label should be), signed with their name. Entries go to the run's append-only SQLite log
beside the run (``deeppcos.runs.feedback``); ``deeppcos train --label-corrections LOG`` can learn
from them, opt-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import context, runinfo, widgets
from deeppcos.exceptions import DeepPCOSError
from deeppcos.runs.csvsafe import csv_text
from deeppcos.runs.feedback import FeedbackEntry, FeedbackLog, feedback_path
from deeppcos.runs.reader import Run

AGREE, DISAGREE = "I agree with the prediction", "I disagree"
USER_KEY = "feedback_user"
PATIENT_KEY = context.PATIENT_KEY


def choose_patient(predictions: pd.DataFrame) -> pd.Series:
    ids = predictions["patient_id"].astype(str).tolist()
    current = st.session_state.get(PATIENT_KEY)
    index = ids.index(current) if current in ids else 0
    labels = {
        pid: f"{pid} · risk {widgets.percent(risk)} · {widgets.call_text(decision)}"
        for pid, risk, decision in zip(
            ids, predictions["risk"], predictions["decision"], strict=True
        )
    }
    chosen = st.selectbox(
        "Patient (locked test part)",
        ids,
        index=index,
        format_func=labels.__getitem__,
        key="feedback_patient",
    )
    st.session_state[PATIENT_KEY] = chosen
    row = predictions[predictions["patient_id"].astype(str) == chosen].iloc[0]
    label = row.get("label")
    recorded = "unlabelled" if pd.isna(label) else ("positive" if int(label) else "negative")
    st.caption(
        f"Calibrated risk {widgets.percent(row.get('risk'))}, "
        f"{widgets.call_text(row.get('decision'))}; recorded label: {recorded}. "
        "The Patient page explains this prediction."
    )
    return row


def entry_form(run_id: str, row: pd.Series, label_name: str) -> FeedbackEntry | None:
    """The form; an entry when it was submitted (checked by ``FeedbackEntry.check``)."""
    user = st.text_input("Your name", key=USER_KEY)
    with st.form("feedback_form", clear_on_submit=True):
        verdict = st.radio("Your verdict", [AGREE, DISAGREE], key="feedback_verdict")
        corrected = st.selectbox(
            "If you disagree: the label you believe is right",
            [None, 1, 0],
            format_func=lambda v: "–" if v is None else (label_name if v else f"no {label_name}"),
            key="feedback_label",
        )
        reason = st.text_area("Reason (required when you disagree)", key="feedback_reason")
        if not st.form_submit_button("Save feedback"):
            return None
    agrees = verdict == AGREE
    decision = row.get("decision")
    return FeedbackEntry(
        run_id=run_id,
        patient_id=str(row["patient_id"]),
        user_name=user,
        agrees=agrees,
        reason=reason,
        corrected_label=None if agrees or corrected is None else int(corrected),
        risk=None if pd.isna(row.get("risk")) else float(row["risk"]),
        decision=None if pd.isna(decision) else bool(decision),
    )


def save(log: FeedbackLog, entry: FeedbackEntry) -> None:
    try:
        number = log.append(entry)
    except DeepPCOSError as exc:
        st.error(f"Not saved: {exc}")
        return
    st.success(
        f"Saved as entry {number} by {entry.user_name.strip()} for patient {entry.patient_id}."
    )


def entries(log: FeedbackLog) -> None:
    st.subheader("Entries")
    try:
        table = log.read()
    except DeepPCOSError as exc:
        st.error(str(exc))
        return
    if table.empty:
        st.caption(f"No feedback yet ({log.path} is created by the first entry).")
        return
    st.dataframe(table.iloc[::-1], hide_index=True, key="feedback_table")
    st.download_button(
        "Download as CSV",
        data=csv_text(table, index=False),
        file_name=f"{log.path.stem}.csv",
        mime="text/csv",
        key="feedback_csv",
        on_click="ignore",
    )
    corrections = log.label_corrections()
    st.caption(
        f"{len(table)} entries; {len(corrections)} patients would get a corrected label "
        "(each patient's latest entry decides)."
    )


def how_training_uses_it(run: Path, config: Any) -> None:
    with st.expander("How training can learn from this feedback (opt-in)", expanded=False):
        st.markdown(
            "Nothing changes by itself. To retrain with reviewers' corrections, pass the log to "
            "`deeppcos train`: each patient's **latest** entry with a corrected label replaces "
            "the cohort's label before the split (a later agreeing entry withdraws a "
            "correction), and the new run records which patients changed "
            "(`label_corrections.csv`). Entries are never edited or deleted: a change of mind "
            "is a new entry."
        )
        st.code(
            f"deeppcos train --config {config} --out {run.parent / (run.name + '-reviewed')} "
            f"--label-corrections {feedback_path(run)}",
            language="bash",
        )


def main() -> None:
    st.title("Feedback")
    run = context.require_run()
    log = FeedbackLog(feedback_path(run))
    st.caption(f"log: {log.path} (append-only)")
    predictions = context.test_predictions(run)
    if predictions is None:
        context.explain_evaluate(run)
    else:
        row = choose_patient(predictions)
        summary = context.stored_json(Run(run).cohort_file) or {}
        entry = entry_form(
            runinfo.run_id(context.record(run)), row, summary.get("label_name", "pcos")
        )
        if entry is not None:
            save(log, entry)
    entries(log)
    how_training_uses_it(run, Run(run).config_file)


main()
