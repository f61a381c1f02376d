"""Cross-cohort contamination: copies of one cohort's images in another, and their labels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from deeppcos.audit.cross import cross_audit
from deeppcos.cli import app
from tests.audit.test_checks import make_cohort, scan, write


@pytest.fixture
def two_cohorts(tmp_path: Path):
    """Cohort A: six distinct scans. Cohort B: a byte copy of A's scan 1 (same label), a PNG
    re-encoding of scan 2 as BMP (same pixels, opposite label), a JPEG of scan 3 (a near copy,
    same label), and three scans of its own."""
    a_rows = [
        {
            "image_id": f"a{k}",
            "patient_id": f"pa{k}",
            "path": write(tmp_path / f"a/{k}.png", scan(k)),
            "label": k % 2,
        }
        for k in range(6)
    ]
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    (b_dir / "copy1.png").write_bytes(Path(a_rows[1]["path"]).read_bytes())
    b_rows = [
        {"image_id": "b_copy", "patient_id": "pb0", "path": str(b_dir / "copy1.png"), "label": 1},
        {
            "image_id": "b_pixels",
            "patient_id": "pb1",
            "path": write(b_dir / "same2.bmp", scan(2)),
            "label": 1,
        },
        {
            "image_id": "b_near",
            "patient_id": "pb2",
            "path": write(b_dir / "near3.jpg", scan(3), quality=85),
            "label": 1,
        },
    ]
    b_rows += [
        {
            "image_id": f"b_own{k}",
            "patient_id": f"pbo{k}",
            "path": write(b_dir / f"own{k}.png", scan(50 + k)),
            "label": k % 2,
        }
        for k in range(3)
    ]
    return make_cohort(a_rows), make_cohort(b_rows)


def test_copies_are_found_at_each_strength_with_their_labels(two_cohorts) -> None:
    a, b = two_cohorts
    result = cross_audit(a, b, near_bits=6)
    pairs = result.pairs.set_index("b_image_id")
    assert set(pairs.index) == {"b_copy", "b_pixels", "b_near"}  # B's own scans: no pair
    assert pairs.loc["b_copy", "kind"] == "same_file" and pairs.loc["b_copy", "a_image_id"] == "a1"
    assert pairs.loc["b_pixels", "kind"] == "same_pixels"
    assert pairs.loc["b_near", "kind"] == "near" and pairs.loc["b_near", "a_image_id"] == "a3"
    assert pairs.loc["b_copy", "labels"] == "agree"  # 1 and 1
    assert pairs.loc["b_pixels", "labels"] == "disagree"  # scan 2 is label 0 in A
    summary = result.summary()
    assert summary["images_of_a_with_a_copy_in_b"] == 3 and summary["images_b"] == 6
    assert summary["labels"] == {"labels_agree": 2, "labels_disagree": 1, "labels_unknown": 0}


def test_a_tighter_threshold_keeps_exact_copies_only(two_cohorts) -> None:
    a, b = two_cohorts
    strict = cross_audit(a, b, near_bits=0).pairs
    assert (strict["distance"] == 0).all()
    assert {"b_copy", "b_pixels"} <= set(strict["b_image_id"])


def test_the_cli_prints_the_table_and_writes_the_pairs(tmp_path: Path) -> None:
    def folder_cohort(name: str, seeds: list[int]) -> Path:
        root = tmp_path / name
        for k, seed in enumerate(seeds):
            write(root / ("pcos" if k % 2 else "normal") / f"{name}{k}.png", scan(seed))
        spec = {
            "name": name,
            "format": "image-folder",
            "images": {"folder": str(root), "class_map": {"pcos": 1, "normal": 0}},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    first = folder_cohort("first", [1, 2, 3, 4])
    second = folder_cohort("second", [3, 9, 10, 11])  # scan 3: normal in first, normal here
    csv = tmp_path / "pairs.csv"
    out = tmp_path / "cross.json"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(first),
            "--against",
            str(second),
            "--pairs-csv",
            str(csv),
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "identical pixels" in result.output and "have a copy in" in result.output
    pairs = pd.read_csv(csv)
    assert len(pairs) >= 1 and (pairs["kind"] == "same_file").any()
    assert json.loads(out.read_text())["summary"]["pairs"] == len(pairs)


def test_an_impossible_threshold_is_refused(two_cohorts) -> None:
    a, b = two_cohorts
    with pytest.raises(ValueError, match="near_bits"):
        cross_audit(a, b, near_bits=40)


def test_bmp_really_decodes_to_the_same_pixels(tmp_path: Path) -> None:
    """The fixture's premise: a BMP of a PNG's pixels is another file with the same pixels."""
    png, bmp = write(tmp_path / "x.png", scan(2)), write(tmp_path / "x.bmp", scan(2))
    assert Path(png).read_bytes() != Path(bmp).read_bytes()
    assert (cv2.imread(png) == cv2.imread(bmp)).all()
