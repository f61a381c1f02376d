"""Shared fixtures of the image-branch tests: one thread for TensorFlow ops (2-core machines),
fixed seeds, a tiny synthetic cohort and one quickly fitted compact branch."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import keras
import pytest
import tensorflow as tf

from deeppcos.data import Cohort, load_cohort
from deeppcos.data.synthetic import generate_cohort
from deeppcos.image import ImageBranch, ImageParams

# Must run before TensorFlow's runtime starts; tf.data keeps its own threads for decoding.
with contextlib.suppress(RuntimeError):  # raised if another test already started it
    tf.config.threading.set_intra_op_parallelism_threads(1)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("image_cohort")
    generate_cohort(folder, n_patients=40, seed=0, image_size=64)
    return folder


@pytest.fixture(scope="session")
def cohort(cohort_dir: Path) -> Cohort:
    """40 synthetic patients, 64-px images (one or two per patient, a few with none)."""
    return load_cohort(cohort_dir / "cohort.yaml")


@pytest.fixture(scope="session")
def split(cohort: Cohort) -> tuple[list[str], list[str], list[str]]:
    """(train, validation, held-out) patient ids: 26 / 7 / 7."""
    ids = sorted(cohort.patients["patient_id"])
    return ids[:26], ids[26:33], ids[33:]


@pytest.fixture(scope="session")
def fitted(cohort: Cohort, split: tuple[list[str], list[str], list[str]]) -> ImageBranch:
    """A compact branch trained for two epochs: enough to exercise every method."""
    keras.utils.set_random_seed(0)
    params = ImageParams(image_size=48, max_epochs_compact=2, batch_size=16)
    train, val, _ = split
    return ImageBranch(params, seed=0).fit(cohort, train, val)
