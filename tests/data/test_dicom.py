"""DICOM support: probing, frame decoding, colour spaces, de-identified scans and PNG export.

Every file is built here with pydicom (no network, no fixtures on disk); each carries the same
fake patient details so the tests can check that none of them leaks into anything written out.
"""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space, get_decoder, set_pixel_data
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from deeppcos.data.dicom import (
    probe_dicom,
    pseudonymise,
    read_dicom_frame,
    scan_dicom_folder,
    write_deidentified_frame,
)
from deeppcos.data.imageio import probe_image, read_image
from deeppcos.data.report import LoadReport
from deeppcos.exceptions import ConfigError, ImageError

PATIENT_ID = "HOSP-123456"
PATIENT_NAME = "Doe^Jane"
BIRTH_DATE = "19870321"
STUDY_DATE = "20230415"
ACCESSION = "ACC998877"
INSTITUTION = "St Example Hospital"
PHI_STRINGS = (PATIENT_ID, "Doe", "Jane", BIRTH_DATE, STUDY_DATE, ACCESSION, INSTITUTION)
SALT = "test-salt-keep-secret"

RNG = np.random.default_rng(7)
MONO8 = RNG.integers(0, 256, (16, 20), dtype=np.uint8)
MONO12 = RNG.integers(0, 4096, (12, 10), dtype=np.uint16)
CLIP = RNG.integers(0, 256, (3, 8, 6), dtype=np.uint8)
RGB = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 8,
    *,
    patient_id: str | None = PATIENT_ID,
    **elements: Any,
) -> Path:
    """A minimal ultrasound DICOM file carrying fake patient details."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    multi = pixels is not None and pixels.ndim == (4 if photometric != "MONOCHROME2" else 3)
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if multi else UltrasoundImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.Manufacturer = "Acme Medical"
    ds.ManufacturerModelName = "Sono 9"
    ds.PatientName = PATIENT_NAME
    ds.PatientBirthDate = BIRTH_DATE
    ds.StudyDate = STUDY_DATE
    ds.AccessionNumber = ACCESSION
    ds.InstitutionName = INSTITUTION
    if patient_id is not None:
        ds.PatientID = patient_id
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if pixels is not None:
        set_pixel_data(ds, pixels, photometric, bits_stored)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dicoms")
    region = Dataset()
    region.TransducerType = "ENDOCAVITY"
    write_dicom(
        root / "mono8.dcm",
        MONO8,
        ImageLaterality="L",
        BurnedInAnnotation="YES",
        SequenceOfUltrasoundRegions=[region],
    )
    write_dicom(root / "mono1_12bit.dcm", MONO12, "MONOCHROME1", 12, patient_id="HOSP-777")
    write_dicom(root / "sub" / "clip", CLIP, Laterality="R")  # no extension: found by 'DICM'
    write_dicom(root / "rgb.dcm", RGB, "RGB", BurnedInAnnotation="NO")
    write_dicom(root / "ybr.dcm", convert_color_space(RGB, "RGB", "YBR_FULL"), "YBR_FULL")
    write_dicom(root / "bad" / "no_id.dcm", MONO8, patient_id=None)
    write_dicom(root / "bad" / "no_pixels.dcm", None)
    (root / "bad" / "x.dcm").write_text("not a dicom file\n")
    (root / "notes.txt").write_text("scanned on the ward machine\n")
    big = write_dicom(root / "bad" / "big.dcm", MONO8)
    _resize_header(big, rows=30_000, columns=30_000)  # pixel data stays 320 bytes
    clip_bytes = (root / "sub" / "clip").read_bytes()
    (root / "bad" / "truncated.dcm").write_bytes(clip_bytes[: len(clip_bytes) - 40])
    return root


def _resize_header(path: Path, rows: int, columns: int) -> None:
    from pydicom import dcmread

    ds = dcmread(path)
    ds.Rows, ds.Columns = rows, columns
    ds.save_as(path, enforce_file_format=True)


# --- probe ----------------------------------------------------------------------------------


def test_probe_figures(folder: Path) -> None:
    path = folder / "mono8.dcm"
    info = probe_dicom(path, max_pixels=1_000_000, file_bytes=path.stat().st_size)
    assert (info.file_format, info.width, info.height, info.frames) == ("DICOM", 20, 16, 1)
    assert (info.channels, info.bit_depth, info.color_mode) == (1, 8, "monochrome2")
    assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)

    clip = probe_image(folder / "sub" / "clip")  # imageio dispatches by the DICM marker
    assert (clip.file_format, clip.frames, clip.width, clip.height) == ("DICOM", 3, 6, 8)
    mono1 = probe_image(folder / "mono1_12bit.dcm")
    assert (mono1.bit_depth, mono1.color_mode, mono1.channels) == (16, "monochrome1", 1)
    assert (
        probe_image(folder / "rgb.dcm").channels,
        probe_image(folder / "rgb.dcm").color_mode,
    ) == (
        3,
        "rgb",
    )
    assert probe_image(folder / "ybr.dcm").color_mode == "ybr_full"


def test_probe_refuses_oversized_before_decoding(folder: Path) -> None:
    # The pixel data are 320 bytes, so decoding would fail too; the message proves the size
    # guard ran first.
    with pytest.raises(ImageError, match=r"big\.dcm.*over the limit.*before decoding"):
        probe_image(folder / "bad" / "big.dcm")
    with pytest.raises(ImageError, match="over the limit"):
        read_dicom_frame(folder / "bad" / "big.dcm")


def test_the_limit_bounds_each_frame_not_the_clip(folder: Path) -> None:
    # 8×6 = 48 pixels a frame, 144 in the 3-frame clip: only one frame is decoded at a time.
    assert probe_image(folder / "sub" / "clip", max_pixels=100).frames == 3
    with pytest.raises(ImageError, match=r"DICOM frame is \d×\d = 48 pixels"):
        probe_image(folder / "sub" / "clip", max_pixels=40)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_pixels.dcm", "no pixel data"),
        ("x.dcm", "not an image"),
        ("truncated.dcm", "could not be decoded|corrupt|no pixel data"),
    ],
)
def test_probe_refuses_bad_files(folder: Path, name: str, message: str) -> None:
    with pytest.raises(ImageError, match=message) as caught:
        probe_image(folder / "bad" / name)
    assert name in str(caught.value)


def test_probe_names_missing_pixel_handler(tmp_path: Path) -> None:
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS plugin is installed here")
    path = write_dicom(tmp_path / "jpegls.dcm", MONO8)
    from pydicom import dcmread

    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(60)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageError, match=r"jpegls\.dcm.*JPEG-LS Lossless.*plugin"):
        probe_image(path)


def test_long_clip_is_read_one_frame_at_a_time(tmp_path: Path) -> None:
    # Over the 64 KB header deferral, so the pixel data are not read with the header, and only
    # frame 7's bytes are decoded.
    clip = RNG.integers(0, 256, (10, 400, 500), dtype=np.uint8)
    path = write_dicom(tmp_path / "long.dcm", clip)
    assert probe_image(path).frames == 10
    tracemalloc.start()
    try:
        pixels = read_dicom_frame(path, 7)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(pixels, clip[7])
    assert peak < clip.nbytes / 2, f"peak {peak:,} bytes for a {clip.nbytes:,}-byte clip"

    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[:-5000])  # the last frame is short
    with pytest.raises(ImageError, match=r"cut\.dcm.*truncated"):
        probe_image(cut)


# --- pixels ---------------------------------------------------------------------------------


def test_read_single_frame_gray(folder: Path) -> None:
    pixels = read_dicom_frame(folder / "mono8.dcm")
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, MONO8)


def test_read_picks_the_requested_frame(folder: Path) -> None:
    path = folder / "sub" / "clip"
    first, last = read_dicom_frame(path, 0), read_dicom_frame(path, 2)
    np.testing.assert_array_equal(last, CLIP[2])
    assert not np.array_equal(first, last)
    np.testing.assert_array_equal(read_image(path, frame=1), CLIP[1])
    with pytest.raises(ImageError, match=r"clip.*frame 3.*3 frame"):
        read_dicom_frame(path, 3)


def test_monochrome1_is_inverted_and_12_bit_stretched(folder: Path) -> None:
    pixels = read_dicom_frame(folder / "mono1_12bit.dcm")
    assert pixels.dtype == np.uint16
    expected = np.round((4095 - MONO12.astype(np.float64)) * 65535 / 4095)
    np.testing.assert_allclose(pixels, expected, atol=1)
    # High stored value (dark in MONOCHROME1) reads as a low value.
    brightest_stored = np.unravel_index(np.argmax(MONO12), MONO12.shape)
    assert pixels[brightest_stored] == pixels.min()


def test_signed_values_keep_their_order(tmp_path: Path) -> None:
    stored = np.array([[-2048, -1, 0, 2047]], dtype=np.int16)
    path = write_dicom(tmp_path / "signed.dcm", stored, bits_stored=12)
    pixels = read_dicom_frame(path)
    assert pixels.dtype == np.uint16
    assert pixels[0, 0] == 0 and pixels[0, -1] == 65535
    assert np.all(np.diff(pixels[0].astype(int)) > 0)


def test_rgb_and_ybr_read_as_rgb(folder: Path) -> None:
    np.testing.assert_array_equal(read_dicom_frame(folder / "rgb.dcm"), RGB)
    ybr = read_dicom_frame(folder / "ybr.dcm")
    assert ybr.shape == RGB.shape and ybr.dtype == np.uint8
    assert np.abs(ybr.astype(int) - RGB.astype(int)).max() <= 2  # YCbCr rounding only


def test_palette_colour_is_looked_up(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    lut = {"Red": [0, 65535, 0, 0], "Green": [0, 0, 65535, 0], "Blue": [0, 0, 0, 65535]}
    elements: dict[str, Any] = {}
    for colour, values in lut.items():
        elements[f"{colour}PaletteColorLookupTableDescriptor"] = [4, 0, 16]
        elements[f"{colour}PaletteColorLookupTableData"] = np.array(values, "<u2").tobytes()
    path = write_dicom(tmp_path / "palette.dcm", indices, "PALETTE COLOR", **elements)
    pixels = read_dicom_frame(path)
    assert pixels.shape == (2, 2, 3) and pixels.dtype == np.uint16
    assert pixels[0, 1].tolist() == [65535, 0, 0] and pixels[1, 1].tolist() == [0, 0, 65535]


# --- pseudonyms -----------------------------------------------------------------------------


def test_pseudonymise_is_stable_salted_and_strips() -> None:
    first = pseudonymise(PATIENT_ID, SALT)
    assert re.fullmatch(r"P-[0-9a-f]{12}", first)
    assert pseudonymise(f" {PATIENT_ID} ", SALT) == first
    assert pseudonymise(PATIENT_ID, "another-salt") != first
    assert pseudonymise("", SALT) == ""
    with pytest.raises(ConfigError, match="pseudonym_salt"):
        pseudonymise(PATIENT_ID, "")


# --- folder scan ----------------------------------------------------------------------------


def test_scan_one_row_per_frame(folder: Path) -> None:
    report = LoadReport()
    table = scan_dicom_folder(folder, report, SALT)
    assert sorted(table["image_id"]) == sorted(
        ["mono8.dcm", "mono1_12bit.dcm", "rgb.dcm", "ybr.dcm"] + [f"sub/clip#{i}" for i in range(3)]
    )
    assert str(table["frame"].dtype) == "Int64"
    clip = table[table["image_id"].str.startswith("sub/clip")].sort_values("image_id")
    assert clip["frame"].tolist() == [0, 1, 2]
    assert (clip["frames_in_file"] == 3).all() and (clip["laterality"] == "right").all()
    assert table.loc[table["image_id"] == "rgb.dcm", "frame"].isna().all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])

    mono8 = table.set_index("image_id").loc["mono8.dcm"]
    assert mono8["laterality"] == "left" and bool(mono8["burned_in_annotation"])
    assert mono8["transducer_type"] == "ENDOCAVITY"
    assert (mono8["modality"], mono8["manufacturer"], mono8["manufacturer_model"]) == (
        "US",
        "Acme Medical",
        "Sono 9",
    )
    assert (mono8["rows"], mono8["columns"], mono8["photometric_interpretation"]) == (
        16,
        20,
        "MONOCHROME2",
    )
    assert (table["study_year"] == 2023).all()
    by_id = table.set_index("image_id")["burned_in_annotation"]
    assert pd.notna(by_id["rgb.dcm"]) and not by_id["rgb.dcm"]  # tag says NO
    assert pd.isna(by_id["ybr.dcm"])  # no tag: unknown, not "no"


def test_scan_pseudonyms_are_stable_and_salted(folder: Path) -> None:
    first = scan_dicom_folder(folder, LoadReport(), SALT)
    again = scan_dicom_folder(folder, LoadReport(), SALT)
    other = scan_dicom_folder(folder, LoadReport(), "another-salt")
    assert first["patient_id"].tolist() == again["patient_id"].tolist()
    assert set(first["patient_id"]) == {
        pseudonymise(PATIENT_ID, SALT),
        pseudonymise("HOSP-777", SALT),
    }
    assert set(first["patient_id"]).isdisjoint(set(other["patient_id"]))


def test_scan_keeps_no_identifying_values(folder: Path) -> None:
    table = scan_dicom_folder(folder, LoadReport(), SALT)
    text = table.to_csv(index=False)
    for secret in PHI_STRINGS:
        assert secret not in text, secret
    forbidden = {"patientname", "patientbirthdate", "accessionnumber", "institutionname"}
    assert not forbidden & {c.replace("_", "").lower() for c in table.columns}


def test_scan_reports_every_left_out_file(folder: Path) -> None:
    report = LoadReport()
    scan_dicom_folder(folder, report, SALT)
    excluded = {Path(e.file).name: e.message for e in report.by_action("excluded_image")}
    assert set(excluded) == {"no_id.dcm", "no_pixels.dcm", "x.dcm", "big.dcm", "truncated.dcm"}
    assert "PatientID" in excluded["no_id.dcm"]
    assert "DICM" in excluded["x.dcm"]
    assert "over the limit" in excluded["big.dcm"]
    assert all(e.level == "excluded" for e in report.by_action("excluded_image"))
    notes = [e for e in report.by_action("note") if e.file and e.file.endswith("notes.txt")]
    assert len(notes) == 1 and notes[0].level == "info"


def test_scan_warns_when_the_path_names_the_patient(tmp_path: Path) -> None:
    write_dicom(tmp_path / PATIENT_ID / "img.dcm", MONO8)
    report = LoadReport()
    table = scan_dicom_folder(tmp_path, report, SALT)
    assert len(table) == 1
    assert [e.level for e in report.by_action("note")] == ["warning"]


def test_scan_needs_a_salt(folder: Path) -> None:
    with pytest.raises(ConfigError, match="pseudonym_salt"):
        scan_dicom_folder(folder, LoadReport(), "")


# --- de-identified PNG ----------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[str]:
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append(data[at + 4 : at + 8].decode("ascii"))
        at += 12 + length
    return chunks


@pytest.mark.parametrize(
    ("name", "frame"), [("sub/clip", 2), ("mono1_12bit.dcm", 0), ("rgb.dcm", 0)]
)
def test_write_deidentified_frame(folder: Path, tmp_path: Path, name: str, frame: int) -> None:
    out = tmp_path / "out" / "frame.png"
    write_deidentified_frame(folder / name, frame, out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert set(_png_chunks(data)) <= {"IHDR", "IDAT", "IEND"}  # no text or time chunks
    for secret in PHI_STRINGS:
        assert secret.encode() not in data
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    if back.ndim == 3:
        back = cv2.cvtColor(back, cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, read_dicom_frame(folder / name, frame))


def test_write_refuses_burned_in_annotation(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="BurnedInAnnotation"):
        write_deidentified_frame(folder / "mono8.dcm", 0, tmp_path / "a.png")
    write_deidentified_frame(folder / "mono8.dcm", 0, tmp_path / "a.png", allow_burned_in=True)
    assert (tmp_path / "a.png").stat().st_size > 0


def test_dicom_cohort_loads_with_pseudonymised_labels(folder: Path, tmp_path: Path) -> None:
    """A format-dicom spec: labels keyed by the original PatientID end up under pseudonyms."""
    from deeppcos.data import load_cohort, spec_from_dict

    pd.DataFrame({"PatientID": [PATIENT_ID, "HOSP-777"], "pcos": [1, 0]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    spec = spec_from_dict(
        {
            "name": "dicom",
            "format": "dicom",
            "patients": {"path": str(tmp_path / "labels.csv"), "id_column": "PatientID"},
            "images": {"folder": str(folder)},
            "options": {"pseudonym_salt": SALT},
        }
    )
    cohort = load_cohort(spec)
    labels = cohort.patients.set_index("patient_id")["label"].to_dict()
    assert labels == {pseudonymise(PATIENT_ID, SALT): 1, pseudonymise("HOSP-777", SALT): 0}
    assert (cohort.images.groupby("patient_id").size() > 0).all()
    assert "side" in cohort.images and set(cohort.images["side"].dropna()) == {"left", "right"}
    text = cohort.patients.to_csv() + cohort.images.to_csv()
    assert not any(phi in text for phi in PHI_STRINGS)
    with pytest.raises(ConfigError, match="pseudonym_salt"):
        load_cohort(spec.model_copy(update={"options": {}}))
