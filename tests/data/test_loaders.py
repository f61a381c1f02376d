"""Loaders: generic tables and manifests, image folders, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deeppcos.data import load_cohort, load_spec, spec_from_dict
from deeppcos.exceptions import (
    ConfigError,
    DataFileError,
    EmptyCohortError,
    SchemaError,
)
from tests.conftest import write_image


def _patients_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _spec(tmp_path: Path, **over) -> dict:
    spec = {
        "name": "tiny",
        "patients": {"path": "patients.csv", "label_column": "pcos"},
        "images": {"manifest": "images.csv", "root": "."},
    }
    spec.update(over)
    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(spec))
    return spec


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Three patients, four images (one patient has none), a few labs."""
    _patients_csv(
        tmp_path / "patients.csv",
        [
            {"patient_id": "p1", "pcos": 1, "amh_ng_ml": 8.1, "lh_iu_l": 12.0, "bmi_kg_m2": 27},
            {"patient_id": "p2", "pcos": 0, "amh_ng_ml": 2.2, "lh_iu_l": 5.0, "bmi_kg_m2": 22},
            {"patient_id": "p3", "pcos": 0, "amh_ng_ml": None, "lh_iu_l": 6.1, "bmi_kg_m2": 24},
        ],
    )
    for name, seed in (("a.png", 1), ("b.jpg", 2), ("c.bmp", 3), ("d.tif", 4)):
        write_image(tmp_path / "img" / name, seed)
    pd.DataFrame(
        {
            "patient_id": ["p1", "p1", "p2", "p2"],
            "path": ["img/a.png", "img/b.jpg", "img/c.bmp", "img/d.tif"],
            "side": ["left", "right", "left", "right"],
        }
    ).to_csv(tmp_path / "images.csv", index=False)
    _spec(tmp_path, images={"manifest": "images.csv", "root": ".", "side_column": "side"})
    return tmp_path


def test_tables_cohort_has_canonical_columns(tiny: Path) -> None:
    cohort = load_cohort(tiny / "cohort.yaml")
    assert list(cohort.patients.columns[:2]) == ["patient_id", "label"]
    assert cohort.feature_columns == ["amh_ng_ml", "lh_iu_l", "bmi_kg_m2"]
    assert cohort.patients["label"].tolist() == [1, 0, 0]
    assert len(cohort.images) == 4
    assert set(cohort.images["file_format"]) == {"PNG", "JPEG", "BMP", "TIFF"}
    assert cohort.images["side"].tolist() == ["left", "right", "left", "right"]
    assert Path(cohort.images["path"][0]).is_absolute()
    summary = cohort.summary()
    assert summary["patients_with_images"] == 2
    assert summary["labels"] == {"0": 2, "1": 1}


@pytest.mark.parametrize("suffix", [".parquet", ".xlsx"])
def test_parquet_and_xlsx_load_like_csv(tiny: Path, suffix: str) -> None:
    frame = pd.read_csv(tiny / "patients.csv")
    target = tiny / f"patients{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(target)
    else:
        frame.to_excel(target, index=False)
    _spec(tiny, patients={"path": target.name, "label_column": "pcos"}, images=None)
    other = load_cohort(tiny / "cohort.yaml")
    _spec(tiny, images=None)
    csv = load_cohort(tiny / "cohort.yaml")
    pd.testing.assert_frame_equal(
        other.patients.reset_index(drop=True), csv.patients.reset_index(drop=True)
    )


def test_fingerprint_is_content_not_location(tiny: Path, tmp_path_factory) -> None:
    first = load_cohort(tiny / "cohort.yaml").fingerprint()
    assert load_cohort(tiny / "cohort.yaml").fingerprint() == first
    moved = tmp_path_factory.mktemp("moved")
    for item in tiny.rglob("*"):
        if item.is_file():
            target = moved / item.relative_to(tiny)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.read_bytes())
    assert load_cohort(moved / "cohort.yaml").fingerprint() == first
    write_image(moved / "img" / "a.png", seed=99)  # same name, other pixels
    assert load_cohort(moved / "cohort.yaml").fingerprint() != first


def test_missing_table_names_the_file(tiny: Path) -> None:
    (tiny / "patients.csv").unlink()
    with pytest.raises(DataFileError, match=r"patients\.csv: table file not found"):
        load_cohort(tiny / "cohort.yaml")


def test_duplicate_patient_ids_name_ids_and_rows(tiny: Path) -> None:
    frame = pd.read_csv(tiny / "patients.csv")
    frame.loc[2, "patient_id"] = "p1"
    frame.to_csv(tiny / "patients.csv", index=False)
    with pytest.raises(SchemaError, match=r"'p1' at rows \[1, 3\]"):
        load_cohort(tiny / "cohort.yaml")


def test_label_that_is_not_binary_names_row_and_value(tiny: Path) -> None:
    frame = pd.read_csv(tiny / "patients.csv", dtype=str)
    frame.loc[1, "pcos"] = "yes"
    frame.to_csv(tiny / "patients.csv", index=False)
    with pytest.raises(SchemaError, match=r"must be 0 or 1.*row 2: 'yes'"):
        load_cohort(tiny / "cohort.yaml")


def test_missing_label_is_kept_and_reported(tiny: Path) -> None:
    frame = pd.read_csv(tiny / "patients.csv", dtype=str)
    frame.loc[2, "pcos"] = None
    frame.to_csv(tiny / "patients.csv", index=False)
    cohort = load_cohort(tiny / "cohort.yaml")
    assert cohort.patients["label"].isna().sum() == 1
    assert any(e.row == 3 and "label missing" in e.message for e in cohort.report)


def test_text_in_numeric_cell_becomes_missing_and_is_reported(tiny: Path) -> None:
    frame = pd.read_csv(tiny / "patients.csv", dtype=str)
    frame.loc[0, "lh_iu_l"] = "n/a"
    frame.to_csv(tiny / "patients.csv", index=False)
    cohort = load_cohort(tiny / "cohort.yaml")
    assert np.isnan(cohort.patients["lh_iu_l"].iloc[0])
    (entry,) = cohort.report.by_action("coerced")
    assert (entry.row, entry.column, entry.found) == (1, "lh_iu_l", "n/a")


def test_declared_feature_of_the_wrong_type_is_an_error(tiny: Path) -> None:
    frame = pd.read_csv(tiny / "patients.csv", dtype=str)
    frame["lh_iu_l"] = ["high", "low", "normal"]
    frame.to_csv(tiny / "patients.csv", index=False)
    _spec(tiny, patients={"path": "patients.csv", "feature_columns": ["lh_iu_l"]}, images=None)
    with pytest.raises(SchemaError, match=r"'lh_iu_l' should hold numbers but 3 of 3 cells"):
        load_cohort(tiny / "cohort.yaml")


def test_unknown_columns_are_reported(tiny: Path) -> None:
    frame = pd.read_csv(tiny / "patients.csv")
    frame["favourite_colour"] = ["red", "blue", "green"]
    frame["shoe_size"] = [38, 39, 40]
    frame.to_csv(tiny / "patients.csv", index=False)
    cohort = load_cohort(tiny / "cohort.yaml")
    unknown = {e.column: e.message for e in cohort.report.by_action("unknown_column")}
    assert "not in the feature catalog" in unknown["shoe_size"]
    # Three distinct words: categories, inferred and said so.
    assert cohort.categorical_columns == ["favourite_colour"]
    (inferred,) = cohort.report.by_action("categorical")
    assert inferred.column == "favourite_colour" and "blue, green, red" in inferred.message
    # With at most two categories allowed, the same words are free text: not a feature.
    _spec(
        tiny,
        patients={"path": "patients.csv", "label_column": "pcos", "max_categories": 2},
        images=None,
    )
    cohort = load_cohort(tiny / "cohort.yaml")
    unknown = {e.column: e.message for e in cohort.report.by_action("unknown_column")}
    assert "free text" in unknown["favourite_colour"]
    assert "favourite_colour" not in cohort.feature_columns


@pytest.mark.parametrize(("policy", "kept"), [("null", False), ("keep", True)])
def test_out_of_range_values_follow_the_policy(tiny: Path, policy: str, kept: bool) -> None:
    frame = pd.read_csv(tiny / "patients.csv")
    frame.loc[1, "amh_ng_ml"] = 66.0  # the Kaggle table's impossible AMH
    frame.to_csv(tiny / "patients.csv", index=False)
    _spec(tiny, images=None, range_policy=policy)
    cohort = load_cohort(tiny / "cohort.yaml")
    (entry,) = cohort.report.by_action("out_of_range")
    assert (entry.row, entry.column, entry.found) == (2, "amh_ng_ml", "66")
    assert bool(cohort.patients["amh_ng_ml"].iloc[1] == 66.0) is kept


def test_severity_outside_levels_is_an_error(tiny: Path) -> None:
    frame = pd.read_csv(tiny / "patients.csv")
    frame["severity"] = ["severe", "none", "extreme"]
    frame.to_csv(tiny / "patients.csv", index=False)
    patients = {
        "path": "patients.csv",
        "severity_column": "severity",
        "severity_levels": ["none", "mild", "moderate", "severe"],
    }
    _spec(tiny, patients=patients, images=None)
    with pytest.raises(SchemaError, match=r"row 3: 'extreme'"):
        load_cohort(tiny / "cohort.yaml")


def test_severity_is_ordered(tiny: Path) -> None:
    frame = pd.read_csv(tiny / "patients.csv")
    frame["severity"] = ["severe", "none", None]
    frame.to_csv(tiny / "patients.csv", index=False)
    patients = {
        "path": "patients.csv",
        "severity_column": "severity",
        "severity_levels": ["none", "mild", "severe"],
    }
    _spec(tiny, patients=patients, images=None)
    severity = load_cohort(tiny / "cohort.yaml").patients["severity"]
    assert severity.cat.ordered and severity.iloc[0] > severity.iloc[1]
    assert severity.isna().iloc[2]


def test_empty_table_is_an_empty_cohort(tiny: Path) -> None:
    (tiny / "patients.csv").write_text("patient_id,pcos,amh_ng_ml\n")
    _spec(tiny, images=None)
    with pytest.raises(EmptyCohortError):
        load_cohort(tiny / "cohort.yaml")


def _image_problem(tiny: Path, name: str) -> str:
    cohort = load_cohort(tiny / "cohort.yaml")
    assert len(cohort.images) == 3
    (entry,) = [e for e in cohort.report.by_action("excluded_image")]
    assert name in entry.message
    assert entry.row is not None and entry.file.endswith("images.csv")
    return entry.message


def test_missing_image_is_excluded_and_listed(tiny: Path) -> None:
    (tiny / "img" / "b.jpg").unlink()
    assert "image file not found" in _image_problem(tiny, "b.jpg")


def test_zero_byte_image_is_excluded_and_listed(tiny: Path) -> None:
    (tiny / "img" / "b.jpg").write_bytes(b"")
    assert "empty (0 bytes)" in _image_problem(tiny, "b.jpg")


def test_non_image_with_image_extension_is_excluded(tiny: Path) -> None:
    (tiny / "img" / "b.jpg").write_text("patient notes, not a picture")
    assert "not an image" in _image_problem(tiny, "b.jpg")


def test_truncated_image_is_excluded(tiny: Path) -> None:
    data = (tiny / "img" / "a.png").read_bytes()
    (tiny / "img" / "a.png").write_bytes(data[: len(data) // 3])
    message = _image_problem(tiny, "a.png")
    assert "corrupt or truncated" in message


def test_oversized_image_is_refused_before_decoding(tiny: Path) -> None:
    _spec(tiny, images={"manifest": "images.csv", "root": ".", "max_pixels": 1000})
    cohort = load_cohort(tiny / "cohort.yaml")
    assert cohort.images.empty
    messages = [e.message for e in cohort.report.by_action("excluded_image")]
    assert len(messages) == 4 and all("decompression-bomb" in m for m in messages)


def test_image_of_unknown_patient_is_excluded(tiny: Path) -> None:
    manifest = pd.read_csv(tiny / "images.csv")
    manifest.loc[0, "patient_id"] = "p99"
    manifest.to_csv(tiny / "images.csv", index=False)
    cohort = load_cohort(tiny / "cohort.yaml")
    (entry,) = cohort.report.by_action("excluded_image")
    assert entry.found == "p99" and "not in the patients table" in entry.message


def test_manifest_without_path_column_names_what_it_has(tiny: Path) -> None:
    pd.DataFrame({"patient_id": ["p1"], "file": ["img/a.png"]}).to_csv(
        tiny / "images.csv", index=False
    )
    with pytest.raises(SchemaError, match=r"lacks column\(s\) \['path'\].*'file'"):
        load_cohort(tiny / "cohort.yaml")


def test_image_only_cohort_from_a_labelled_manifest(tiny: Path) -> None:
    manifest = pd.read_csv(tiny / "images.csv")
    manifest["finding"] = [1, 0, 0, 0]
    manifest.to_csv(tiny / "images.csv", index=False)
    _spec(tiny, patients=None, images={"manifest": "images.csv", "label_column": "finding"})
    cohort = load_cohort(tiny / "cohort.yaml")
    assert cohort.patients.set_index("patient_id")["label"].to_dict() == {"p1": 1, "p2": 0}
    assert cohort.feature_columns == []


def test_image_folder_with_class_subfolders(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for cls, seed in (("infected", 1), ("notinfected", 2)):
            write_image(tmp_path / split / cls / f"img{seed}.jpg", seed)
    write_image(tmp_path / "stray" / "lost.png", 7)
    (tmp_path / "train" / "readme.txt").write_text("not an image")
    spec = spec_from_dict(
        {
            "name": "folders",
            "format": "image-folder",
            "images": {"folder": str(tmp_path), "class_map": {"infected": 1, "notinfected": 0}},
        }
    )
    cohort = load_cohort(spec)
    assert len(cohort.images) == 4
    assert set(cohort.images["folder"]) == {
        "train/infected",
        "train/notinfected",
        "test/infected",
        "test/notinfected",
    }
    assert cohort.images.groupby("label").size().to_dict() == {0: 2, 1: 2}
    excluded = cohort.report.by_action("excluded_image")
    assert len(excluded) == 1 and "lost.png" in excluded[0].file
    assert any("readme.txt" in (e.file or "") for e in cohort.report.by_action("note"))


def test_image_modes_are_recorded(tmp_path: Path) -> None:
    write_image(tmp_path / "c" / "rgb.png", 1, channels=3)
    write_image(tmp_path / "c" / "gray.png", 2)
    write_image(tmp_path / "c" / "deep.png", 3, dtype=np.uint16)
    write_image(tmp_path / "c" / "deep.tif", 4, dtype=np.uint16)
    spec = spec_from_dict(
        {
            "name": "m",
            "format": "image-folder",
            "images": {"folder": str(tmp_path), "class_map": {"c": 1}},
        }
    )
    images = load_cohort(spec).images.set_index("image_id")
    assert images.loc["c/rgb.png", ["channels", "bit_depth", "color_mode"]].tolist() == [
        3,
        8,
        "rgb",
    ]
    assert images.loc["c/gray.png", "color_mode"] == "gray"
    assert images.loc["c/deep.png", "bit_depth"] == 16
    assert images.loc["c/deep.tif", "bit_depth"] == 16


def test_spec_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\npatients: {path: p.csv, lable_column: pcos}\n")
    with pytest.raises(ConfigError, match=r"patients\.lable_column: Extra inputs"):
        load_spec(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(path)
    with pytest.raises(ConfigError, match="spec file not found"):
        load_spec(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="a 'patients' section, an 'images' section"):
        spec_from_dict({"name": "nothing"})


def _frames(tmp_path: Path, healthy: list[int]) -> Path:
    """An image-only manifest in PCOSGen's layout: a file name and a 'Healthy' flag; frames 0
    and 1 are byte-identical copies."""
    for k in range(len(healthy)):
        write_image(tmp_path / "frames" / f"f{k}.jpg", seed=0 if k < 2 else k)
    pd.DataFrame(
        {"imagePath": [f"f{k}.jpg" for k in range(len(healthy))], "Healthy": healthy}
    ).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path


def _frames_spec(tmp_path: Path, **images) -> dict:
    return _spec(
        tmp_path,
        patients=None,
        images={
            "manifest": "labels.csv",
            "root": "frames",
            "path_column": "imagePath",
            "patient_column": "imagePath",
            "label_column": "Healthy",
            "label_map": {"1": 0, "0": 1},
            **images,
        },
    )


def test_identical_copies_with_opposite_labels_are_left_out_and_listed(tmp_path: Path) -> None:
    _frames_spec(_frames(tmp_path, [1, 0, 0, 1]))
    cohort = load_cohort(tmp_path / "cohort.yaml")
    # The label map turns "healthy" into the label's 0; the conflicting pair is gone, and so
    # are the two "patients" (each frame is its own) that had nothing else.
    assert cohort.patients.set_index("patient_id")["label"].to_dict() == {"f2.jpg": 1, "f3.jpg": 0}
    assert sorted(cohort.images["image_id"]) == ["f2.jpg", "f3.jpg"]
    copies = cohort.report.by_action("conflicting_copy")
    assert [e.found for e in copies] == ["f0.jpg", "f1.jpg"]
    assert all(e.level == "excluded" and "opposite label" in e.message for e in copies)
    assert "f1.jpg" in copies[0].message and copies[0].row is not None
    dropped = cohort.report.by_action("excluded_row")
    assert sorted(e.row for e in dropped) == ["f0.jpg", "f1.jpg"]


def test_identical_copies_can_be_kept_with_a_warning(tmp_path: Path) -> None:
    _frames_spec(_frames(tmp_path, [1, 0, 0]), conflicting_copies="keep")
    cohort = load_cohort(tmp_path / "cohort.yaml")
    assert len(cohort.images) == 3 and len(cohort.patients) == 3
    copies = cohort.report.by_action("conflicting_copy")
    assert len(copies) == 2 and all(e.level == "warning" for e in copies)
    # Copies that agree are no conflict.
    _frames_spec(_frames(tmp_path, [1, 1, 0]))
    assert not load_cohort(tmp_path / "cohort.yaml").report.by_action("conflicting_copy")


def test_a_label_outside_the_label_map_names_the_row(tmp_path: Path) -> None:
    _frames_spec(_frames(tmp_path, [1, 0, 2]))
    with pytest.raises(SchemaError, match=r"label_map \['0', '1'\] does not name: row 3: '2'"):
        load_cohort(tmp_path / "cohort.yaml")
