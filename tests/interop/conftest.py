"""Tiny trained runs shared by the interoperability tests (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


def tiny_config(folder: Path, *, image: bool, patients: int = 70) -> Path:
    config = {
        "name": "tiny-interop",
        "seed": 3,
        "synthetic": {
            "patients": patients,
            "seed": 1,
            "image_size": 48,
            "folder": str(folder / "cohort"),
        },
        "split": {"n_folds": 2, "test_fraction": 0.2},
        "tabular": {"enabled": True, "params": {"n_estimators": 40}},
        "image": {
            "enabled": image,
            "params": {
                "backbone": "compact",
                "image_size": 32,
                "epochs_head": 1,
                "max_epochs_compact": 1,
            },
        },
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _train(folder: Path, image: bool) -> Path:
    from deeppcos.config import load_config
    from deeppcos.pipeline.training import train

    return train(load_config(tiny_config(folder, image=image)), folder / "run")


@pytest.fixture(scope="session")
def tabular_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tabular-only run on 70 synthetic patients (a few seconds)."""
    return _train(tmp_path_factory.mktemp("tabular-run"), image=False)


@pytest.fixture(scope="session")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tabular + image run (compact CNN at 32 px, one epoch): for the slow tests."""
    return _train(tmp_path_factory.mktemp("image-run"), image=True)
