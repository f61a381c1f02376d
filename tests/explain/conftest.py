"""Fixtures of the explanation tests: one tiny trained run (synthetic cohort, both branches, late
fusion), loaded once per session; one thread for TensorFlow ops (2-core machines)."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path
from typing import Any

import pytest


def _single_threaded_tensorflow() -> None:
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # raised if another test already started it
        tf.config.threading.set_intra_op_parallelism_threads(1)


def tiny_config(folder: Path, method: str = "late") -> Any:
    """80 synthetic patients (64-px images), compact CNN at 32 px for 2 epochs, 2 folds."""
    from deeppcos.config import FusionConfig, RunConfig

    fusion = {"method": method} if "method" in FusionConfig.model_fields else {}
    return RunConfig.model_validate(
        {
            "name": "explain-tiny",
            "seed": 0,
            "synthetic": {
                "patients": 80,
                "seed": 1,
                "image_size": 64,
                "folder": str(folder / "cohort"),
            },
            "split": {"n_folds": 2, "test_fraction": 0.2, "group_duplicates": False},
            "tabular": {"params": {"n_estimators": 60}},
            "image": {
                "params": {
                    "backbone": "compact",
                    "image_size": 32,
                    "max_epochs_compact": 2,
                    "epochs_head": 1,
                    "batch_size": 16,
                }
            },
            "fusion": fusion,
            "base_dir": str(folder),
        }
    )


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run folder (late fusion), trained once per session (~15 s on 2 cores)."""
    from deeppcos.pipeline.training import train

    _single_threaded_tensorflow()
    folder = tmp_path_factory.mktemp("explain_run")
    return train(tiny_config(folder), folder / "run")


@pytest.fixture(scope="session")
def predictor(run_dir: Path) -> Any:
    from deeppcos.inference.predictor import load_run

    return load_run(run_dir)


@pytest.fixture(scope="session")
def cohort(predictor: Any) -> Any:
    return predictor.cohort()


@pytest.fixture(scope="session")
def make_config() -> Any:
    """``tiny_config(folder, method)``, for tests that train a run of their own."""
    return tiny_config
