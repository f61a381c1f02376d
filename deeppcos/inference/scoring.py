"""New patients to score, read with the run's own cohort spec.

``deeppcos predict RUN --patients FILE [--images FILE_OR_DIR]`` validates the new table against
the spec the run was trained with, so a table in the training layout is read exactly as in
training: the Kaggle spreadsheet with its raw headers and defects, or a ``tables`` cohort with
its renames, dropped and feature columns. The diagnosis and severity columns may be absent
(they are what is predicted); a missing feature column is an error that names it.

``--images`` is a manifest (CSV/TSV/Parquet with ``patient_id`` and ``path`` columns, paths
relative to the manifest's folder) or a folder laid out in one of two ways:

* ``DIR/<patient_id>/<any name>.<ext>`` — one subfolder per patient, any number of images;
* ``DIR/<patient_id>.<ext>`` or ``DIR/<patient_id>_<anything>.<ext>`` — flat; the patient id is
  the file name up to the first ``_`` (so patient ids themselves must not contain ``_`` here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from deeppcos.data.imageio import IMAGE_EXTENSIONS
from deeppcos.data.spec import CohortSpec, ImagesSpec, PatientsSpec, spec_from_dict
from deeppcos.exceptions import ConfigError, DataFileError

__all__ = ["images_manifest", "images_spec", "new_patients_spec"]

# Formats whose patients table a user can supply in the training layout.
TABLE_FORMATS = ("tables", "kaggle-pcos")
MANIFEST_NAME = "deeppcos-images-manifest.csv"


def run_kind(training: CohortSpec | None) -> dict[str, Any]:
    """The spec fields that read new patients as the run's kind of cohort: its label, whether
    it is a PCOS cohort, and its own ranges (so they are checked as training checked)."""
    if training is None:
        return {}
    return {"label_name": training.label_name, "pcos": training.is_pcos, "ranges": training.ranges}


def run_categories(
    categories: dict[str, list[str]], present: set[str] | None = None
) -> dict[str, Any]:
    """The patients-section fields that declare the run's categorical inputs (those of them in
    ``present``, when given: a missing input is the model's to name) and infer no other — a few
    new rows must not decide what a column is."""
    declared = {c: v for c, v in categories.items() if present is None or c in present}
    return {"categorical": declared, "infer_categorical": False}


def new_patients_spec(
    training: CohortSpec | None,
    patients: Path | None,
    images: Path | None,
    workdir: Path,
) -> CohortSpec:
    """A spec that reads ``patients`` (and ``images``) the way the run's cohort was read.

    ``workdir`` receives the manifest written for an images folder. Without a training spec in
    a table format, the patients table must use the canonical column names (``patient_id`` and
    the catalog's feature names).
    """
    if patients is None and images is None:
        raise ConfigError("give --patients, --images or both")
    if patients is not None and not patients.is_file():
        raise DataFileError(f"{patients}: patients file not found")
    images_section = images_spec(images, workdir) if images is not None else None
    if training is not None and training.format in TABLE_FORMATS and patients is not None:
        return _like_training(training, patients, images_section)
    return _canonical(patients, images_section)


def _like_training(training: CohortSpec, patients: Path, images: ImagesSpec | None) -> CohortSpec:
    assert training.patients is not None
    known = training.patients
    header = _header(patients, training)
    present = set(header) if header is not None else set()
    # A grade in the new table is ignored (it is what is predicted), not a reserved-name error.
    drop = [
        *known.drop_columns,
        *([known.severity_column] if known.severity_column in present else []),
    ]
    table = known.model_copy(
        update={
            "path": patients.resolve(),
            "label_column": known.label_column if known.label_column in present else None,
            "severity_column": None,
            "severity_levels": None,
            "group_column": known.group_column if known.group_column in present else None,
            "drop_columns": drop,
        }
    )
    return training.model_copy(
        update={
            "name": f"{training.name}: {patients.name}",
            "patients": table,
            "images": images,
            "options": {},  # e.g. the Kaggle companion CSV belongs to the training table only
        }
    )


def _header(patients: Path, training: CohortSpec) -> list[str] | None:
    """The new table's column names (after the spec's renames); None for the Kaggle layout,
    whose loader validates its own headers."""
    if training.format != "tables":
        return None
    from deeppcos.data.tables import read_table

    assert training.patients is not None
    raw = read_table(patients, training.patients.sheet)
    return [training.patients.rename.get(str(c).strip(), str(c).strip()) for c in raw.columns]


def _canonical(patients: Path | None, images: ImagesSpec | None) -> CohortSpec:
    data: dict = {"name": patients.stem if patients else "images"}
    if patients is not None:
        data["patients"] = PatientsSpec(path=patients.resolve(), label_column=None)
    if images is not None:
        data["images"] = images
    return spec_from_dict(data)


def images_spec(images: Path, workdir: Path) -> ImagesSpec:
    """An images section for a manifest file or an images folder (its manifest written into
    ``workdir``)."""
    if images.is_dir():
        manifest = images_manifest(images)
        target = workdir / MANIFEST_NAME
        # Not defused (deeppcos.runs.csvsafe): a temporary file only the loader reads back, whose
        # patient ids (folder and file names) must match the patients table's exactly.
        manifest.to_csv(target, index=False)
        return ImagesSpec(manifest=target, root=images.resolve())
    if not images.is_file():
        raise DataFileError(f"{images}: images manifest or folder not found")
    return ImagesSpec(manifest=images.resolve(), root=images.parent.resolve())


def images_manifest(folder: Path) -> pd.DataFrame:
    """``patient_id, path`` for every image file under ``folder`` (layouts in the module notes);
    paths relative to ``folder``."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise DataFileError(
            f"{folder}: no image files found (expected {sorted(IMAGE_EXTENSIONS)} files in "
            "DIR/<patient_id>/ subfolders or named <patient_id>[_…].<ext>)"
        )
    rows = []
    for file in files:
        relative = file.relative_to(folder)
        if len(relative.parts) > 2:
            raise DataFileError(
                f"{file}: nested too deep; use DIR/<patient_id>/<image> or DIR/<patient_id>.<ext>"
            )
        patient = relative.parts[0] if len(relative.parts) == 2 else file.stem.split("_")[0]
        rows.append({"patient_id": patient, "path": relative.as_posix()})
    return pd.DataFrame(rows)
