"""Run folders are written atomically; configs are validated on load."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeppcos.config import load_config
from deeppcos.exceptions import ConfigError, RunError
from deeppcos.runs.folder import RunWriter, read_run_record
from tests.conftest import REPO, read_metrics


def test_an_interrupted_run_never_looks_complete(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "r1"
    writer = RunWriter(out)
    writer.write_json("metrics.json", {"a": 1})
    # Interrupted here: only the hidden partial folder exists.
    assert not out.exists() and (tmp_path / "runs" / ".r1.partial").is_dir()
    with pytest.raises(RunError, match="run folder not found"):
        read_run_record(out)
    writer = RunWriter(out)  # a new attempt replaces the partial one
    writer.write_json("metrics.json", {"a": 2})
    writer.finish({"seed": 0})
    assert read_run_record(out)["status"] == "complete"
    assert read_metrics(out) == {"a": 2}
    assert not (tmp_path / "runs" / ".r1.partial").exists()


def test_a_complete_run_is_not_overwritten_by_accident(tmp_path: Path) -> None:
    RunWriter(tmp_path / "r").finish({})
    with pytest.raises(RunError, match="--overwrite"):
        RunWriter(tmp_path / "r")
    RunWriter(tmp_path / "r", overwrite=True).finish({"again": True})
    assert read_run_record(tmp_path / "r")["again"] is True


def test_a_folder_without_record_is_reported_as_incomplete(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(RunError, match="not a complete run"):
        read_run_record(tmp_path / "half")


def test_shipped_configs_load() -> None:
    from deeppcos.tuning.spaces import load_tuning_settings

    for path in sorted((REPO / "configs").glob("*.yaml")):
        if path.name.startswith("tuning"):  # search spaces for `deeppcos tune`, not run configs
            assert load_tuning_settings(path).tabular.space
            continue
        config = load_config(path)
        assert config.tabular.enabled or config.image.enabled, path
    frozen = load_tuning_settings(REPO / "configs" / "tuning-image-frozen.yaml")
    assert set(frozen.image.space) == {"head_c", "image_size", "tta", "pool_grid"}


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match="name exactly one cohort source"):
        load_config(path)
    path.write_text("name: x\nsynthetic: {patients: 50}\nsplit: {n_fold: 3}\n")
    with pytest.raises(ConfigError, match=r"split\.n_fold: Extra inputs"):
        load_config(path)
