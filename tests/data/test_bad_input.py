"""Hostile and awkward input to cohort loading (issue 19 §2): paths that leave the cohort folder,
non-image files whose bytes must never be echoed, Windows separators, multi-page TIFFs, crafted
UCUM units and tables in other encodings or separators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from deeppcos.data import load_cohort, spec_from_dict
from deeppcos.data.fhir import read_bundle
from deeppcos.data.imageio import probe_image
from deeppcos.exceptions import (
    ConfigError,
    DataFileError,
    DeepPCOSError,
    ImageError,
    SchemaError,
)
from deeppcos.knowledge.units import UnitError, parse_unit
from tests.conftest import write_image

CLIMB = "../" * 16  # more than any temporary folder is deep: it reaches /


def _cohort_folder(tmp_path: Path, paths: list[str], **images: Any) -> Path:
    """tmp_path/cohort: one patient per manifest row, all labelled 0 (so byte-identical images
    never count as conflicting copies), and a valid image img/a.png; tmp_path/outside holds a
    valid image the manifest must not reach."""
    folder = tmp_path / "cohort"
    write_image(folder / "img" / "a.png", 1)
    write_image(tmp_path / "outside" / "leak.png", 2)
    pids = [f"p{k}" for k in range(len(paths))]
    pd.DataFrame({"patient_id": pids, "pcos": [0] * len(paths)}).to_csv(
        folder / "patients.csv", index=False
    )
    pd.DataFrame({"patient_id": pids, "path": paths}).to_csv(folder / "images.csv", index=False)
    spec = {
        "name": "bad",
        "patients": {"path": "patients.csv", "label_column": "pcos"},
        "images": {"manifest": "images.csv", **images},
    }
    (folder / "cohort.yaml").write_text(yaml.safe_dump(spec))
    return folder


def _outputs(cohort) -> str:
    """Everything a run writes about a cohort without the CLI: the load report as CSV and JSON,
    the summary and the images table."""
    return "\n".join(
        [
            cohort.report.to_frame().to_csv(index=False),
            json.dumps(cohort.report.to_records(), default=str),
            json.dumps(cohort.summary(), default=str),
            cohort.images.to_csv(index=False),
        ]
    )


def _excluded(cohort, row: int):
    return [e for e in cohort.report.by_action("excluded_image") if e.row == row]


# --- 1. image paths stay inside the cohort's image root ------------------------------------


def test_manifest_path_climbing_to_etc_passwd_is_excluded_unread(tmp_path: Path) -> None:
    folder = _cohort_folder(tmp_path, ["img/a.png", CLIMB + "etc/passwd"])
    cohort = load_cohort(folder / "cohort.yaml")
    assert list(cohort.images["patient_id"]) == ["p0"]
    (entry,) = _excluded(cohort, 2)
    assert "outside" in entry.message and str(folder.resolve()) in entry.message
    assert entry.level == "excluded" and entry.column == "path"
    assert "root:x" not in _outputs(cohort)


def test_relative_absolute_and_symlinked_paths_out_of_the_root_are_excluded(
    tmp_path: Path,
) -> None:
    leak = tmp_path / "outside" / "leak.png"
    link = tmp_path / "cohort" / "img" / "link.png"
    folder = _cohort_folder(
        tmp_path, ["img/a.png", "../outside/leak.png", str(leak), "img/link.png"]
    )
    link.symlink_to(leak)
    cohort = load_cohort(folder / "cohort.yaml")
    assert list(cohort.images["patient_id"]) == ["p0"]
    for row in (2, 3, 4):
        (entry,) = _excluded(cohort, row)
        assert "outside the allowed image root" in entry.message
        assert str(folder.resolve()) in entry.message


def test_a_root_named_in_the_spec_bounds_the_paths(tmp_path: Path) -> None:
    folder = _cohort_folder(tmp_path, ["a.png", "../../outside/leak.png"], root="img")
    cohort = load_cohort(folder / "cohort.yaml")
    assert list(cohort.images["patient_id"]) == ["p0"]
    (entry,) = _excluded(cohort, 2)
    assert str((folder / "img").resolve()) in entry.message


def test_allowed_roots_admit_a_folder_outside_the_root(tmp_path: Path) -> None:
    folder = _cohort_folder(
        tmp_path, ["img/a.png", "../outside/leak.png"], allowed_roots=["../outside"]
    )
    cohort = load_cohort(folder / "cohort.yaml")
    assert sorted(cohort.images["patient_id"]) == ["p0", "p1"]


def test_image_folder_does_not_follow_symlinks_out_of_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    write_image(root / "pos" / "own.png", 1)
    write_image(tmp_path / "outside" / "leak.png", 2)
    write_image(tmp_path / "outside" / "deep" / "more.png", 3)
    (root / "pos" / "link.png").symlink_to(tmp_path / "outside" / "leak.png")
    (root / "pos" / "linked_dir").symlink_to(tmp_path / "outside" / "deep")
    spec = spec_from_dict(
        {
            "name": "f",
            "format": "image-folder",
            "images": {"folder": str(root), "class_map": {"pos": 1}},
        }
    )
    cohort = load_cohort(spec)
    assert list(cohort.images["image_id"]) == ["pos/own.png"]
    excluded = cohort.report.by_action("excluded_image")
    assert any("link.png" in (e.file or "") and "outside" in e.message for e in excluded)
    assert "leak.png" not in cohort.images.to_csv()


# --- 2. the bytes of a non-image file are never echoed ------------------------------------

SECRETS = {
    "text": b"Jane Q. Doe; password=zq-wolverine-7731; ssn=078-05-1120\n",
    # "BM" is the BMP signature: a note starting "BMI" must not pass for a bitmap either.
    "starts-like-bmp": b"BMI 31.2 (Jane Q. Doe), password=zq-wolverine-7731\n" * 4,
}


def _windows(data: bytes, width: int = 6) -> set[str]:
    text = data.decode("ascii")
    return {text[i : i + width] for i in range(len(text) - width + 1)}


@pytest.mark.parametrize("secret", list(SECRETS.values()), ids=list(SECRETS))
def test_non_image_file_bytes_reach_no_message_or_output(tmp_path: Path, secret: bytes) -> None:
    folder = _cohort_folder(tmp_path, ["img/a.png", "img/notes.png"])
    (folder / "img" / "notes.png").write_bytes(secret)
    with pytest.raises(ImageError) as caught:
        probe_image(folder / "img" / "notes.png")
    assert "no known signature" in str(caught.value)
    cohort = load_cohort(folder / "cohort.yaml")
    (entry,) = _excluded(cohort, 2)
    assert "no known signature of a PNG, JPEG, BMP, TIFF or DICOM file" in entry.message
    written = _outputs(cohort) + str(caught.value)
    leaked = [w for w in _windows(secret) if w in written or repr(w.encode())[2:-1] in written]
    assert leaked == []


# --- 3. Windows separators -------------------------------------------------------------------


def test_backslash_path_is_read_with_slashes_and_reported(tmp_path: Path) -> None:
    folder = _cohort_folder(tmp_path, ["img\\a.png"])
    cohort = load_cohort(folder / "cohort.yaml")
    assert list(cohort.images["patient_id"]) == ["p0"]
    assert cohort.images["path"].iloc[0] == str((folder / "img" / "a.png").resolve())
    notes = [e for e in cohort.report.by_level("info") if e.row == 1 and e.column == "path"]
    assert len(notes) == 1 and "'/'" in notes[0].message and notes[0].found == "img\\a.png"


def test_backslash_path_found_neither_way_is_excluded_with_a_hint(tmp_path: Path) -> None:
    folder = _cohort_folder(tmp_path, ["img/a.png", "img\\missing.png"])
    cohort = load_cohort(folder / "cohort.yaml")
    assert list(cohort.images["patient_id"]) == ["p0"]
    messages = " ".join(e.message for e in cohort.report if e.row == 2)
    assert "not found" in messages and "use / as the separator" in messages


# --- 4. multi-page TIFF ------------------------------------------------------------------------


def test_extra_tiff_pages_are_reported(tmp_path: Path) -> None:
    folder = _cohort_folder(tmp_path, ["img/pages.tif"])
    rng = np.random.default_rng(0)
    pages = [rng.integers(0, 255, (32, 40), dtype=np.uint8) for _ in range(2)]
    assert cv2.imwritemulti(str(folder / "img" / "pages.tif"), pages)
    cohort = load_cohort(folder / "cohort.yaml")
    assert len(cohort.images) == 1
    notes = [e for e in cohort.report if "pages.tif" in f"{e.message} {e.found} {e.file}"]
    assert len(notes) == 1 and notes[0].level == "warning"
    assert "2 pages" in notes[0].message and "only page 1" in notes[0].message


# --- 5. crafted UCUM units --------------------------------------------------------------------

CRAFTED = [
    "10*999.ng/mL",
    "ng/mL999999999",
    "10*" + "9" * 5000,
    "10*-999",
    "10*" + "9" * 150,  # short enough to parse: the power's own digits are bounded
    "1" + "0" * 60,
    "10*24." * 20 + "L",  # every term in bounds, the product past a float
]


@pytest.mark.parametrize(
    "unit",
    CRAFTED,
    ids=[
        "big-power",
        "glued-digits",
        "5000-digits",
        "tiny",
        "150-digits",
        "huge-number",
        "product",
    ],
)
def test_crafted_units_raise_the_projects_unit_error(unit: str) -> None:
    with pytest.raises(UnitError) as caught:
        parse_unit(unit)
    message = str(caught.value)
    assert isinstance(caught.value, DeepPCOSError)
    assert unit[:30] in message and "expected" in message
    assert len(message) < 400  # a long unit is shown truncated


@pytest.mark.parametrize("unit", ["10*12/L", "10*-3", "kg/m2", "kg.m-2", "/min", "mm[Hg]", "cm3"])
def test_ordinary_units_still_parse(unit: str) -> None:
    assert parse_unit(unit).factor > 0


def test_fhir_bundle_with_crafted_units_names_the_entry(tmp_path: Path) -> None:
    def lh(value: float, unit: str) -> dict[str, Any]:
        return {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "10501-5"}]},
                "subject": {"reference": "Patient/a"},
                "effectiveDateTime": "2024-03-01",
                "valueQuantity": {
                    "value": value,
                    "system": "http://unitsofmeasure.org",
                    "code": unit,
                },
            }
        }

    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "a", "gender": "female"}},
            *(lh(5.0, unit) for unit in CRAFTED[:3]),
        ],
    }
    result = read_bundle(bundle)
    bad = {e.row: e for e in result.report if e.action == "coerced"}
    for k, unit in enumerate(CRAFTED[:3], start=1):
        entry = bad[f"entry[{k}]"]
        assert unit[:30] in entry.message and entry.column.endswith("valueQuantity.unit")


# --- 6. table encodings, separators and header rows -------------------------------------------


def _latin1_table(sep: str = ";", title: bool = True) -> bytes:
    """A table as European spreadsheet exports write it: Latin-1, ';' and a title line."""
    lines = [
        "patient_id;pcos;site;bmi_kg_m2",
        "p1;1;Clinique Thérèse;27.5",
        "p2;0;Hôpital Nord;22",
    ]
    text = "".join(line.replace(";", sep) + "\n" for line in lines)
    return (("Export from the clinic system\n" if title else "") + text).encode("latin-1")


def _latin1_cohort(tmp_path: Path, table: bytes, **patients: Any) -> Path:
    (tmp_path / "patients.csv").write_bytes(table)
    spec = {
        "name": "latin",
        "patients": {
            "path": "patients.csv",
            "label_column": "pcos",
            "group_column": "site",
            **patients,
        },
    }
    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "cohort.yaml"


def test_latin1_semicolon_table_loads_with_the_spec_options(tmp_path: Path) -> None:
    spec = _latin1_cohort(tmp_path, _latin1_table(), encoding="latin-1", sep=";", header_row=2)
    cohort = load_cohort(spec)
    patients = cohort.patients.set_index("patient_id")
    assert list(patients["group"]) == ["Clinique Thérèse", "Hôpital Nord"]
    assert patients.loc["p2", "bmi_kg_m2"] == 22
    assert list(cohort.patients.index) == [1, 2]  # rows still count data rows from 1


def test_latin1_table_without_encoding_names_file_line_and_fix(tmp_path: Path) -> None:
    spec = _latin1_cohort(tmp_path, _latin1_table(sep=",", title=False))
    with pytest.raises(DataFileError) as caught:
        load_cohort(spec)
    message = str(caught.value)
    assert "patients.csv" in message and "line 2" in message and "encoding: latin-1" in message
    assert "byte 47" in message  # the 'è' of 'Thérèse': its offset in the file


def test_latin1_table_with_title_line_fails_clearly_without_options(tmp_path: Path) -> None:
    spec = _latin1_cohort(tmp_path, _latin1_table(), encoding="latin-1", sep=";")
    with pytest.raises(DataFileError, match=r"patients\.csv.*header_row"):
        load_cohort(spec)


def test_wrong_separator_is_named_in_the_missing_column_error(tmp_path: Path) -> None:
    spec = _latin1_cohort(tmp_path, _latin1_table(), encoding="latin-1", header_row=2)
    with pytest.raises(SchemaError, match=r"separated by ';': set sep: ';' under patients"):
        load_cohort(spec)


def test_bad_table_options_in_the_spec_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"patients\.encoding: .*unknown text encoding"):
        spec_from_dict({"name": "x", "patients": {"path": "p.csv", "encoding": "latin-9000"}})
    with pytest.raises(ConfigError, match=r"patients\.sep: .*single character"):
        spec_from_dict({"name": "x", "patients": {"path": "p.csv", "sep": ";;"}})
    with pytest.raises(ConfigError, match=r"patients\.header_row: .*greater than or equal to 1"):
        spec_from_dict({"name": "x", "patients": {"path": "p.csv", "header_row": 0}})
