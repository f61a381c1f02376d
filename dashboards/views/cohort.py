"""Cohort: size, labels, feature distributions by label, missingness, correlations, the audit's
findings and an image gallery, in the cohort's own words (its label, its kind of images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import analysis, context, figures, runinfo
from deeppcos.runs.reader import Run

THUMBNAIL = 160
PER_PAGE = 12
SEVERITY_ORDER = {"high": 0, "warning": 1, "info": 2, "ok": 3}


@st.cache_data(show_spinner=False, max_entries=2048)
def thumbnail(path: str, frame: Any) -> bytes | None:
    """A small PNG of one image (cached: the gallery never decodes an image twice)."""
    import cv2

    from deeppcos.data.imageio import read_image, to_gray_uint8
    from deeppcos.explain.saliency import encode_png

    try:
        pixels = read_image(path, frame)
    except Exception:  # a broken file shows as missing, the audit names it
        return None
    if pixels.dtype != "uint8":
        pixels = to_gray_uint8(pixels)
    scale = THUMBNAIL / max(pixels.shape[:2])
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    return encode_png(cv2.resize(pixels, size, interpolation=cv2.INTER_AREA))


@st.cache_data(show_spinner=False, max_entries=8)
def _correlations(run: str, stamp: int, _patients: pd.DataFrame, features: tuple) -> pd.DataFrame:
    return analysis.correlations(_patients, features)


@st.cache_data(show_spinner="Auditing the cohort (duplicates, shortcuts, leakage)…", max_entries=4)
def _run_audit(run: str, stamp: int) -> dict[str, Any]:
    from deeppcos.audit.checks import audit_cohort

    data = context.cohort(Path(run))
    seed = int(context.record(Path(run)).get("seed", 0) or 0)
    return audit_cohort(data, seed=seed).to_dict()


def _words(cohort: Any, run: Path | None = None) -> Any:
    from deeppcos.explain.wording import CohortWords, run_words

    return run_words(run, cohort.spec) if run is not None else CohortWords.from_spec(cohort.spec)


def overview(cohort: Any, run: Path) -> None:
    patients = cohort.patients
    words = _words(cohort, run)
    label_name = words.label
    labelled = patients["label"].notna() if "label" in patients else pd.Series(False)
    cells = st.columns(5)
    cells[0].metric("Patients", f"{len(patients):,}")
    cells[1].metric("Images", f"{len(cohort.images):,}")
    cells[2].metric("Labelled", f"{int(labelled.sum()):,}")
    positives = int((patients["label"] == 1).sum()) if "label" in patients else 0
    cells[3].metric(label_name, f"{positives:,}")
    rate = positives / max(int(labelled.sum()), 1)
    cells[4].metric(f"{label_name} rate", f"{rate:.1%}")
    st.caption(
        f"cohort **{cohort.spec.name}** · {len(cohort.feature_columns)} tabular features · "
        f"{words.images}"
    )
    left, right = st.columns(2)
    with left:
        counts = analysis.label_counts(patients, label_name)
        colours = [
            figures.RAISE
            if v == label_name
            else figures.LOWER
            if v.startswith("no ")
            else figures.GREY
            for v in counts["label"]
        ]
        st.plotly_chart(
            figures.bar_figure(counts, "label", "patients", "Labels", colours), key="labels"
        )
    with right:
        table = analysis.severity_counts(patients)
        if table.empty:
            st.caption("No severity grades in this cohort.")
        else:
            st.plotly_chart(
                figures.bar_figure(table, "grade", "patients", "Severity grades"), key="grades"
            )


def distributions(cohort: Any) -> None:
    st.subheader("Distributions by label")
    features = list(cohort.feature_columns)
    if not features:
        st.caption("This cohort has no tabular features.")
        return
    feature = st.selectbox("Feature", features, key="cohort_feature")
    label_name = _words(cohort).label
    st.plotly_chart(
        figures.distribution_figure(cohort.patients, feature, label_name), key="distribution"
    )
    from deeppcos.knowledge.catalog import CATALOG

    entry = CATALOG.get(feature)
    if entry is not None:
        plausible = analysis.range_text(feature, _words(cohort).pcos)
        st.caption(
            f"{entry.description} · unit {analysis.unit_of(feature) or '–'}"
            + (f" · plausible {plausible}" if plausible else "")
            # The catalog's typical ranges describe women of reproductive age: PCOS cohorts only.
            + (f" · typical: {entry.typical}" if entry.typical and _words(cohort).pcos else "")
        )


def missing_and_correlations(cohort: Any, run: Path) -> None:
    features = list(cohort.feature_columns)
    if not features:
        return
    left, right = st.columns(2)
    with left:
        st.subheader("Missing values")
        table = analysis.missingness(cohort.patients, features)
        if (table["missing"] > 0).any():
            st.plotly_chart(figures.missingness_figure(table), key="missing")
        else:
            st.caption("No missing values.")
    with right:
        st.subheader("Correlations")
        matrix = _correlations(
            str(run), runinfo.stamp(Run(run).record_file), cohort.patients, tuple(features)
        )
        if matrix.empty:
            st.caption("Too few complete features to correlate.")
        else:
            st.plotly_chart(figures.correlation_figure(matrix), key="correlations")


def audit_section(run: Path) -> None:
    st.subheader("Audit: duplicates, shortcuts, leakage")
    stored = runinfo.audit_file(run)
    requested = st.session_state.get("audit_requested") == str(run)
    if stored is not None:
        result = json.loads(stored.read_text(encoding="utf-8"))
        st.caption(f"from {stored}")
    elif requested:
        result = _run_audit(str(run), runinfo.stamp(Run(run).record_file))
    else:
        st.caption(f"No audit.json beside this run ({run.parent}).")
        if st.button("Run the audit", key="run_audit"):
            st.session_state["audit_requested"] = str(run)
            st.rerun()
        return
    findings(result)


def findings(result: dict[str, Any]) -> None:
    counts = result.get("counts", {})
    st.markdown(
        f"Worst finding: **{result.get('worst_severity', '?')}** · "
        + " · ".join(f"{k}: {v}" for k, v in counts.items())
    )
    rows = sorted(result.get("findings", []), key=lambda f: SEVERITY_ORDER.get(f["severity"], 9))
    table = pd.DataFrame(
        [{"severity": f["severity"], "check": f["check"], "finding": f["title"]} for f in rows]
    )
    st.dataframe(table, hide_index=True, key="findings")
    for f in rows:
        if f["severity"] in ("high", "warning"):
            with st.expander(f"{f['severity']}: {f['title']}"):
                st.markdown(f["detail"])


def gallery(cohort: Any, run: Path | None = None) -> None:
    words = _words(cohort, run)
    st.subheader("Image gallery")
    if cohort.images.empty:
        st.caption("This cohort has no images.")
        return
    st.caption(words.images_title)
    patients = cohort.patients
    cells = st.columns(3)
    labels = cells[0].multiselect(
        "Label",
        [1, 0],
        format_func=lambda v: words.label if v else words.no_label,
        key="gallery_labels",
    )
    sides = _options(cohort.images, "side")
    chosen_sides = cells[1].multiselect("Side", sides, key="gallery_sides") if sides else []
    groups = _options(patients, "group")
    chosen_groups = cells[2].multiselect("Site", groups, key="gallery_groups") if groups else []
    rows = analysis.gallery_rows(cohort.images, patients, labels, chosen_sides, chosen_groups)
    pages = max(1, -(-len(rows) // PER_PAGE))
    page = st.columns(4)[0].number_input(
        f"Page (of {pages}; {len(rows)} images)", 1, pages, 1, key="gallery_page"
    )
    _thumbnails(rows.iloc[(page - 1) * PER_PAGE : page * PER_PAGE], words)


def _options(table: pd.DataFrame, column: str) -> list[str]:
    if column not in table or table[column].isna().all():
        return []
    return sorted(table[column].dropna().astype(str).unique())


def _thumbnails(rows: pd.DataFrame, words: Any) -> None:
    columns = st.columns(6)
    for k, (_, row) in enumerate(rows.iterrows()):
        data = thumbnail(str(row["path"]), row.get("frame"))
        label = row.get("label")
        text = "unlabelled" if pd.isna(label) else (words.label if label == 1 else words.no_label)
        side = row.get("side")
        caption = f"{row['patient_id']} · {text}" + (f" · {side}" if pd.notna(side) else "")
        with columns[k % 6]:
            if data is None:
                st.caption(f"unreadable: {row['patient_id']}")
            else:
                st.image(data, caption=caption)


def main() -> None:
    st.title("Cohort")
    run = context.require_run()
    cohort = context.cohort(run, stop=False)
    if cohort is None:
        summary = context.stored_json(Run(run).cohort_file)
        if summary:
            st.markdown("The summary training stored (`cohort.json`):")
            st.json(summary, expanded=False)
        st.stop()
    overview(cohort, run)
    distributions(cohort)
    missing_and_correlations(cohort, run)
    audit_section(run)
    gallery(cohort, run)


main()
