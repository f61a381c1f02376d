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
    empty_images_table,
    patients_from_images,
)
from deeppcos.data.imageio import IMAGE_EXTENSIONS
from deeppcos.data.manifest import (
    Where,
    allowed_roots,
    exclude_outside,
    is_inside,
    manifest_images,
    resolved_path,
)
from deeppcos.data.report import LoadReport
from deeppcos.data.spec import CohortSpec, ImagesSpec, PatientsSpec, load_spec
from deeppcos.data.tables import id_text, read_patients_table, read_table
from deeppcos.exceptions import ConfigError, DataFileError, EmptyCohortError, SchemaError


def load_tables(spec: CohortSpec, progress: Progress | None) -> Cohort:
    report = LoadReport()
    images, manifest_file = (None, None)
    if spec.images is not None:
        images, manifest_file = read_manifest(spec, spec.images, report)
    if spec.patients is not None:
        path = _required_path(spec, spec.patients.path, "patients.path")
        cohort = build_patients(read_patients_table(path, spec.patients), spec, report, str(path))
    elif images is not None:
        cohort = patients_from_images(spec, images, report)
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
    file = str(path)
    root = spec.resolve(ispec.root) or path.parent
    return manifest_images(read_table(path), spec, ispec, report, file, root), file


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
    roots = allowed_roots(spec, ispec, root)
    rows = []
    for path in _folder_files(root, report):
        rel = path.relative_to(root)
        classes = [part for part in rel.parts[:-1] if part in class_map]
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            report.add("info", "note", "not an image extension; ignored", file=str(path))
            continue
        resolved = resolved_path(path)
        if not is_inside(resolved, roots):  # a symlink out of the folder
            exclude_outside(Where(report, str(path), None), str(path), roots)
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
                "path": str(resolved),
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
    cohort = patients_from_images(spec, images, report)
    return attach_images(cohort, images, progress)


def _folder_files(root: Path, report: LoadReport) -> list[Path]:
    """The files under ``root``, sorted. Symlinked folders are not descended into (``rglob``
    does not follow them), and each is reported rather than skipped without a word."""
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() and path.is_dir():
            report.add(
                "warning",
                "note",
                "symlinked folder; not followed (images must lie in the image folder itself, "
                "or be listed in a manifest)",
                file=str(path),
            )
        elif path.is_file():
            files.append(path)
    return files


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
    raw = read_patients_table(path, pspec)
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
    roots = allowed_roots(spec, spec.images or ImagesSpec(), image_root)
    where = Where(report, str(path), "Image Index")
    images = pd.DataFrame(
        {
            "image_id": raw["Image Index"].astype(str),
            "patient_id": raw["Patient ID"].map(id_text),
            "path": [
                _nih_image_path(image_root, name, roots, where.at(row))
                for row, name in raw["Image Index"].astype(str).items()
            ],
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
    # Rows whose image left the folder stay patient data (as rows whose image is missing do);
    # only the image is left out, and the report says so.
    images = images[images["path"] != ""]
    cohort = Cohort(
        spec=spec,
        patients=patients,
        images=images,
        feature_columns=["patient_age", "sex_male", "view_ap_fraction"],
        report=report,
    )
    return attach_images(cohort, images, progress, str(path))


ANY_FINDING = "any"


def _nih_image_path(image_root: Path, name: str, roots: list[Path], where: Where) -> str:
    """The image file a Data_Entry row names, as given; "" when it leaves the image folder."""
    path = image_root / name
    if not is_inside(resolved_path(path), roots):
        exclude_outside(where, name, roots)
        return ""
    return str(path)


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
        raw = read_patients_table(path, spec.patients)
        raw.columns = [c.strip() for c in raw.columns]
        id_col = spec.patients.id_column
        if id_col in raw:
            raw[id_col] = raw[id_col].map(lambda v: pseudonymise(id_text(v), salt))
        cohort = build_patients(raw, spec, report, str(path))
        cohort = attach_images(cohort, images, progress, str(folder))
    else:
        cohort = patients_from_images(spec, images, report)
        cohort = attach_images(cohort, images, progress, str(folder))
    return cohort


def _kaggle(spec: CohortSpec, progress: Progress | None) -> Cohort:
    from deeppcos.data.kaggle import load_kaggle_pcos

    return load_kaggle_pcos(spec)


def load_fhir(spec: CohortSpec, progress: Progress | None) -> Cohort:
    """A cohort from FHIR R4 files (``spec.fhir``): features from Observations, the label from
    Conditions coded as ``label_codes``, ranges as for any cohort of this kind."""
    from deeppcos.data.fhir import FhirOptions, read_fhir_source
    from deeppcos.knowledge.catalog import CATALOG
    from deeppcos.knowledge.ranges import rules_for_spec

    source = spec.fhir
    assert source is not None  # the spec's validator requires it for this format
    path = spec.resolve(source.path)
    assert path is not None
    options = FhirOptions(
        window_days=source.window_days,
        patient_id=source.patient_id,
        identifier_system=source.identifier_system,
        range_policy=spec.range_policy,
        censored=source.censored,
        label_codes=tuple(source.label_codes),
        ranges=rules_for_spec(spec, list(CATALOG)),
    )
    read = read_fhir_source(path, options)
    if source.label_codes:
        label = read.patients["label"]
        positives, missing = int((label == 1).sum()), int(label.isna().sum())
        read.report.add(
            "info",
            "note",
            f"label {spec.label_name!r} = 1 for the {positives} of {len(read.patients)} patients "
            f"with a Condition coded {', '.join(source.label_codes)} (confirmed or no "
            "verificationStatus)"
            + (f", missing for {missing} with only a suspected one" if missing else "")
            + "; 0 for the others",
            file=str(path),
        )
    return Cohort(
        spec=spec,
        patients=read.patients.reset_index(drop=True),
        images=empty_images_table(),
        feature_columns=list(read.feature_columns),
        report=read.report,
    )


LOADERS: dict[str, Callable[[CohortSpec, Progress | None], Cohort]] = {
    "tables": load_tables,
    "kaggle-pcos": _kaggle,
    "image-folder": load_image_folder,
    "dicom": load_dicom,
    "nih-chestxr": load_nih_chestxr,
    "fhir": load_fhir,
}


def load_cohort(spec: CohortSpec | Path | str, progress: Progress | None = None) -> Cohort:
    """Load a cohort from a spec (object or YAML path), dispatching on ``spec.format``."""
    if not isinstance(spec, CohortSpec):
        spec = load_spec(spec)
    cohort = LOADERS[spec.format](spec, progress)
    cohort.validate()
    return cohort
