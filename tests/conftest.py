"""Shared test fixtures. Tests build their own tiny cohorts; real data is read in place from
``../shared/data`` and the tests that need it skip where it is absent."""

from __future__ import annotations

import os

# Before numpy/sklearn/xgboost load: one thread each, so two cores are not oversubscribed.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _private_embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Frozen-mode embeddings go to a folder of this test session, never the user's cache."""
    os.environ["DEEPPCOS_CACHE"] = str(tmp_path_factory.mktemp("deeppcos-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def read_metrics(run: Path | str) -> dict:
    """A run's ``metrics.json`` as the file has it (the keys scripts rely on)."""
    import json

    return json.loads((Path(run) / "metrics.json").read_text(encoding="utf-8"))


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (48, 64), **kw) -> Path:
    """A small random gray or colour image in the format the suffix names."""
    rng = np.random.default_rng(seed)
    channels = kw.get("channels", 1)
    dtype = kw.get("dtype", np.uint8)
    high = 65535 if dtype == np.uint16 else 255
    shape = size if channels == 1 else (*size, channels)
    pixels = rng.integers(0, high, size=shape, endpoint=True).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def write_tabular_config(folder: Path, spec: Path, name: str, seed: int = 0) -> Path:
    """A quick tabular-only training config for a cohort spec (2 folds, 30 trees)."""
    config = {
        "name": name,
        "seed": seed,
        "cohort_spec": str(spec),
        "split": {"n_folds": 2, "test_fraction": 0.2},
        "tabular": {"enabled": True, "params": {"n_estimators": 30}},
        "image": {"enabled": False},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- trained runs shared by the inference, evaluation and CLI tests (session-wide) ----


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
