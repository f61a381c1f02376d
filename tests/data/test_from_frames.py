"""Cohort.from_frames (issue 17 §1): DataFrames in a notebook get the same checks, cleaning and
load report as the same tables read from files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deeppcos.data import Cohort, load_cohort
from deeppcos.exceptions import SchemaError
from tests.conftest import write_image

PATIENTS = pd.DataFrame(
    {
        "patient_id": ["p1", "p2", "p3", "p4"],
        "pcos": [1, 0, 0, 1],
        "AMH": ["8.1", "2.2", "n/a", "9.0"],  # a text cell: set missing and reported
        "lh_iu_l": [12.0, 5.0, 6.1, 400.0],  # 400 IU/L: outside the plausible range
        "sex": ["F", "F", "M", "F"],  # a category, inferred
    },
    index=[10, 20, 30, 40],  # a notebook's own index: rows are still numbered 1 … n
)
SPEC = {
    "name": "frames",
    "patients": {"label_column": "pcos", "rename": {"AMH": "amh_ng_ml"}},
    "images": {"manifest": "images.csv", "root": "."},
}


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name, seed in (("a.png", 1), ("b.png", 2)):
        write_image(tmp_path / "img" / name, seed)
    PATIENTS.to_csv(tmp_path / "patients.csv", index=False)
    pd.DataFrame({"patient_id": ["p1", "p2"], "path": ["img/a.png", "img/b.png"]}).to_csv(
        tmp_path / "images.csv", index=False
    )
    spec = {**SPEC, "patients": {**SPEC["patients"], "path": "patients.csv"}}
    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def test_frames_load_as_the_same_tables_from_files(files: Path) -> None:
    from_files = load_cohort(files / "cohort.yaml")
    images = pd.read_csv(files / "images.csv")
    spec = {**SPEC, "images": {"root": str(files)}}
    from_frames = Cohort.from_frames(PATIENTS, images, spec)
    pd.testing.assert_frame_equal(
        from_frames.patients.reset_index(drop=True), from_files.patients.reset_index(drop=True)
    )
    columns = ["image_id", "patient_id", "path", "sha256", "width", "height"]
    pd.testing.assert_frame_equal(
        from_frames.images[columns].reset_index(drop=True),
        from_files.images[columns].reset_index(drop=True),
    )
    assert from_frames.report.counts() == from_files.report.counts()
    assert from_frames.fingerprint() == from_files.fingerprint()


def test_report_rows_are_positions_and_the_callers_frame_is_untouched() -> None:
    before = PATIENTS.copy()
    cohort = Cohort.from_frames(PATIENTS, spec={"name": "f", "patients": SPEC["patients"]})
    (coerced,) = cohort.report.by_action("coerced")
    assert (coerced.file, coerced.row, coerced.column) == ("<patients frame>", 3, "amh_ng_ml")
    (outside,) = cohort.report.by_action("out_of_range")
    assert (outside.row, outside.column) == (4, "lh_iu_l")
    assert np.isnan(cohort.patients.set_index("patient_id").loc["p4", "lh_iu_l"])
    assert cohort.categorical_columns == ["sex"]
    pd.testing.assert_frame_equal(PATIENTS, before)


def test_bad_frames_are_named() -> None:
    with pytest.raises(SchemaError, match=r"<patients frame>.*'patient_id'"):
        Cohort.from_frames(PATIENTS.drop(columns="patient_id"))
    with pytest.raises(SchemaError, match="a patients frame, an images frame, or both"):
        Cohort.from_frames()
    twice = pd.concat([PATIENTS, PATIENTS.iloc[:1]])
    with pytest.raises(SchemaError, match="p1"):
        Cohort.from_frames(twice, spec={"name": "f", "patients": SPEC["patients"]})
