"""Tiny synthetic cohorts shared by the tabular tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeppcos.data import Cohort, load_cohort
from deeppcos.data.synthetic import generate_cohort


def _synthetic(folder: Path, with_ultrasound_columns: bool) -> Cohort:
    spec = generate_cohort(
        folder,
        n_patients=150,
        seed=0,
        image_size=32,
        with_ultrasound_columns=with_ultrasound_columns,
    )
    return load_cohort(spec)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """150 patients, labs only (follicle counts live in the images)."""
    return _synthetic(tmp_path_factory.mktemp("synthetic"), with_ultrasound_columns=False)


@pytest.fixture(scope="session")
def synthetic_us(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """150 patients with the scan report's follicle counts and ovarian volumes as columns."""
    return _synthetic(tmp_path_factory.mktemp("synthetic_us"), with_ultrasound_columns=True)
