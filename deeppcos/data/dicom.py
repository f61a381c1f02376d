"""DICOM ultrasound: safe probing, one-frame decoding and de-identified folder scans.

Three rules shape this module:

* **Check before decoding.** The header is read with the pixel data deferred, so the size guard
  (Rows × Columns × frames) and the transfer-syntax check run before a single pixel is decoded.
* **Decode one frame.** Ultrasound clips can hold hundreds of frames; ``read_dicom_frame`` asks
  pydicom for the one frame it needs (``pydicom.pixels.pixel_array(path, index=...)``), which for
  native (uncompressed) data reads only that frame's bytes.
* **Nothing identifying leaves.** ``scan_dicom_folder`` copies a short whitelist of acquisition
  fields into its table and replaces PatientID with a salted pseudonym; names, birth dates,
  accession numbers, institutions and full dates are never copied. ``write_deidentified_frame``
  writes bare PNG pixels with no metadata.

Pixels come back as ``deeppcos.data.imageio.read_image`` promises: uint8 or uint16, H×W gray or
H×W×3 RGB. High values are bright (MONOCHROME1 is inverted), signed values are shifted to start
at 0, and stored depths other than 8 or 16 bits are stretched linearly to the full uint8/uint16
range, so order is kept and a dtype-based normalisation sees full contrast. Modality and VOI LUTs
(rescale slope, windowing) are not applied: ultrasound rarely carries them and the image branch
normalises itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, get_decoder, pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import MediaStorageDirectoryStorage

from deeppcos.data.imagefile import DEFAULT_MAX_PIXELS, ImageInfo, file_sha256
from deeppcos.data.report import LoadReport
from deeppcos.exceptions import ConfigError, DataFileError, ImageError

DICOM_EXTENSIONS = {".dcm", ".dicom"}

# Elements larger than this are skipped while reading the header (read later only on access), so
# probing a 2 GB clip reads kilobytes, not the clip.
_HEADER_DEFER_SIZE = "64 KB"

# Columns of the scan table, in order. A whitelist: a new column is added here on purpose, never
# by copying header elements wholesale.
SCAN_COLUMNS: dict[str, str] = {
    "image_id": "string",
    "patient_id": "string",
    "path": "string",
    "frame": "Int64",
    "modality": "string",
    "manufacturer": "string",
    "manufacturer_model": "string",
    "transducer_type": "string",
    "photometric_interpretation": "string",
    "rows": "int64",
    "columns": "int64",
    "frames_in_file": "int64",
    "laterality": "string",
    "study_year": "Int64",
    "burned_in_annotation": "boolean",
}

_LATERALITY = {"L": "left", "R": "right"}


@dataclass(frozen=True)
class _Geometry:
    """What the header says about the pixel data; everything needed before decoding."""

    rows: int
    columns: int
    frames: int
    bits_stored: int
    signed: bool
    photometric: str


# --- pseudonyms -----------------------------------------------------------------------------


def pseudonymise(patient_id: str, salt: str) -> str:
    """A stable de-identified id: ``"P-"`` + the first 12 hex digits of sha256(salt + id).

    The salt (cohort spec option ``pseudonym_salt``) must be kept secret — without it anyone could
    hash candidate ids and match them — and constant for a study, since a new salt gives every
    patient a new pseudonym and breaks the link between images, tables and earlier results.
    Surrounding whitespace is ignored so table ids and header ids match. An empty id stays empty
    (missing), so the caller's missing-id handling applies.
    """
    _require_salt(salt)
    text = patient_id.strip()
    if not text:
        return ""
    return "P-" + hashlib.sha256((salt + text).encode("utf-8")).hexdigest()[:12]


def _require_salt(salt: str) -> None:
    # An unsalted hash of a short hospital number is reversed by hashing every candidate number.
    if not salt:
        raise ConfigError(
            "pseudonym salt is empty; set options.pseudonym_salt in the cohort spec to a secret "
            "string kept constant for the study"
        )


# --- header ---------------------------------------------------------------------------------


def _read_header(path: Path) -> Dataset:
    """The dataset with large values (pixel data) deferred; ImageError if it is not DICOM."""
    try:
        return pydicom.dcmread(path, defer_size=_HEADER_DEFER_SIZE)
    except InvalidDicomError as exc:
        raise ImageError(f"{path}: not a DICOM Part-10 file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types for broken files
        raise ImageError(f"{path}: DICOM header is corrupt or truncated ({exc})") from exc


def _header_int(ds: Dataset, keyword: str, path: Path, default: int | None = None) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        if default is not None:
            return default
        raise ImageError(f"{path}: DICOM header lacks {keyword}; cannot tell the image size")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"{path}: DICOM {keyword} is not a number (found {value!r})") from exc


def _geometry(ds: Dataset, path: Path) -> _Geometry:
    """Image size, depth and colour space from the header; ImageError if there is no image."""
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise ImageError(f"{path}: floating-point DICOM pixel data is not supported")
    if "PixelData" not in ds:
        raise ImageError(
            f"{path}: DICOM file has no pixel data (a report, index or truncated file, "
            "not an image)"
        )
    rows = _header_int(ds, "Rows", path)
    columns = _header_int(ds, "Columns", path)
    if rows <= 0 or columns <= 0:
        raise ImageError(f"{path}: DICOM image size is {columns}×{rows}; expected positive sizes")
    # NumberOfFrames 0 or absent means one frame in practice.
    frames = max(1, _header_int(ds, "NumberOfFrames", path, default=1))
    allocated = _header_int(ds, "BitsAllocated", path, default=8)
    stored = _header_int(ds, "BitsStored", path, default=allocated)
    return _Geometry(
        rows=rows,
        columns=columns,
        frames=frames,
        bits_stored=min(max(stored, 1), allocated),
        signed=_header_int(ds, "PixelRepresentation", path, default=0) == 1,
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper(),
    )


def _check_size(geo: _Geometry, path: Path, max_pixels: int, whole_file: bool) -> None:
    """The decompression-bomb guard, from header figures only.

    Only one frame is ever decoded at a time (clips are read frame by frame), so the bound is
    per frame: a long clip of normal frames is fine, one gigantic frame is not.
    """
    frames = geo.frames if whole_file else 1
    total = geo.rows * geo.columns * frames
    if total > max_pixels:
        shape = f"{geo.columns}×{geo.rows}" + (f"×{frames} frames" if frames > 1 else "")
        what = "file" if whole_file else "frame"
        raise ImageError(
            f"{path}: DICOM {what} is {shape} = {total:,} pixels, over the limit of "
            f"{max_pixels:,} (decompression-bomb guard, checked before decoding); raise "
            "images.max_pixels in the spec if the image is genuine"
        )


def _check_decodable(ds: Dataset, path: Path) -> None:
    """Refuse compressed pixel data that no installed plugin can decode, saying what to install."""
    syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
    if syntax is None:
        raise ImageError(f"{path}: DICOM file meta has no Transfer Syntax UID")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise ImageError(
            f"{path}: DICOM transfer syntax {syntax.name} ({syntax}) is not supported by pydicom"
        ) from exc
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise ImageError(
            f"{path}: DICOM pixel data use the transfer syntax {syntax.name} ({syntax}), which "
            f"needs a pixel-data handler plugin that is not installed ({needs})"
        )


def _check_length(ds: Dataset, path: Path, file_bytes: int) -> None:
    """Refuse native pixel data shorter than the header promises.

    Decoding one frame reads only that frame's bytes, so a clip cut short in its last frame would
    otherwise pass the probe and fail later, mid-training.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_encapsulated or syntax.is_deflated:
        return  # compressed: the decoder checks; deflated: offsets are not file offsets
    # keep_deferred: the raw element as read, without loading a deferred value (a whole clip).
    element = ds.get_item("PixelData", keep_deferred=True)
    if not isinstance(element, RawDataElement) or element.length == 0xFFFFFFFF:
        return
    if element.value is not None:
        held = len(element.value)
    else:  # deferred: the value would run from value_tell to the end of the file at most
        held = max(0, min(element.length, file_bytes - element.value_tell))
    try:
        expected = get_expected_length(ds)
    except Exception as exc:  # missing or odd Image Pixel module elements
        raise ImageError(f"{path}: DICOM image header is incomplete ({exc})") from exc
    if held < expected:
        raise ImageError(
            f"{path}: DICOM pixel data hold {held:,} bytes but the header promises "
            f"{expected:,}; the file is truncated or corrupt"
        )


# --- pixels ---------------------------------------------------------------------------------


def _decode(ds: Dataset, geo: _Geometry, path: Path, frame: int) -> np.ndarray:
    """Decode one frame (pydicom converts YBR to RGB on the way) and map it to uint8/uint16."""
    try:
        raw = pixel_array(path, index=frame)
    except Exception as exc:  # decoders raise many types for bad data
        raise ImageError(
            f"{path}: DICOM pixel data could not be decoded (frame {frame}): {exc}"
        ) from exc
    if geo.photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(raw, ds)
        except Exception as exc:
            raise ImageError(f"{path}: DICOM palette colour lookup failed ({exc})") from exc
        # The lookup table's own depth (8 or 16 bit) decides the output type.
        return _as_uint(rgb, 8 if rgb.dtype == np.uint8 else 16, False)
    pixels = _as_uint(raw, geo.bits_stored, geo.signed)
    if geo.photometric == "MONOCHROME1":
        # MONOCHROME1 stores low values as bright; invert so high = bright everywhere.
        pixels = np.iinfo(pixels.dtype).max - pixels
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ImageError(f"{path}: DICOM frame has shape {pixels.shape}; expected H×W or H×W×3")
    return np.ascontiguousarray(pixels)


def _as_uint(values: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Stored values as uint8 (≤ 8 bits) or uint16, order kept.

    Signed values are shifted so the most negative one becomes 0; depths other than 8 and 16 are
    stretched to the full range of the output type, so 12-bit data does not look dark to code
    that divides by 65535.
    """
    target = np.uint8 if bits_stored <= 8 else np.uint16
    if not signed and bits_stored in (8, 16) and values.dtype == target:
        return values
    top = (1 << bits_stored) - 1
    wide = values.astype(np.int64)
    if signed:
        wide += 1 << (bits_stored - 1)
    wide = np.clip(wide, 0, top)
    target_top = int(np.iinfo(target).max)
    if top != target_top:
        wide = (wide * target_top + top // 2) // top
    return wide.astype(target)


def _frame_index(frame: int, geo: _Geometry, path: Path) -> int:
    frame = int(frame)  # tables hand over numpy integers
    if not 0 <= frame < geo.frames:
        raise ImageError(
            f"{path}: frame {frame} requested, but the DICOM file has {geo.frames} frame(s) "
            f"(valid: 0 to {geo.frames - 1})"
        )
    return frame


def read_dicom_frame(
    path: Path | str, frame: int = 0, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """One frame as uint8/uint16, H×W gray or H×W×3 RGB, high = bright.

    Only the requested frame is decoded; ``max_pixels`` bounds that frame's Rows × Columns.
    """
    path = Path(path)
    ds = _read_header(path)
    geo = _geometry(ds, path)
    index = _frame_index(frame, geo, path)
    _check_size(geo, path, max_pixels, whole_file=False)
    _check_decodable(ds, path)
    _check_length(ds, path, path.stat().st_size)
    return _decode(ds, geo, path, index)


def probe_dicom(path: Path, max_pixels: int, file_bytes: int) -> ImageInfo:
    """Check a DICOM file before anything trusts it and describe it (see ``probe_image``).

    Order matters: header, pixel-data presence, size guard, transfer syntax — and only then is
    frame 0 decoded, to prove the pixel data are readable.
    """
    ds = _read_header(path)
    return _probe(ds, path, max_pixels, file_bytes)


def _probe(ds: Dataset, path: Path, max_pixels: int, file_bytes: int) -> ImageInfo:
    geo = _geometry(ds, path)
    _check_size(geo, path, max_pixels, whole_file=False)
    _check_decodable(ds, path)
    _check_length(ds, path, file_bytes)
    pixels = _decode(ds, geo, path, 0)
    return ImageInfo(
        file_format="DICOM",
        width=geo.columns,
        height=geo.rows,
        channels=1 if pixels.ndim == 2 else 3,
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        color_mode=geo.photometric.lower().replace(" ", "_"),
        frames=geo.frames,
        file_bytes=file_bytes,
        sha256=file_sha256(path),
    )


# --- de-identified output -------------------------------------------------------------------


def write_deidentified_frame(
    path: Path | str, frame: int, out_path: Path | str, *, allow_burned_in: bool = False
) -> None:
    """Write one frame's pixels as a PNG (8 or 16 bit) carrying no metadata at all.

    OpenCV writes only the image chunks (no text, time or profile chunks), so no header value can
    leak. Pixels themselves can: a file flagged BurnedInAnnotation = YES is refused unless
    ``allow_burned_in`` is set (after cropping or masking the text, or for internal use).
    """
    path, out_path = Path(path), Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise DataFileError(f"{out_path}: de-identified frames are written as PNG; use .png")
    ds = _read_header(path)
    if _burned_in(ds) and not allow_burned_in:
        raise ImageError(
            f"{path}: BurnedInAnnotation is YES, so the pixels may show patient details; crop "
            "or mask them, or pass allow_burned_in=True if the output stays internal"
        )
    pixels = read_dicom_frame(path, frame)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)  # OpenCV encodes BGR
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise ImageError(f"{path}: frame {frame} could not be encoded as PNG")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(encoded.tobytes())


# --- folder scan ----------------------------------------------------------------------------


def scan_dicom_folder(
    folder: Path | str, report: LoadReport, salt: str, max_pixels: int = DEFAULT_MAX_PIXELS
) -> pd.DataFrame:
    """One row per frame of every readable DICOM image under ``folder`` (see ``SCAN_COLUMNS``).

    DICOM files are found by their 'DICM' marker, whatever their name. Everything left out is
    reported: unreadable files and non-DICOM ``.dcm`` files as excluded images, other files as
    notes. Patient ids are pseudonymised with ``salt``; no identifying header value is copied.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise DataFileError(f"{folder}: DICOM folder not found or not a directory")
    _require_salt(salt)  # before the walk, so a missing salt fails fast
    rows: list[dict[str, Any]] = []
    for path in _files_under(folder):
        rows.extend(_scan_file(path, folder, report, salt, max_pixels))
    table = pd.DataFrame(rows, columns=list(SCAN_COLUMNS))
    return table.astype(SCAN_COLUMNS)


def _files_under(folder: Path) -> Iterator[Path]:
    # Sorted so the table (and the cohort fingerprint) does not depend on directory order.
    yield from sorted(p for p in folder.rglob("*") if p.is_file())


def _scan_file(
    path: Path, folder: Path, report: LoadReport, salt: str, max_pixels: int
) -> list[dict[str, Any]]:
    file = str(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        report.add("excluded", "excluded_image", f"cannot read file ({exc})", file=file)
        return []
    if head[128:132] != b"DICM":
        _report_not_dicom(path, head, report)
        return []
    try:
        ds = _read_header(path)
        if _is_dicomdir(ds):
            report.add("info", "note", "DICOMDIR index file; not an image, ignored", file=file)
            return []
        raw_id = str(ds.get("PatientID", "") or "").strip()
        if not raw_id:
            report.add(
                "excluded",
                "excluded_image",
                "DICOM file has no PatientID; its images cannot be linked to a patient",
                file=file,
                found="PatientID missing or empty",
            )
            return []
        info = _probe(ds, path, max_pixels, path.stat().st_size)
    except ImageError as exc:
        report.add("excluded", "excluded_image", str(exc), file=file)
        return []
    relative = path.relative_to(folder).as_posix()
    if _path_names_patient(relative, ds, raw_id):
        report.add(
            "warning",
            "note",
            "the file's path contains the patient's ID or name, and image_id and path carry it "
            "into outputs; rename the files or folders before sharing results",
            file=file,
        )
    base = _header_fields(ds)
    base.update(patient_id=pseudonymise(raw_id, salt), path=file, frames_in_file=info.frames)
    if info.frames == 1:
        return [{**base, "image_id": relative, "frame": pd.NA}]
    return [{**base, "image_id": f"{relative}#{i}", "frame": i} for i in range(info.frames)]


def _report_not_dicom(path: Path, head: bytes, report: LoadReport) -> None:
    if path.suffix.lower() in DICOM_EXTENSIONS:
        report.add(
            "excluded",
            "excluded_image",
            "file is named like DICOM but has no 'DICM' marker at byte 128; not a DICOM "
            "Part-10 file",
            file=str(path),
            found=f"{len(head)} bytes read, no DICM marker",  # never the bytes: any file's
        )
    else:
        report.add("info", "note", "not a DICOM file; ignored", file=str(path))


def _is_dicomdir(ds: Dataset) -> bool:
    sop_class = getattr(ds.file_meta, "MediaStorageSOPClassUID", None)
    return sop_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds


def _header_fields(ds: Dataset) -> dict[str, Any]:
    """The whitelisted, non-identifying header values: acquisition fields for shortcut audits."""
    return {
        "modality": _text(ds, "Modality"),
        "manufacturer": _text(ds, "Manufacturer"),
        "manufacturer_model": _text(ds, "ManufacturerModelName"),
        "transducer_type": _transducer_type(ds),
        "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "laterality": _laterality(ds),
        "study_year": _study_year(ds),
        "burned_in_annotation": _burned_in_flag(ds),
    }


def _text(ds: Dataset, keyword: str) -> Any:
    value = ds.get(keyword)
    if value is None:
        return pd.NA
    if isinstance(value, MultiValue):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or pd.NA


def _transducer_type(ds: Dataset) -> Any:
    # Usually inside the ultrasound-regions sequence; some vendors put it at the top level.
    top = _text(ds, "TransducerType")
    if top is not pd.NA:
        return top
    for region in ds.get("SequenceOfUltrasoundRegions", None) or []:
        found = _text(region, "TransducerType")
        if found is not pd.NA:
            return found
    return pd.NA


def _laterality(ds: Dataset) -> Any:
    for keyword in ("ImageLaterality", "Laterality"):
        side = _LATERALITY.get(str(ds.get(keyword, "") or "").strip().upper())
        if side:
            return side
    return pd.NA


def _study_year(ds: Dataset) -> Any:
    """The year only: a full date is identifying, the year is enough to audit time shifts."""
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        text = str(ds.get(keyword, "") or "").strip()
        if len(text) >= 4 and text[:4].isdigit() and 1900 <= int(text[:4]) <= 2200:
            return int(text[:4])
    return pd.NA


def _burned_in_flag(ds: Dataset) -> Any:
    """True for YES, False for NO, missing when the header does not say."""
    value = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    return {"YES": True, "NO": False}.get(value, pd.NA)


def _burned_in(ds: Dataset) -> bool:
    return _burned_in_flag(ds) is True


def _path_names_patient(relative: str, ds: Dataset, raw_id: str) -> bool:
    """Whether the relative path shows the raw PatientID or a part of PatientName (≥ 3 chars)."""
    needles = [raw_id]
    name = str(ds.get("PatientName", "") or "")
    needles += [part for part in name.replace("^", " ").split() if part]
    lowered = relative.lower()
    return any(len(n) >= 3 and n.lower() in lowered for n in needles)
