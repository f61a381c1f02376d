"""The Cohort: a patients table, an images table, the spec that describes them and the report of
everything loading changed.

Canonical columns
-----------------
``patients``: ``patient_id`` (str, unique), ``label`` (Int8 0/1, may be missing; what it means is
``spec.label_name``), ``severity`` (ordered categorical, optional), ``group`` (optional), then the
feature columns (float64, NaN = missing) listed in ``feature_columns``.

``images``: ``image_id`` (str, unique), ``patient_id``, ``path`` (absolute), ``frame`` (Int64,
DICOM frame or missing), optional ``side``, ``view``, ``label`` (image-level) and acquisition
columns, then what probing found: ``file_format``, ``width``, ``height``, ``channels``,
``bit_depth``, ``color_mode``, ``file_bytes``, ``sha256``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from deeppcos.data.categorical import (
    categorical_columns,
    looks_categorical,
    read_categorical,
    report_inferred,
)
from deeppcos.data.imageio import ImageInfo, probe_image
from deeppcos.data.manifest import IMAGES_FRAME, PATIENTS_FRAME, manifest_images, numbered
from deeppcos.data.report import LoadReport
from deeppcos.data.spec import CohortSpec, ImagesSpec, PatientsSpec
from deeppcos.data.tables import (
    check_ranges,
    coerce_numeric,
    id_text,
    is_plain_number_dtype,
    parse_binary_label,
)
from deeppcos.exceptions import EmptyCohortError, ImageError, SchemaError
from deeppcos.knowledge.catalog import CATALOG, ultrasound_features
from deeppcos.knowledge.ranges import rules_for_spec, rules_to_json

Progress = Callable[[int, int], None]
RowNumbers = Literal["positions", "index"]  # report rows: 1 … n, or the frame's own index

PROBE_COLUMNS = [
    "file_format",
    "width",
    "height",
    "channels",
    "bit_depth",
    "color_mode",
    "file_bytes",
    "sha256",
]
RESERVED_PATIENT_COLUMNS = ("patient_id", "label", "severity", "group")


@dataclass
class Cohort:
    spec: CohortSpec
    patients: pd.DataFrame
    images: pd.DataFrame
    feature_columns: list[str]
    report: LoadReport = field(default_factory=LoadReport)

    @classmethod
    def from_frames(
        cls,
        patients: pd.DataFrame | None = None,
        images: pd.DataFrame | None = None,
        spec: CohortSpec | dict[str, Any] | None = None,
        *,
        source: str | None = None,
        images_source: str | None = None,
        rows: RowNumbers = "positions",
        images_resolved: bool = False,
        report: LoadReport | None = None,
    ) -> Cohort:
        """A cohort from DataFrames, checked and reported exactly as a ``tables`` cohort read
        from files: ``patients`` one row per patient (columns as a CSV would have them: the
        spec's id, label and feature columns, renames, categories, ranges), ``images`` an image
        manifest (``patient_id``, ``path``; relative paths against ``spec.images.root``, else
        the working folder). ``spec`` is a :class:`CohortSpec`, a mapping of its fields, or
        None (canonical names: ``patient_id``, ``pcos``).

        Keyword-only, for callers that read the frames from somewhere (a chunk of a file):

        - ``source`` / ``images_source``: what the load report names as the file of each
          frame's entries (default ``PATIENTS_FRAME`` / ``IMAGES_FRAME``);
        - ``rows``: ``"positions"`` numbers the report's rows 1 … n in each frame (the
          caller's index ignored); ``"index"`` uses each frame's own index, such as a chunk's
          rows in its file;
        - ``images_resolved``: ``images`` is a canonical images table as a manifest reader
          returns it (``image_id``, ``patient_id``, resolved absolute ``path``, ``frame``, …;
          paths already kept inside their allowed roots): used as given, not resolved again.
          The images are still probed, deduplicated and matched to the patients;
        - ``report``: a load report the entries are added to (and the cohort's report), so a
          caller keeps them even when loading fails (an :class:`EmptyCohortError` when every
          row was left out)."""
        if spec is None:
            spec = {"name": "frames", "patients": {}}
        if not isinstance(spec, CohortSpec):
            from deeppcos.data.spec import spec_from_dict

            spec = spec_from_dict(dict(spec))
        return load_frames(
            patients,
            images,
            spec,
            source=source,
            images_source=images_source,
            rows=rows,
            images_resolved=images_resolved,
            report=report,
        )

    @property
    def categorical_columns(self) -> list[str]:
        """The feature columns holding categories (text labels) rather than numbers."""
        return categorical_columns(self.patients, self.feature_columns)

    @property
    def has_labels(self) -> bool:
        return "label" in self.patients and self.patients["label"].notna().any()

    def images_of(self, patient_id: str) -> pd.DataFrame:
        return self.images[self.images["patient_id"] == patient_id]

    def validate(self) -> None:
        """Raise SchemaError if the canonical tables break the cohort's invariants."""
        validate_tables(self.patients, self.images, self.feature_columns)

    def fingerprint(self) -> str:
        """A content hash of the tables and the image bytes (not of where files live)."""
        digest = hashlib.sha256()
        patients = self.patients.sort_values("patient_id").reset_index(drop=True)
        digest.update(patients.to_csv(index=False, lineterminator="\n").encode())
        image_cols = [c for c in ("image_id", "patient_id", "frame", "sha256") if c in self.images]
        images = self.images[image_cols].sort_values("image_id").reset_index(drop=True)
        digest.update(images.to_csv(index=False, lineterminator="\n").encode())
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        return cohort_summary(self)


def validate_tables(patients: pd.DataFrame, images: pd.DataFrame, features: list[str]) -> None:
    if "patient_id" not in patients:
        raise SchemaError("patients table has no 'patient_id' column")
    dupes = patients["patient_id"][patients["patient_id"].duplicated()]
    if len(dupes):
        raise SchemaError(f"duplicate patient ids: {sorted(set(dupes))[:10]}")
    if "label" in patients:
        bad = patients["label"].dropna()
        bad = bad[~bad.isin([0, 1])]
        if len(bad):
            raise SchemaError(f"labels must be 0/1; found {sorted(set(bad))[:5]}")
    missing = [c for c in features if c not in patients]
    if missing:
        raise SchemaError(f"feature columns missing from the patients table: {missing}")
    if len(images):
        orphans = set(images["patient_id"]) - set(patients["patient_id"])
        if orphans:
            raise SchemaError(f"images of unknown patients: {sorted(orphans)[:10]}")
        if images["image_id"].duplicated().any():
            raise SchemaError("duplicate image ids in the images table")
    if patients.empty:
        raise EmptyCohortError("the cohort has no patients")


# --- building the canonical patients table -------------------------------------------------


def build_patients(raw: pd.DataFrame, spec: CohortSpec, report: LoadReport, file: str) -> Cohort:
    """Canonical patients table from a raw one, following ``spec.patients``; images come later."""
    pspec = spec.patients
    assert pspec is not None
    raw = raw.rename(columns=lambda c: c.strip())
    raw = _apply_renames(raw, pspec.rename, report, file)
    _require_columns(raw, [pspec.id_column], file, "id_column")
    for column in pspec.drop_columns:
        if column in raw:
            raw = raw.drop(columns=column)
            report.add(
                "info", "dropped_column", "dropped as the spec asks", file=file, column=column
            )
    raw = _with_clean_ids(raw, pspec.id_column, report, file)
    out = pd.DataFrame({"patient_id": raw[pspec.id_column].astype(str)}, index=raw.index)
    used = {pspec.id_column}
    if pspec.label_column:
        _require_columns(raw, [pspec.label_column], file, "label_column")
        out["label"] = parse_binary_label(raw[pspec.label_column], file, pspec.label_column, report)
        used.add(pspec.label_column)
    if pspec.severity_column:
        _require_columns(raw, [pspec.severity_column], file, "severity_column")
        out["severity"] = parse_severity(
            raw[pspec.severity_column], pspec.severity_levels or [], file, pspec.severity_column
        )
        used.add(pspec.severity_column)
    if pspec.group_column:
        _require_columns(raw, [pspec.group_column], file, "group_column")
        out["group"] = raw[pspec.group_column].astype("string")
        used.add(pspec.group_column)
    features = _feature_columns(raw, pspec, used, report, file)
    declared = _declared_categories(pspec)
    _require_columns(raw, [c for c in declared if c not in features], file, "categorical")
    numeric: list[str] = []
    categories: dict[str, pd.Series] = {}
    for column in features:
        if (
            column in declared
            or _catalog_category(column)
            or _inferred_categorical(raw[column], pspec)
        ):
            categories[column] = read_categorical(
                raw[column], column, declared.get(column), pspec.max_categories, report, file
            )
            if column not in declared and not _catalog_category(column):
                report_inferred(report, file, column, categories[column])
        else:
            numeric.append(column)
    # One frame from whole blocks, in the features' order: a column written at a time costs
    # more than the data on the few-row frames a request or a batch chunk holds.
    parts = [out, _numeric_block(raw, numeric, report, file)]
    if categories:
        parts.append(pd.DataFrame(categories, index=raw.index))
    out = pd.concat(parts, axis=1)[[*out.columns, *features]]
    rules = rules_for_spec(spec, numeric)
    _report_unused_ranges(spec, numeric, report, file)
    check_ranges(out, report, file, spec.range_policy, numeric, rules)
    if out.empty:
        raise EmptyCohortError(f"{file}: no patient rows left to load")
    empty_images = empty_images_table()
    return Cohort(
        spec=spec, patients=out, images=empty_images, feature_columns=features, report=report
    )


def _apply_renames(
    raw: pd.DataFrame, rename: dict[str, str], report: LoadReport, file: str
) -> pd.DataFrame:
    for source, target in rename.items():
        if source in raw:
            report.add("info", "renamed", f"renamed to {target!r}", file=file, column=source)
    return raw.rename(columns=rename)


def _require_columns(raw: pd.DataFrame, columns: list[str], file: str, role: str) -> None:
    missing = [c for c in columns if c not in raw]
    if missing:
        raise SchemaError(
            f"{file}: the spec's {role} names column(s) {missing} that the table lacks; "
            f"it has {list(raw.columns)}{_separator_hint(raw)}"
        )


def _separator_hint(raw: pd.DataFrame) -> str:
    """One column whose name holds ';', tab or '|' was read with the wrong separator."""
    if len(raw.columns) != 1:
        return ""
    found = [sep for sep in (";", "\t", "|") if sep in str(raw.columns[0])]
    if not found:
        return ""
    return f"; the columns look separated by {found[0]!r}: set sep: {found[0]!r} under patients"


def _with_clean_ids(
    raw: pd.DataFrame, id_column: str, report: LoadReport, file: str
) -> pd.DataFrame:
    ids = raw[id_column].map(id_text)
    for row in ids[ids == ""].index:
        report.add(
            "excluded",
            "excluded_row",
            "no patient id; row left out",
            file=file,
            row=row,
            column=id_column,
            expected="a non-empty id",
        )
    raw = raw.assign(**{id_column: ids})[ids != ""]
    dupes = raw[raw[id_column].duplicated(keep=False)]
    if len(dupes):
        listing = "; ".join(
            f"{pid!r} at rows {list(group.index)}" for pid, group in dupes.groupby(id_column)
        )
        raise SchemaError(
            f"{file}: column {id_column!r} must hold one row per patient, but ids repeat: "
            f"{listing[:500]}"
        )
    return raw




def parse_severity(values: pd.Series, levels: list[str], file: str, column: str) -> pd.Series:
    text = values.map(
        lambda v: None if v is None or pd.isna(v) or str(v).strip() == "" else str(v).strip()
    )
    bad = text[text.notna() & ~text.isin(levels)]
    if len(bad):
        shown = ", ".join(f"row {r}: {v!r}" for r, v in bad.head(5).items())
        raise SchemaError(
            f"{file}: severity column {column!r} must be one of {levels} (or empty); found {shown}"
        )
    return pd.Series(pd.Categorical(text, categories=levels, ordered=True), index=values.index)


def _report_unused_ranges(
    spec: CohortSpec, features: list[str], report: LoadReport, file: str
) -> None:
    """A spec range for a column that is not a feature checks nothing: say so, not ignore it."""
    for column in spec.ranges:
        if column not in features:
            report.add(
                "warning",
                "note",
                "the spec's ranges name this column but it is not a feature column of the "
                "cohort (after rename); its range checks nothing",
                file=file,
                column=column,
            )


def _declared_categories(pspec: PatientsSpec) -> dict[str, list[str] | None]:
    """Declared categorical columns -> their categories in order (None: the data's)."""
    if isinstance(pspec.categorical, dict):
        return {c: list(v) for c, v in pspec.categorical.items()}
    return dict.fromkeys(pspec.categorical)


def _catalog_category(column: str) -> bool:
    """A catalog feature that names a category (blood group): never read as a quantity."""
    feature = CATALOG.get(column)
    return feature is not None and feature.kind == "categorical"


def _inferred_categorical(values: pd.Series, pspec: PatientsSpec) -> bool:
    """Only for a column outside the catalog: a catalog quantity with text in it has typing
    errors (each reported), not categories."""
    return (
        values.name not in CATALOG
        and pspec.feature_columns is None
        and pspec.infer_categorical
        and looks_categorical(values, pspec.max_categories)
    )


def _numeric_block(
    raw: pd.DataFrame, columns: list[str], report: LoadReport, file: str
) -> pd.DataFrame:
    """The numeric features as float64: columns of plain numbers converted in one step, the
    others parsed cell by cell (:func:`_numbers`, each bad cell reported)."""
    dtypes = raw.dtypes
    plain = [c for c in columns if is_plain_number_dtype(dtypes[c])]
    block = raw[plain].astype("float64") if plain else pd.DataFrame(index=raw.index)
    parse = [c for c in columns if c not in set(plain)]
    parsed = {c: _numbers(raw, c, report, file) for c in parse}
    if parsed:
        block = pd.concat([block, pd.DataFrame(parsed, index=raw.index)], axis=1)
    return block[columns]


def _numbers(raw: pd.DataFrame, column: str, report: LoadReport, file: str) -> pd.Series:
    """A numeric feature; a text column gets a message that says how to declare categories."""
    try:
        return coerce_numeric(raw, column, report, file, strict=True)
    except SchemaError as exc:
        raise SchemaError(
            f"{exc}; if its values are categories (such as F/M), list the column under "
            "patients.categorical in the spec"
        ) from None


def _feature_columns(
    raw: pd.DataFrame, pspec: PatientsSpec, used: set[str], report: LoadReport, file: str
) -> list[str]:
    declared = pspec.feature_columns
    candidates = [c for c in raw.columns if c not in used]
    if declared is not None:
        _require_columns(raw, declared, file, "feature_columns")
        for column in candidates:
            if column not in declared:
                report.add(
                    "info",
                    "unknown_column",
                    "not among the spec's feature_columns; ignored",
                    file=file,
                    column=column,
                )
        return list(declared)
    features = []
    for column in candidates:
        if column in RESERVED_PATIENT_COLUMNS:
            raise SchemaError(f"{file}: column {column!r} is reserved; rename it in the spec")
        numbers = pd.to_numeric(raw[column], errors="coerce")
        present = raw[column].notna() & (raw[column].astype(str).str.strip() != "")
        categorical = column in _declared_categories(pspec) or _inferred_categorical(
            raw[column], pspec
        )
        if present.any() and numbers[present].isna().mean() > 0.5 and not categorical:
            reason = (
                "categories are not inferred (infer_categorical: false)"
                if not pspec.infer_categorical
                else f"over {pspec.max_categories} distinct values (max_categories): free text"
            )
            report.add(
                "warning",
                "unknown_column",
                f"mostly text, {reason}; not used as a feature (declare feature_columns or "
                "categorical to control this)",
                file=file,
                column=column,
            )
            continue
        if column not in CATALOG:
            report.add(
                "info",
                "unknown_column",
                "not in the feature catalog: used as a feature; no range check unless the "
                "spec's ranges give one",
                file=file,
                column=column,
            )
        features.append(column)
    return features


# --- the images table -----------------------------------------------------------------------


def empty_images_table() -> pd.DataFrame:
    """A fresh images table with no rows (a copy of one built once: building it column by
    column costs more than scoring a patient)."""
    return _EMPTY_IMAGES.copy()


def _build_empty_images_table() -> pd.DataFrame:
    columns = {"image_id": "string", "patient_id": "string", "path": "string", "frame": "Int64"}
    frame = pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    for column in PROBE_COLUMNS:
        frame[column] = pd.Series(dtype="object")
    return frame


_EMPTY_IMAGES = _build_empty_images_table()


def probe_images(
    images: pd.DataFrame,
    report: LoadReport,
    max_pixels: int,
    progress: Progress | None = None,
    file: str | None = None,
) -> pd.DataFrame:
    """Probe each image file once; unreadable ones are excluded and listed in the report.

    Rows that share a file (the frames of a DICOM clip) share one probe.
    """
    if images.empty:
        return images
    unique_paths = list(dict.fromkeys(images["path"]))
    found: dict[str, ImageInfo | ImageError] = {}

    def probe(path: str) -> None:
        try:
            found[path] = probe_image(Path(path), max_pixels=max_pixels)
        except ImageError as exc:
            found[path] = exc

    # OpenCV and hashing release the GIL, so threads use both cores (not worth starting for
    # the one image of a typical service request).
    with ThreadPoolExecutor(max_workers=min(4, len(unique_paths))) as pool:
        for done, _ in enumerate(pool.map(probe, unique_paths), start=1):
            if progress:
                progress(done, len(unique_paths))
    infos = images["path"].map(found)
    failed = infos.map(lambda i: isinstance(i, ImageError))
    if not failed.any():  # row selection on text columns is costly for the few rows of a request
        return _with_probes(images.copy(), infos, report, file)
    for row, record in images[failed].iterrows():
        report.add(
            "excluded",
            "excluded_image",
            str(found[record["path"]]),
            file=file or record["path"],
            row=row if file else None,
            column="path",
            found=record["path"],
        )
    return _with_probes(images[~failed].copy(), infos[~failed], report, file)


def _with_probes(
    good: pd.DataFrame, probed: pd.Series, report: LoadReport, file: str | None
) -> pd.DataFrame:
    """The readable images with what their probe found (format, size, hash, …)."""
    _report_extra_pages(good, probed, report, file)
    for column in PROBE_COLUMNS:
        good[column] = [getattr(i, column) for i in probed]
    if "frames" not in good and any(i.frames > 1 for i in probed):
        good["frames"] = [i.frames for i in probed]
    return good


def _report_extra_pages(
    images: pd.DataFrame, probed: pd.Series, report: LoadReport, file: str | None
) -> None:
    """A multi-page TIFF is read as its first page only (images have no pages, only DICOM
    frames): say so for each such image rather than drop the other pages without a word."""
    for (row, path), info in zip(images["path"].items(), probed, strict=True):
        if info.pages > 1:
            report.add(
                "warning",
                "note",
                f"{Path(path).name} is a multi-page TIFF with {info.pages} pages; only page 1 "
                f"is used, the other {info.pages - 1} are ignored",
                file=file or path,
                row=row if file else None,
                column="path",
                found=path,
                expected="one image per file (split the pages into files to use them all)",
            )


def _exclude_images(
    report: LoadReport,
    images: pd.DataFrame,
    mask: pd.Series,
    column: str,
    message: str,
    file: str | None,
) -> pd.DataFrame:
    """Images where ``mask`` holds are left out, each listed in the report."""
    if not mask.any():
        return images
    for row, value in images.loc[mask, column].items():
        report.add(
            "excluded", "excluded_image", message, file=file, row=row, column=column, found=value
        )
    return images[~mask]


def attach_images(
    cohort: Cohort,
    images: pd.DataFrame,
    progress: Progress | None = None,
    file: str | None = None,
) -> Cohort:
    """Probe images, drop those of unknown patients (reported), attach to the cohort."""
    known = set(cohort.patients["patient_id"])
    images = _exclude_images(
        cohort.report,
        images,
        ~images["patient_id"].isin(known),
        "patient_id",
        "patient id not in the patients table",
        file,
    )
    images = _exclude_images(
        cohort.report,
        images,
        images["image_id"].duplicated(keep="first"),
        "image_id",
        "image listed twice; second entry left out",
        file,
    )
    max_pixels = cohort.spec.images.max_pixels if cohort.spec.images else 60_000_000
    images = probe_images(images, cohort.report, max_pixels, progress, file)
    rule = cohort.spec.images.conflicting_copies if cohort.spec.images else "exclude"
    images = _resolve_conflicting_copies(cohort, images, rule, file)
    cohort.images = images.reset_index(drop=True)
    if cohort.spec.patients is None:  # an image-only cohort: a patient is her images
        _refresh_image_only_patients(cohort)
    return cohort


def _image_labels(cohort: Cohort, images: pd.DataFrame) -> pd.Series:
    """Each image's label: its own where the manifest gives one, else its patient's."""
    patient = images["patient_id"].map(cohort.patients.set_index("patient_id")["label"])
    if "label" not in images:
        return patient.astype("Float64")
    return images["label"].astype("Float64").fillna(patient.astype("Float64"))


def _resolve_conflicting_copies(
    cohort: Cohort, images: pd.DataFrame, rule: str, file: str | None
) -> pd.DataFrame:
    """Byte-identical files (same SHA-256) whose labels disagree cannot both be right: with
    ``rule`` "exclude" every copy is left out, with "keep" they stay with a warning. Each copy
    is listed in the load report, naming the other copies. Rows that share one file (the frames
    of a DICOM clip) are one copy."""
    if images.empty or "sha256" not in images or "label" not in cohort.patients:
        return images
    labels = _image_labels(cohort, images)
    # One copy = one file and frame: the frames of a clip are different images.
    frame = images["frame"].astype("string").fillna("") if "frame" in images else ""
    copy = images["sha256"].astype("string") + "#" + frame
    per_copy = labels[labels.notna()].groupby(copy[labels.notna()]).nunique()
    conflicting = copy.isin(per_copy[per_copy > 1].index) & labels.notna()
    if not conflicting.any():
        return images
    for row, record in images[conflicting].iterrows():
        same = conflicting & (copy == copy[row]) & (images["image_id"] != record["image_id"])
        others = images.loc[same, "image_id"]
        message = f"byte-identical to {', '.join(map(str, others.head(3)))} with the opposite label"
        if rule == "exclude":
            message += "; every copy left out (images.conflicting_copies: exclude)"
        else:
            message += "; kept as labelled (images.conflicting_copies: keep)"
        cohort.report.add(
            "excluded" if rule == "exclude" else "warning",
            "conflicting_copy",
            message,
            file=file or record["path"],
            row=row if file else None,
            column="label",
            found=str(record["image_id"]),
        )
    return images[~conflicting] if rule == "exclude" else images


def _refresh_image_only_patients(cohort: Cohort) -> None:
    """In an image-only cohort a patient is her images: one whose every image was left out has
    no data left and is left out too; a patient label derived from her images (positive if any
    is) follows the images that remain. The report says both."""
    kept = cohort.patients["patient_id"].isin(set(cohort.images["patient_id"]))
    for patient in cohort.patients.loc[~kept, "patient_id"]:
        cohort.report.add(
            "excluded",
            "excluded_row",
            "every image of this patient was left out (see the image entries): no data left",
            row=str(patient),
            column="patient_id",
        )
    patients = cohort.patients[kept].reset_index(drop=True)
    if "label" in cohort.images and "label" in patients:
        remaining = cohort.images.groupby("patient_id")["label"].max()
        updated = patients["patient_id"].map(remaining).astype("Int8")
        changed = updated.ne(patients["label"]).fillna(False)
        for patient in patients.loc[changed, "patient_id"]:
            cohort.report.add(
                "warning",
                "note",
                "patient label recomputed from the images left in (positive if any is)",
                row=str(patient),
                column="label",
            )
        patients["label"] = updated
    cohort.patients = patients


# --- summary --------------------------------------------------------------------------------


def cohort_summary(cohort: Cohort) -> dict[str, Any]:
    patients, images = cohort.patients, cohort.images
    with_images = set(images["patient_id"]) if len(images) else set()
    features = cohort.feature_columns
    has_tabular = (
        patients[features].notna().any(axis=1) if features else pd.Series(False, patients.index)
    )
    summary: dict[str, Any] = {
        "name": cohort.spec.name,
        "label_name": cohort.spec.label_name,
        "pcos": cohort.spec.is_pcos,
        "image_modality": cohort.spec.modality,
        "patients": len(patients),
        "images": len(images),
        "patients_with_images": int(patients["patient_id"].isin(with_images).sum()),
        "patients_with_tabular": int(has_tabular.sum()),
        "features": len(features),
        "ultrasound_features": [c for c in features if c in ultrasound_features()],
        "fingerprint": cohort.fingerprint(),
        "report": cohort.report.counts(),
        # The range each feature was checked against and its source, so a prediction on new
        # patients (service, dashboard) checks what training checked.
        "ranges": rules_to_json(rules_for_spec(cohort.spec, features)),
    }
    if "label" in patients:
        counts = patients["label"].value_counts(dropna=False).sort_index()
        summary["labels"] = {
            str(k) if pd.notna(k) else "missing": int(v) for k, v in counts.items()
        }
    if "severity" in patients:
        counts = patients["severity"].value_counts(dropna=False, sort=False)
        summary["severity"] = {
            str(k) if pd.notna(k) else "missing": int(v) for k, v in counts.items()
        }
    if features:
        missing = patients[features].isna().mean().sort_values(ascending=False)
        summary["missing_fraction"] = {k: round(float(v), 3) for k, v in missing.items()}
    return summary


def load_frames(
    patients: pd.DataFrame | None,
    images: pd.DataFrame | None,
    spec: CohortSpec,
    progress: Progress | None = None,
    *,
    source: str | None = None,
    images_source: str | None = None,
    rows: RowNumbers = "positions",
    images_resolved: bool = False,
    report: LoadReport | None = None,
) -> Cohort:
    """:meth:`Cohort.from_frames`: in-memory tables through the same checks and load report as
    :func:`load_tables`; report rows are 1-based positions in the frames (or, with
    ``rows="index"``, the frames' own index). The options are described there."""
    report = LoadReport() if report is None else report
    if patients is None and images is None:
        raise SchemaError("from_frames needs a patients frame, an images frame, or both")
    if rows not in ("positions", "index"):
        raise SchemaError(f"from_frames: rows must be 'positions' or 'index', not {rows!r}")
    rows_of = numbered if rows == "positions" else _as_given
    patients_file = source or PATIENTS_FRAME
    images_file = images_source or IMAGES_FRAME
    manifest = None
    if images is not None:
        if images_resolved:
            manifest = _resolved_images(rows_of(images), images_file)
        else:
            ispec = spec.images or ImagesSpec()
            root = spec.resolve(ispec.root) or spec.base_dir
            manifest = manifest_images(rows_of(images), spec, ispec, report, images_file, root)
    if patients is not None:
        cohort = build_patients(rows_of(patients), spec, report, patients_file)
    else:
        assert manifest is not None
        cohort = patients_from_images(spec, manifest, report)
    if manifest is not None:
        cohort = attach_images(cohort, manifest, progress, images_file)
    cohort.validate()
    return cohort


def _as_given(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its own index as its report rows (no copy: loading never changes it)."""
    return frame


def _resolved_images(images: pd.DataFrame, file: str) -> pd.DataFrame:
    """A canonical images table given as such (``images_resolved``): its columns checked."""
    missing = [c for c in ("image_id", "patient_id", "path") if c not in images]
    if missing:
        raise SchemaError(
            f"{file}: a resolved images table needs columns {missing}; it has "
            f"{list(images.columns)} (pass images_resolved=False for a manifest to resolve)"
        )
    if "frame" not in images:
        images = images.assign(frame=pd.array([pd.NA] * len(images), dtype="Int64"))
    return images


def patients_from_images(spec: CohortSpec, images: pd.DataFrame, report: LoadReport) -> Cohort:
    """Image-only cohort: one patient per id; the label is positive if any image is positive."""
    if images.empty:
        raise EmptyCohortError(f"cohort {spec.name!r}: no images found")
    grouped = images.groupby("patient_id", sort=True)
    patients = pd.DataFrame({"patient_id": list(grouped.groups)})
    if "label" in images:
        patients["label"] = grouped["label"].max().reset_index(drop=True).astype("Int8")
        mixed = grouped["label"].nunique()
        for pid in mixed[mixed > 1].index:
            report.add(
                "warning",
                "note",
                "patient has positive and negative images; patient label = positive",
                row=pid,
                column="label",
            )
    return Cohort(spec=spec, patients=patients, images=images, feature_columns=[], report=report)
