"""Loaders for each cohort format a spec can name.

``tables``        a patients table and/or an images manifest (CSV, Parquet, XLSX)
``kaggle-pcos``   the Kaggle PCOS lab table, cleaned loudly (see ``kaggle.py``)
``image-folder``  one subfolder per class (optionally under split folders such as train/test)
``dicom``         a folder of DICOM files; patient ids from the header, pseudonymised
``nih-chestxr``   the NIH ChestX-ray8 metadata file and its image folder (a non-PCOS cohort)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from deeppcos.data.cohort import (
    Cohort,
    Progress,
    attach_images,
    build_patients,
    id_text,
    parse_binary_label,
)
from deeppcos.data.imageio import IMAGE_EXTENSIONS
from deeppcos.data.report import LoadReport
from deeppcos.data.spec import CohortSpec, ImagesSpec, PatientsSpec
from deeppcos.data.tables import read_table
from deeppcos.exceptions import ConfigError, DataFileError, EmptyCohortError, SchemaError


def load_tables(spec: CohortSpec, progress: Progress | None) -> Cohort:
    report = LoadReport()
    images, manifest_file = (None, None)
    if spec.images is not None:
        images, manifest_file = read_manifest(spec, spec.images, report)
    if spec.patients is not None:
        path = _required_path(spec, spec.patients.path, "patients.path")
        cohort = build_patients(read_table(path, spec.patients.sheet), spec, report, str(path))
    elif images is not None:
        cohort = _patients_from_images(spec, images, report)
    else:  # the spec validator forbids this; kept for type checkers
        raise ConfigError(f"{spec.name}: nothing to load")
    if images is not None:
        cohort = attach_images(cohort, images, progress, manifest_file)
    return cohort


def _required_path(spec: CohortSpec, path: Path | None, key: str) -> Path:
    resolved = spec.resolve(path)
    if resolved is None:
        raise ConfigError(
            f"cohort spec {spec.name!r}: '{key}' is required for format {spec.format}"
        )
    return resolved


def read_manifest(
    spec: CohortSpec, ispec: ImagesSpec, report: LoadReport
) -> tuple[pd.DataFrame, str]:
    path = _required_path(spec, ispec.manifest, "images.manifest")
    raw = read_table(path)
    raw.columns = [c.strip() for c in raw.columns]
    file = str(path)
    needed = [ispec.patient_column, ispec.path_column]
    missing = [c for c in needed if c not in raw]
    if missing:
        raise SchemaError(
            f"{file}: images manifest lacks column(s) {missing} named by the spec "
            f"(patient_column, path_column); it has {list(raw.columns)}"
        )
    root = spec.resolve(ispec.root) or path.parent
    out = pd.DataFrame(index=raw.index)
    rel = raw[ispec.path_column].fillna("").astype(str).str.strip()
    empty = rel == ""
    for row in rel[empty].index:
        report.add(
            "excluded",
            "excluded_image",
            "no image path",
            file=file,
            row=row,
            column=ispec.path_column,
        )
    out["image_id"] = raw["image_id"].astype(str) if "image_id" in raw else rel
    out["patient_id"] = raw[ispec.patient_column].map(id_text)
    out["path"] = [str((root / p).resolve()) if p else "" for p in rel]
    out["frame"] = pd.array(
        pd.to_numeric(raw["frame"], errors="coerce") if "frame" in raw else [pd.NA] * len(raw),
        dtype="Int64",
    )
    for key, target in (("side_column", "side"), ("view_column", "view")):
        column = getattr(ispec, key)
        if column:
            if column not in raw:
                raise SchemaError(f"{file}: images.{key} names {column!r}, which is not a column")
            out[target] = raw[column].astype("string")
    if ispec.label_column:
        if ispec.label_column not in raw:
            raise SchemaError(
                f"{file}: images.label_column names {ispec.label_column!r}, which is not a column"
            )
        labels = raw[ispec.label_column]
        if ispec.label_map is not None:
            labels = _mapped_labels(labels, ispec.label_map, file, ispec.label_column)
        out["label"] = parse_binary_label(labels, file, ispec.label_column, report)
    return out[~empty], file


def _mapped_labels(values: pd.Series, mapping: dict[str, int], file: str, column: str) -> pd.Series:
    """Source label values -> 0/1 through the spec's ``label_map`` (keys compared as text, so
    1, 1.0 and "1" in the file all match the key "1"); an unmapped value is an error naming rows."""
    table = {str(k).strip(): int(v) for k, v in mapping.items()}
    if set(table.values()) - {0, 1}:
        raise ConfigError(f"images.label_map must map to 0 or 1; got {mapping}")

    def key(value: object) -> str | None:
        if value is None or pd.isna(value):
            return None
        number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
        if pd.notna(number) and float(number).is_integer():
            return str(int(number))
        return str(value).strip()

    keys = values.map(key)
    bad = keys[keys.notna() & ~keys.isin(list(table))]
    if len(bad):
        shown = ", ".join(f"row {r}: {v!r}" for r, v in bad.head(5).items())
        raise SchemaError(
            f"{file}: label column {column!r} holds values the spec's label_map "
            f"{sorted(table)} does not name: {shown}"
        )
    return keys.map(table)


def _patients_from_images(spec: CohortSpec, images: pd.DataFrame, report: LoadReport) -> Cohort:
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


# --- image folders -------------------------------------------------------------------------


def load_image_folder(spec: CohortSpec, progress: Progress | None) -> Cohort:
    ispec = spec.images
    if ispec is None or ispec.folder is None:
        raise ConfigError(f"cohort spec {spec.name!r}: format image-folder needs images.folder")
    root = _required_path(spec, ispec.folder, "images.folder")
    if not root.is_dir():
        raise DataFileError(f"{root}: image folder not found")
    class_map = ispec.class_map or {}
    if not class_map:
        raise ConfigError(
            f"cohort spec {spec.name!r}: image-folder needs images.class_map, e.g. "
            "{infected: 1, notinfected: 0}"
        )
    pattern = spec.options.get("patient_id_pattern")
    report = LoadReport()
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        classes = [part for part in rel.parts[:-1] if part in class_map]
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            report.add("info", "note", "not an image extension; ignored", file=str(path))
            continue
        if not classes:
            report.add(
                "excluded",
                "excluded_image",
                f"not under a class folder {sorted(class_map)}; label unknown",
                file=str(path),
            )
            continue
        rows.append(
            {
                "image_id": rel.as_posix(),
                "patient_id": _patient_from_name(rel, pattern),
                "path": str(path.resolve()),
                "frame": pd.NA,
                "label": class_map[classes[-1]],
                "folder": rel.parent.as_posix(),
            }
        )
    if not rows:
        raise EmptyCohortError(f"{root}: no images under class folders {sorted(class_map)}")
    images = pd.DataFrame(rows)
    images["frame"] = images["frame"].astype("Int64")
    images["label"] = images["label"].astype("Int8")
    cohort = _patients_from_images(spec, images, report)
    return attach_images(cohort, images, progress)


def _patient_from_name(rel: Path, pattern: str | None) -> str:
    """Without patient ids each image stands alone (its relative path, extension included, so
    img1.jpg and img1.png stay two patients); a regex can pull an id from the file name."""
    if pattern:
        match = re.search(pattern, rel.name)
        if match:
            return match.group(1) if match.groups() else match.group(0)
    return rel.as_posix()


# --- NIH ChestX-ray8 ---------------------------------------------------------------------


def load_nih_chestxr(spec: CohortSpec, progress: Progress | None) -> Cohort:
    """Image + age, sex and view; the label is one finding (``options.finding``) against the rest,
    or, with ``finding: any``, any finding against "No Finding".

    Patient label: positive if any of the patient's images shows the finding. Patient features
    are the age at the first (lowest follow-up) image, sex, and the share of the patient's films
    taken antero-posterior (``view_ap_fraction``: AP films are taken at the bedside of patients
    too ill to stand, and magnify the heart, so view carries signal of its own); view position,
    follow-up number and age at each image also stay in the images table for the shortcut audit.
    """
    pspec = spec.patients or PatientsSpec()
    path = _required_path(spec, pspec.path, "patients.path")
    finding = spec.options.get("finding", "Cardiomegaly")
    report = LoadReport()
    raw = read_table(path)
    needed = [
        "Image Index",
        "Finding Labels",
        "Follow-up #",
        "Patient ID",
        "Patient Age",
        "Patient Gender",
        "View Position",
    ]
    missing = [c for c in needed if c not in raw]
    if missing:
        raise SchemaError(f"{path}: not an NIH Data_Entry file; missing columns {missing}")
    findings = raw["Finding Labels"].fillna("").str.split("|")
    known = sorted({f for labels in findings for f in labels if f})
    if finding != ANY_FINDING and finding not in known:
        raise ConfigError(
            f"{path}: finding {finding!r} does not occur; the file has {known} "
            f"(or use {ANY_FINDING!r}: any finding against 'No Finding')"
        )
    image_root = spec.resolve(spec.images.folder if spec.images else None) or path.parent / "images"
    images = pd.DataFrame(
        {
            "image_id": raw["Image Index"].astype(str),
            "patient_id": raw["Patient ID"].map(id_text),
            "path": [str(image_root / name) for name in raw["Image Index"].astype(str)],
            "frame": pd.array([pd.NA] * len(raw), dtype="Int64"),
            "label": findings.map(lambda labels: _has_finding(labels, finding)).astype("Int8"),
            "view": raw["View Position"].astype("string"),
            "follow_up": pd.to_numeric(raw["Follow-up #"], errors="coerce"),
            "patient_age": pd.to_numeric(raw["Patient Age"], errors="coerce"),
        },
        index=raw.index,
    )
    first = images.assign(sex=raw["Patient Gender"]).sort_values("follow_up")
    first = first.groupby("patient_id", sort=True).first()
    patients = pd.DataFrame(
        {
            "patient_id": first.index.astype(str),
            "label": images.groupby("patient_id", sort=True)["label"].max().astype("Int8").values,
            "patient_age": first["patient_age"].astype("float64").values,
            "sex_male": (first["sex"] == "M").astype("float64").values,
            "view_ap_fraction": (images["view"] == "AP")
            .astype("float64")
            .groupby(images["patient_id"], sort=True)
            .mean()
            .values,
        }
    )
    report.add(
        "info",
        "note",
        f"label = {finding!r} in 'Finding Labels' (any image of the "
        "patient); patient_age = age at the first image",
        file=str(path),
    )
    cohort = Cohort(
        spec=spec,
        patients=patients,
        images=images,
        feature_columns=["patient_age", "sex_male", "view_ap_fraction"],
        report=report,
    )
    return attach_images(cohort, images, progress, str(path))


ANY_FINDING = "any"


def _has_finding(labels: list[str], finding: str) -> int:
    if finding == ANY_FINDING:
        return int(labels != ["No Finding"])
    return int(finding in labels)


def load_dicom(spec: CohortSpec, progress: Progress | None) -> Cohort:
    """DICOM folder: pseudonymised ids from the header; labels from an optional patients table
    keyed by the *original* PatientID, which is pseudonymised on load and never kept."""
    from deeppcos.data.dicom import pseudonymise, scan_dicom_folder

    ispec = spec.images
    if ispec is None or ispec.folder is None:
        raise ConfigError(f"cohort spec {spec.name!r}: format dicom needs images.folder")
    salt = str(spec.options.get("pseudonym_salt", ""))
    if not salt:
        raise ConfigError(
            f"cohort spec {spec.name!r}: format dicom needs options.pseudonym_salt (a secret, "
            "constant string used to de-identify patient ids)"
        )
    report = LoadReport()
    folder = _required_path(spec, ispec.folder, "images.folder")
    images = scan_dicom_folder(folder, report, salt, max_pixels=ispec.max_pixels)
    images = images.rename(columns={"laterality": "side"})
    if spec.patients is not None:
        path = _required_path(spec, spec.patients.path, "patients.path")
        raw = read_table(path, spec.patients.sheet)
        raw.columns = [c.strip() for c in raw.columns]
        id_col = spec.patients.id_column
        if id_col in raw:
            raw[id_col] = raw[id_col].map(lambda v: pseudonymise(id_text(v), salt))
        cohort = build_patients(raw, spec, report, str(path))
        cohort = attach_images(cohort, images, progress, str(folder))
    else:
        cohort = _patients_from_images(spec, images, report)
        cohort = attach_images(cohort, images, progress, str(folder))
    return cohort


def _kaggle(spec: CohortSpec, progress: Progress | None) -> Cohort:
    from deeppcos.data.kaggle import load_kaggle_pcos

    return load_kaggle_pcos(spec)


LOADERS: dict[str, Callable[[CohortSpec, Progress | None], Cohort]] = {
    "tables": load_tables,
    "kaggle-pcos": _kaggle,
    "image-folder": load_image_folder,
    "dicom": load_dicom,
    "nih-chestxr": load_nih_chestxr,
}
