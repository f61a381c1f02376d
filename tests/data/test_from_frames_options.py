"""Cohort.from_frames's options for callers that read the frames from somewhere (issue 17): the
source a report names, rows numbered by the frame's own index (a chunk of a file), an images
table already resolved (batch scoring's manifest), and a report kept when loading fails."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from deeppcos.data import Cohort
from deeppcos.data.manifest import IMAGES_FRAME, PATIENTS_FRAME
from deeppcos.data.report import LoadReport
from deeppcos.exceptions import EmptyCohortError, SchemaError
from tests.conftest import write_image

SPEC = {"name": "chunk", "patients": {"label_column": None}}


def _chunk(first_row: int) -> pd.DataFrame:
    """Three rows of a larger file, indexed by their rows in it (as batch scoring reads them)."""
    frame = pd.DataFrame(
        {
            "patient_id": ["a", "", "c"],  # row 2 of the chunk has no id: left out
            "amh_ng_ml": ["4.1", "2.0", "n/a"],  # a text cell: missing, reported
            "lh_iu_l": ["400", "5", "6"],  # 400 IU/L: outside the plausible range
        }
    )
    frame.index = pd.RangeIndex(first_row, first_row + len(frame), name="row")
    return frame


def _where(report: LoadReport, action: str) -> list[tuple[str | None, object, str | None]]:
    return [(e.file, e.row, e.column) for e in report.by_action(action)]


def test_source_names_the_file_and_rows_are_positions_by_default() -> None:
    cohort = Cohort.from_frames(_chunk(101), spec=SPEC, source="patients.csv")
    assert _where(cohort.report, "excluded_row") == [("patients.csv", 2, "patient_id")]
    assert _where(cohort.report, "coerced") == [("patients.csv", 3, "amh_ng_ml")]
    assert _where(cohort.report, "out_of_range") == [("patients.csv", 1, "lh_iu_l")]
    default = Cohort.from_frames(_chunk(101), spec=SPEC)
    assert {e.file for e in default.report.entries} == {PATIENTS_FRAME}


def test_rows_index_keeps_the_frames_own_rows() -> None:
    cohort = Cohort.from_frames(_chunk(101), spec=SPEC, source="patients.csv", rows="index")
    assert _where(cohort.report, "excluded_row") == [("patients.csv", 102, "patient_id")]
    assert _where(cohort.report, "coerced") == [("patients.csv", 103, "amh_ng_ml")]
    assert _where(cohort.report, "out_of_range") == [("patients.csv", 101, "lh_iu_l")]
    assert cohort.patients["patient_id"].tolist() == ["a", "c"]
    with pytest.raises(SchemaError, match="rows must be"):
        Cohort.from_frames(_chunk(1), spec=SPEC, rows="file")  # type: ignore[arg-type]


def test_a_given_report_keeps_the_entries_when_every_row_is_left_out() -> None:
    report = LoadReport()
    empty = pd.DataFrame({"patient_id": ["", None], "amh_ng_ml": [1.0, 2.0]}, index=[7, 8])
    with pytest.raises(EmptyCohortError, match=r"t\.csv: no patient rows"):
        Cohort.from_frames(empty, spec=SPEC, source="t.csv", rows="index", report=report)
    assert _where(report, "excluded_row") == [
        ("t.csv", 7, "patient_id"),
        ("t.csv", 8, "patient_id"),
    ]
    cohort = Cohort.from_frames(_chunk(1), spec=SPEC, report=report)
    assert cohort.report is report and len(report.by_action("excluded_row")) == 3


def test_a_resolved_images_table_is_used_as_given(tmp_path: Path) -> None:
    """Absolute paths a manifest reader resolved (outside the working folder and any root the
    spec names) are not resolved again, nor left out; its rows keep their manifest rows."""
    good = write_image(tmp_path / "elsewhere" / "a.png", 1)
    broken = tmp_path / "elsewhere" / "b.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    images = pd.DataFrame(
        {
            "image_id": ["a.png", "b.png", "x.png"],
            "patient_id": ["a", "c", "nobody"],
            "path": [str(good), str(broken), str(good)],
        },
        index=pd.Index([11, 12, 40], name="row"),
    )
    cohort = Cohort.from_frames(
        _chunk(1),
        images,
        SPEC,
        source="patients.csv",
        images_source="images.csv",
        rows="index",
        images_resolved=True,
    )
    assert cohort.images["path"].tolist() == [str(good)]
    assert cohort.images["frame"].isna().all() and cohort.images["width"].tolist() == [64]
    excluded = sorted(_where(cohort.report, "excluded_image"), key=lambda w: str(w[1]))
    assert excluded == [("images.csv", 12, "path"), ("images.csv", 40, "patient_id")]
    # The same rows as a manifest to resolve: absolute paths outside the root are refused.
    unresolved = Cohort.from_frames(
        _chunk(1), images, {**SPEC, "images": {"root": str(tmp_path / "r")}}
    )
    assert unresolved.images.empty
    assert {e.file for e in unresolved.report.by_action("excluded_image")} == {IMAGES_FRAME}
    with pytest.raises(
        SchemaError, match=r"images\.csv: a resolved images table needs .*'image_id'"
    ):
        Cohort.from_frames(
            _chunk(1),
            images.drop(columns="image_id"),
            SPEC,
            images_source="images.csv",
            images_resolved=True,
        )


def test_numbers_given_as_numbers_are_checked_as_numbers_given_as_text() -> None:
    """Columns of plain numbers skip the text parser (a request or a notebook frame): the
    cohort and every report entry equal those of the same values written as text."""
    numbers = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d"],
            "lh_iu_l": [5.0, 400.0, float("inf"), float("nan")],  # out of range; infinite
            "amh_ng_ml": [4.1, -1.0, 2.0, 3.5],  # a negative AMH is implausible
            "bmi_kg_m2": [22, 31, 27, 19],  # integers
        }
    )
    text = numbers.astype(str).replace({"nan": ""})
    as_numbers = Cohort.from_frames(numbers, spec=SPEC)
    as_text = Cohort.from_frames(text, spec=SPEC)
    pd.testing.assert_frame_equal(as_numbers.patients, as_text.patients)
    entries = as_numbers.report.to_frame()
    pd.testing.assert_frame_equal(entries, as_text.report.to_frame())
    flagged = set(zip(entries["column"], entries["row"].astype(str), strict=True))
    assert {("lh_iu_l", "2"), ("lh_iu_l", "3"), ("amh_ng_ml", "2")} <= flagged
    assert as_numbers.patients["lh_iu_l"].isna().sum() == 3  # set missing, as the policy says
