"""A tiny synthetic cohort and small tuning settings shared by the tuning tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deeppcos.data.synthetic import generate_cohort

# Small and quick: 3 folds, no repeats, 1 confirmation repeat, pruning after 1 finished trial.
TINY_SETTINGS = {
    "study": {"seed": 0, "n_startup_trials": 2},
    "pruner": {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 1},
    "tabular": {
        "cv": {"folds": 3, "repeats": 1},
        "selection": {"confirm_repeats": 1, "n_boot": 200},
        "space": {
            "max_depth": {"type": "int", "low": 2, "high": 4},
            "learning_rate": {"type": "float", "low": 0.02, "high": 0.2, "log": True},
            "n_estimators": {"type": "int", "low": 20, "high": 60, "step": 20},
        },
    },
    "image": {
        "cv": {"folds": 2, "repeats": 1},
        "selection": {"confirm_repeats": 0, "n_boot": 200},
        "space": {"dropout": {"type": "float", "low": 0.0, "high": 0.5}},
    },
}


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 synthetic patients (32-px images); returns the cohort spec."""
    return generate_cohort(tmp_path_factory.mktemp("tuning-cohort"), n_patients=80, seed=3,
                           image_size=32)


def write_config(folder: Path, spec: Path, image: bool = False, **tabular: object) -> Path:
    """A run config on ``spec``: tabular branch (n_estimators 40), optionally a tiny CNN."""
    data = {
        "name": "tiny",
        "seed": 0,
        "cohort_spec": str(spec),
        "split": {"n_folds": 3, "test_fraction": 0.2},
        "tabular": {"enabled": True, "params": {"n_estimators": 40, **tabular}},
        "image": {
            "enabled": image,
            "params": {
                "backbone": "compact",
                "image_size": 32,
                "batch_size": 16,
                "max_epochs_compact": 2,
                "patience": 1,
                "augment_strength": 0.0,
            },
        },
        "fusion": {"method": "late"},
        "severity": {"enabled": False},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def write_settings(folder: Path, **overrides: object) -> Path:
    data = {**TINY_SETTINGS, **overrides}
    path = folder / "tuning.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path
