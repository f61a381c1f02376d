"""Predict: a new patient's labs (units shown, plausible ranges checked as typed) and ultrasound
images (type and size checked) → prediction and explanation. Uploads are written to a temporary
folder that is deleted after the prediction unless "keep" is ticked."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboards import analysis, context, uploads, widgets
from deeppcos.exceptions import DeepPCOSError

RESULT_KEY = "predict_result"
COLUMNS = 3
FLAG_OPTIONS = (None, 0.0, 1.0)


def _flag_text(value: float | None) -> str:
    return {None: "not recorded", 0.0: "no", 1.0: "yes"}[value]


def lab_input(name: str) -> float | None:
    """One lab's input with its unit; a warning under it when outside the plausible range."""
    from deeppcos.data.catalog import CATALOG
    from deeppcos.explain.wording import feature_label

    feature = CATALOG.get(name)
    unit = analysis.unit_of(name)
    label = feature_label(name) + (f" ({unit})" if unit else "")
    help_text = (
        f"{feature.description}. Plausible {analysis.range_text(name)}"
        + (f"; typical: {feature.typical}" if feature.typical else "")
        if feature is not None
        else name
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
    warning = analysis.range_warning(name, value)
    if warning:
        st.warning(warning)
    return value


def lab_form(features: list[str]) -> dict[str, float | None]:
    st.subheader("Laboratory values and history")
    st.caption(
        "Leave a field empty when it was not measured; missing values are allowed. Computed "
        "features (BMI, ratios, HOMA-IR, FAI) follow from their parts."
    )
    values: dict[str, float | None] = {}
    columns = st.columns(COLUMNS)
    for k, name in enumerate(features):
        with columns[k % COLUMNS]:
            values[name] = lab_input(name)
    return values


def image_input() -> list[uploads.Upload]:
    st.subheader("Ultrasound images")
    files = st.file_uploader(
        f"One image per ovary (PNG, JPEG, BMP, TIFF or DICOM; at most {uploads.MAX_UPLOAD_MB} MB "
        "each)",
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
            st.info(f"The uploaded files are kept in {patient.folder}.")
        else:
            patient.remove()


def main() -> None:
    st.title("Predict a new patient")
    run = context.require_run()
    predictor = context.predictor(run)
    tabular = predictor.branches.get("tabular")
    features = analysis.form_features(tabular.feature_names_) if tabular is not None else []
    patient_id = st.columns(3)[0].text_input("Patient id", value="new-1", key="predict_id")
    values = lab_form(features) if features else {}
    if not features:
        st.caption("This run has no tabular branch: the prediction uses the images alone.")
    images = image_input() if "image" in predictor.branches else []
    if "image" not in predictor.branches:
        st.caption("This run has no image branch: the prediction uses the labs alone.")
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
