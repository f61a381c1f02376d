"""Fixtures of the dashboard tests: one tiny evaluated run with both modalities and one
tabular-only run left unevaluated, each trained once per session; an AppTest factory."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.dashboard_helpers import APP, TIMEOUT


def _config(folder: Path, image: bool) -> Any:
    """70 synthetic patients (32-px images), compact CNN at 32 px for 1 epoch, 2 folds."""
    from deeppcos.config import RunConfig

    return RunConfig.model_validate(
        {
            "name": "dash-tiny" if image else "dash-tabular",
            "seed": 3,
            "synthetic": {
                "patients": 70,
                "seed": 1,
                "image_size": 32,
                "folder": str(folder / "cohort"),
            },
            "split": {"n_folds": 2, "test_fraction": 0.3},
            "tabular": {"params": {"n_estimators": 40}},
            "image": {
                "enabled": image,
                "params": {
                    "backbone": "compact",
                    "weights": None,
                    "image_size": 32,
                    "epochs_head": 1,
                    "max_epochs_compact": 1,
                },
            },
            "base_dir": str(folder),
        }
    )


@pytest.fixture(scope="session")
def dashboard_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete, evaluated run with both branches (~35 s on 2 cores)."""
    import tensorflow as tf

    from deeppcos.pipeline.evaluate import evaluate_run
    from deeppcos.pipeline.training import train

    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(1)
    folder = tmp_path_factory.mktemp("dashboard")
    run = train(_config(folder, image=True), folder / "run")
    evaluate_run(run)
    return run


@pytest.fixture(scope="session")
def tabular_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run with the tabular branch only, never evaluated (~5 s)."""
    from deeppcos.pipeline.training import train

    folder = tmp_path_factory.mktemp("dashboard_tabular")
    return train(_config(folder, image=False), folder / "run")


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path | str], Any]]:
    """``app(run)``: an AppTest of the dashboard on ``run``, first page already run; configured
    as ``deeppcos dashboard`` serves it (no forced garbage collection after each rerun)."""
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    def make(run: Path | str) -> Any:
        monkeypatch.setenv("DEEPPCOS_RUN", str(run))
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        return at.run()

    before = config.get_option("runner.postScriptGC")
    config.set_option("runner.postScriptGC", False)
    yield make
    config.set_option("runner.postScriptGC", before)
