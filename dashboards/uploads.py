"""A new patient from the Predict page's form: her labs (a one-row table in memory) and her
uploaded ultrasound images (written into a private temporary folder: image readers take paths),
read as a one-patient cohort by :meth:`deeppcos.data.cohort.Cohort.from_frames`, with the checks
and load report of a cohort read from files.

Uploads are trusted by their content, never their name: the first bytes must be an image
signature (``deeppcos.data.imageio.sniff_format``), the size under ``MAX_UPLOAD_BYTES``, and the
file must decode within the pixel limit (``probe_image``). No Streamlit here.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeppcos.data.imageio import probe_image, sniff_format
from deeppcos.exceptions import DeepPCOSError, ImageError, SchemaError

MAX_UPLOAD_MB = 25
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "dcm", "dicom"]
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "DICOM": ".dcm"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,63}$")


@dataclass
class Upload:
    name: str
    data: bytes


@dataclass
class NewPatient:
    """A new patient: her values (a one-row table in canonical column names, or None) and where
    her uploaded images live; ``remove()`` deletes the folder, ``keep()`` keeps it."""

    folder: Path
    patient_id: str
    images: list[Path] = field(default_factory=list)
    table: Any = None  # a one-row pandas DataFrame, or None

    def keep(self) -> Path:
        """Keep the folder, with the values entered written beside the images (``patients.csv``),
        so what was predicted on stays together; returns the folder."""
        if self.table is not None:
            from deeppcos.runs.csvsafe import write_csv

            write_csv(self.table, self.folder / "patients.csv", index=False)
        return self.folder

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_patient_id(patient_id: str) -> str:
    patient_id = patient_id.strip()
    if not _ID.match(patient_id):
        raise SchemaError(
            f"patient id {patient_id!r}: use letters, digits, '.' or '-' (at most 64, no '_' "
            "or spaces), e.g. new-1"
        )
    return patient_id


def check_upload(upload: Upload) -> str:
    """The image format named by the upload's first bytes; ImageError when it is not one."""
    if not upload.data:
        raise ImageError(f"{upload.name}: the file is empty")
    if len(upload.data) > MAX_UPLOAD_BYTES:
        raise ImageError(
            f"{upload.name}: {len(upload.data) / 1e6:.1f} MB is over the {MAX_UPLOAD_MB} MB limit"
        )
    kind = sniff_format(upload.data[:132])
    if kind is None:
        raise ImageError(
            f"{upload.name}: not an image: its first bytes {upload.data[:8]!r} match no JPEG, "
            "PNG, BMP, TIFF or DICOM signature, whatever the file name says"
        )
    return kind


def write_patient(
    patient_id: str,
    table: Any,  # a one-row pandas DataFrame in canonical column names, or None
    uploads: list[Upload],
    root: Path | None = None,
) -> NewPatient:
    """Check the patient's id and uploads, and write the images into a new private temporary
    folder (under ``root``); the table stays in memory, under the checked id."""
    patient_id = check_patient_id(patient_id)
    kinds = [check_upload(upload) for upload in uploads]  # before anything is written
    folder = Path(tempfile.mkdtemp(prefix="deeppcos-predict-", dir=root))
    if table is not None:
        table = table.assign(patient_id=patient_id)
    patient = NewPatient(folder, patient_id, table=table)
    try:
        for k, (upload, kind) in enumerate(zip(uploads, kinds, strict=True), start=1):
            target = folder / "images" / f"{patient_id}_{k}{_EXTENSIONS[kind]}"
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(upload.data)
            _probe(target, upload.name)
            patient.images.append(target)
    except BaseException:
        patient.remove()
        raise
    return patient


def _probe(path: Path, name: str) -> None:
    try:
        probe_image(path)
    except ImageError as exc:  # name the upload, not the temporary file
        raise ImageError(str(exc).replace(str(path), name)) from None


def load_patient(patient: NewPatient, predictor: Any = None) -> Any:
    """The one-patient cohort, read by ``Cohort.from_frames`` with canonical column names and,
    given the run's ``predictor``, as the run's kind of cohort: its label, its ranges and its
    categorical inputs (one row must not decide what a column is)."""
    import pandas as pd

    from deeppcos.data.cohort import Cohort
    from deeppcos.data.spec import ImagesSpec, PatientsSpec, spec_from_dict

    has_table = patient.table is not None
    spec = spec_from_dict(
        {
            "name": "patients" if has_table else "images",
            "patients": PatientsSpec(label_column=None) if has_table else None,
            "images": ImagesSpec(root=patient.folder / "images") if patient.images else None,
        }
    )
    if predictor is not None:
        spec = _as_the_runs_cohort(spec, predictor)
    images = (
        pd.DataFrame(
            {
                "patient_id": [patient.patient_id] * len(patient.images),
                "path": [image.name for image in patient.images],  # relative to images.root
            }
        )
        if patient.images
        else None
    )
    return Cohort.from_frames(patient.table, images, spec)


def _as_the_runs_cohort(spec: Any, predictor: Any) -> Any:
    from deeppcos.inference.scoring import run_categories, run_kind

    update: dict[str, Any] = run_kind(predictor.training_spec())
    if spec.patients is not None:
        tabular = predictor.branches.get("tabular")
        categories = run_categories(dict(getattr(tabular, "categories_", {})))
        update["patients"] = spec.patients.model_copy(update=categories)
    return spec.model_copy(update=update)


def read_fhir_upload(name: str, data: bytes, ranges: Any) -> Any:
    """A FHIR upload — a Bundle (.json) or an NDJSON export (.ndjson) — as
    :class:`~deeppcos.data.fhir.FhirPatients`, checked against the run's ``ranges``."""
    import json

    from deeppcos.data.fhir import FhirOptions, read_bundle, read_fhir_source

    options = FhirOptions(ranges=ranges)
    if name.lower().endswith(".ndjson"):
        with tempfile.TemporaryDirectory(prefix="deeppcos-fhir-") as folder:
            path = Path(folder) / Path(name).name
            path.write_bytes(data)
            return read_fhir_source(path, options)
    try:
        bundle = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeepPCOSError(f"{name}: not a JSON FHIR Bundle ({exc})") from None
    return read_bundle(bundle, options)


def score_fhir(predictor: Any, read: Any) -> tuple[Any, list[Any]]:
    """Every patient of a FHIR upload (``read``, from :func:`read_fhir_upload`) scored with the
    run's predictor, as ``deeppcos predict --fhir`` scores a bundle: the predictions table, and
    the report entries reading them as the model's inputs and scoring them added (inputs the
    upload lacks, categories the model never saw)."""
    from deeppcos.inference.batch import model_inputs

    before = len(read.report.entries)
    cohort = read.to_cohort(model_inputs(predictor), name="upload")
    predictions = predictor.predict(cohort)
    return predictions, read.report.entries[before:]


def report_table(report: Any, problems_only: bool = False) -> Any:
    """A load report as a table to show: rows and values found as text (a line number beside
    'file.ndjson:7'); ``problems_only``: its warnings and exclusions, what was left out or
    changed."""
    frame = report.to_frame()
    if problems_only:
        frame = frame[frame["level"].isin(["warning", "excluded", "error"])]
    for column in ("row", "found"):
        frame[column] = [None if v is None else str(v) for v in frame[column]]
    return frame.reset_index(drop=True)


def explain_new(predictor: Any, patient: NewPatient) -> Any:
    """Predict and explain the new patient (Grad-CAM on her images)."""
    from deeppcos.explain import explain_patient

    cohort = load_patient(patient, predictor)
    ids = cohort.patients["patient_id"].astype(str).tolist()
    if patient.patient_id not in ids:
        raise DeepPCOSError(f"the new patient {patient.patient_id!r} was not read back ({ids})")
    return explain_patient(predictor, patient.patient_id, cohort, saliency="gradcam")
