"""Predict: a new patient's labs (units shown, the run's plausible ranges checked as typed, a
categorical input chosen from the run's categories; or filled from a FHIR Bundle or NDJSON
upload, whose patients can also all be scored at once) and images (type and size checked) →
prediction and explanation. The values and the images are read by ``Cohort.from_frames`` (the
checks and load report of a file read); the images are written to a private temporary folder
(image readers take paths) that is deleted after the prediction unless "keep" is ticked, when
the values entered are saved beside them."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboards import analysis, context, uploads, widgets
from deeppcos.exceptions import DeepPCOSError
from deeppcos.runs.csvsafe import csv_text

RESULT_KEY = "predict_result"
FHIR_SCORES_KEY = "predict_fhir_scores_result"
COLUMNS = 3
FLAG_OPTIONS = (None, 0.0, 1.0)


def _flag_text(value: float | None) -> str:
    return {None: "not recorded", 0.0: "no", 1.0: "yes"}[value]


def lab_input(
    name: str, pcos: bool = True, categories: list[str] | None = None
) -> float | str | None:
    """One input with its unit; a warning under it when outside the plausible range (the one
    the run's kind of cohort uses); a categorical input is chosen from the run's categories."""
    from deeppcos.explain.wording import feature_label
    from deeppcos.knowledge.catalog import CATALOG

    feature = CATALOG.get(name)
    unit = analysis.unit_of(name)
    label = feature_label(name) + (f" ({unit})" if unit else "")
    plausible = analysis.range_text(name, pcos)
    help_text = (
        feature.description
        + (f". Plausible {plausible}" if plausible else "")
        + (f"; typical: {feature.typical}" if feature.typical else "")
        if feature is not None
        else name
    )
    if categories is not None:
        return st.selectbox(
            label,
            [None, *categories],
            format_func=lambda v: "not recorded" if v is None else str(v),
            key=f"lab-{name}",
            help=f"{help_text}. The categories the model was trained on.",
        )
    if feature is not None and feature.kind == "binary":
        return st.selectbox(
            label, FLAG_OPTIONS, format_func=_flag_text, key=f"lab-{name}", help=help_text
        )
    value = st.number_input(
        label,
        value=None,
        step=0.1,
        format="%g",
        key=f"lab-{name}",
        help=help_text,
        placeholder="not measured",
    )
    warning = analysis.range_warning(name, value, pcos)
    if warning:
        st.warning(warning)
    return value


def lab_form(
    features: list[str], pcos: bool, categories: dict[str, list[str]]
) -> dict[str, float | str | None]:
    st.subheader("Laboratory values and history" if pcos else "Tabular data")
    st.caption(
        "Leave a field empty when it was not measured; missing values are allowed. Computed "
        "features (BMI, ratios, HOMA-IR, FAI) follow from their parts."
    )
    values: dict[str, float | str | None] = {}
    columns = st.columns(COLUMNS)
    for k, name in enumerate(features):
        with columns[k % COLUMNS]:
            values[name] = lab_input(name, pcos, categories.get(name))
    return values


def fhir_input(predictor: Any, features: list[str], categories: dict[str, list[str]]) -> None:
    """A FHIR R4 Bundle (.json) or NDJSON export: every patient in it scored with the run's
    predictor, or one patient's values filling the form (and the id), as read (units converted),
    ready to check, predict and explain. What reading left out or changed is shown, not hidden."""
    from deeppcos.knowledge.catalog import CATALOG

    upload = st.file_uploader(
        "Or read FHIR R4: a Bundle (.json) or an NDJSON export of Patient and Observation "
        "resources — score every patient in it, or fill the form with one",
        type=["json", "ndjson"],
        key="predict_fhir",
    )
    if upload is None:
        return
    try:
        read = uploads.read_fhir_upload(
            upload.name, upload.getvalue(), predictor.input_ranges(list(CATALOG))
        )
    except DeepPCOSError as exc:
        st.error(f"{upload.name}: {exc}")
        return
    ids = read.patients["patient_id"].astype(str).tolist()
    problems = uploads.report_table(read.report, problems_only=True)
    st.caption(
        f"{upload.name}: {len(ids)} patient(s); {len(read.report)} report entries (units "
        f"converted, codes not read, …), {len(problems)} of them a value left out or changed."
    )
    if len(problems):
        st.warning(
            f"Reading {upload.name} left out or changed {len(problems)} value(s) or line(s); "
            "each is listed here. Check them before trusting a score."
        )
        st.dataframe(
            problems[["level", "message", "row", "column", "found"]],
            hide_index=True,
        )
    with st.expander("Everything reading the upload did"):
        st.dataframe(uploads.report_table(read.report), hide_index=True)
    _fhir_scores(predictor, read, upload)
    chosen = st.selectbox("Patient in the upload", ids, key="predict_fhir_patient")
    row = read.patients.set_index(read.patients["patient_id"].astype(str)).loc[chosen]
    found = [n for n in features if n in row and row[n] == row[n]]
    st.caption(
        f"{len(found)} of the model's {len(features)} inputs are in the upload for {chosen}."
    )
    if st.button("Fill the form", key="predict_fhir_fill"):
        st.session_state["predict_id"] = chosen
        for name in features:
            if name in categories:
                continue  # FHIR Observations carry quantities; a category is chosen by hand
            value = row.get(name)
            st.session_state[f"lab-{name}"] = (
                None if value is None or value != value else float(value)
            )
        st.rerun()


def _fhir_scores(predictor: Any, read: Any, upload: Any) -> None:
    """The button scoring every patient of the upload, and its table (kept across reruns for
    this run and this upload)."""
    signature = (str(predictor.run), upload.file_id)
    if st.button(
        f"Score every patient in the upload ({len(read.patients)})", key="predict_fhir_score"
    ):
        try:
            with st.spinner("Scoring…"):
                scored, added = uploads.score_fhir(predictor, read)
        except DeepPCOSError as exc:
            st.error(f"No scores: {exc}")
            return
        st.session_state[FHIR_SCORES_KEY] = (signature, scored, added)
    stored = st.session_state.get(FHIR_SCORES_KEY)
    if stored is None or stored[0] != signature:
        return
    _, scored, added = stored
    flagged = int(scored["decision"].fillna(False).sum())
    st.caption(
        f"{len(scored)} patient(s) scored with this run's predictor; {flagged} flagged (risk at "
        f"or above the run's threshold, {predictor.threshold:.1%})."
    )
    shown = [c for c in ("patient_id", "risk", "decision", "modalities", "severity") if c in scored]
    st.dataframe(
        scored[shown],
        hide_index=True,
        column_config={"risk": st.column_config.NumberColumn("risk", format="percent")},
    )
    st.download_button(
        "Download the scores (CSV)",
        csv_text(scored, index=False),
        file_name=f"{upload.name.rsplit('.', 1)[0]}-scores.csv",
        mime="text/csv",
        key="predict_fhir_download",
    )
    for entry in added:
        if entry.level in ("warning", "excluded", "error"):
            st.warning(entry.message)
        else:
            st.caption(entry.message)


def image_input(words: Any) -> list[uploads.Upload]:
    st.subheader(words.images_title)
    files = st.file_uploader(
        ("One image per ovary" if words.pcos else "Images")
        + f" (PNG, JPEG, BMP, TIFF or DICOM; at most {uploads.MAX_UPLOAD_MB} MB each)",
        type=uploads.UPLOAD_TYPES,
        accept_multiple_files=True,
        key="predict_images",
    )
    chosen = [uploads.Upload(f.name, f.getvalue()) for f in files or []]
    for upload in chosen:
        try:
            uploads.check_upload(upload)
        except DeepPCOSError as exc:
            st.error(str(exc))
    return chosen


def predict(
    run: str, predictor: Any, patient_id: str, values: dict, images: list, keep: bool
) -> None:
    features = list(values)
    entered = {k: v for k, v in values.items() if v is not None}
    if not entered and not images:
        st.error("Enter at least one laboratory value or upload an image.")
        return
    table = analysis.patient_table(patient_id, values, features) if features or entered else None
    try:
        patient = uploads.write_patient(patient_id, table, images)
    except DeepPCOSError as exc:
        st.error(str(exc))
        return
    try:
        with st.spinner("Predicting and explaining…"):
            st.session_state[RESULT_KEY] = (run, uploads.explain_new(predictor, patient))
    except DeepPCOSError as exc:
        st.error(f"No prediction: {exc}")
    finally:
        if keep:
            st.info(f"The uploaded files are kept in {patient.keep()}.")
        else:
            patient.remove()


def main() -> None:
    st.title("Predict a new patient")
    run = context.require_run()
    predictor = context.predictor(run)
    from deeppcos.explain.wording import run_words

    words = run_words(run)
    tabular = predictor.branches.get("tabular")
    features = analysis.form_features(tabular.feature_names_) if tabular is not None else []
    categories: dict[str, list[str]] = dict(getattr(tabular, "categories_", {}))
    if features:
        fhir_input(predictor, features, categories)
    if "predict_id" not in st.session_state:
        st.session_state["predict_id"] = "new-1"
    patient_id = st.columns(3)[0].text_input("Patient id", key="predict_id")
    values = lab_form(features, words.pcos, categories) if features else {}
    if not features:
        st.caption("This run has no tabular branch: the prediction uses the images alone.")
    images = image_input(words) if "image" in predictor.branches else []
    if "image" not in predictor.branches:
        st.caption(f"This run has no image branch: the prediction uses the {words.table} alone.")
    keep = st.checkbox(
        "Keep the uploaded files after the prediction (they are deleted otherwise)",
        key="predict_keep",
    )
    if st.button("Predict", type="primary", key="predict_go"):
        predict(str(run), predictor, patient_id, values, images, keep)
    shown_run, result = st.session_state.get(RESULT_KEY, (None, None))
    if result is not None and shown_run == str(run):
        st.divider()
        st.header(f"Patient {result.patient_id}")
        widgets.show_explanation(result, key="predict")


main()
