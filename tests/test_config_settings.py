"""Every model setting in a run config is checked when the config loads, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deeppcos.cli import app
from deeppcos.config import load_config
from deeppcos.exceptions import ConfigError
from tests.conftest import REPO

RUN_CONFIGS = [
    path
    for path in sorted((REPO / "configs").glob("*.yaml"))
    if not path.name.startswith("tuning")  # search spaces, not run configs
]


def _config(tmp_path: Path, **sections: object) -> Path:
    path = tmp_path / "config.yaml"
    data = {"name": "t", "synthetic": {"patients": 40, "folder": str(tmp_path / "cohort")}}
    path.write_text(yaml.safe_dump({**data, **sections}))
    return path


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"tabular": {"params": {"max_depht": 3}}},
            "tabular.params: unknown setting 'max_depht' (did you mean 'max_depth'?)",
        ),
        ({"tabular": {"params": {"n_estimators": 0}}}, "tabular.params: n_estimators"),
        ({"image": {"params": {"image_sise": 64}}}, "image.params: unknown setting 'image_sise'"),
        ({"image": {"params": {"backbone": "resnet99"}}}, "unknown backbone 'resnet99'"),
        ({"fusion": {"late": {"C": -1}}}, "fusion.late: C must be a positive number"),
        (
            {"fusion": {"intermediate": {"n_componets": 4}}},
            "fusion.intermediate: unknown parameter(s) ['n_componets']",
        ),
        (
            {"severity": {"params": {"max_deph": 2}}},
            "severity.params: unknown setting(s) 'max_deph' (did you mean 'max_depth'?)",
        ),
        ({"severity": {"kind": "logistic", "params": {"C": 0}}}, "severity.params: C must be"),
        ({"split": {"label_noise": "drop"}}, "split.label_noise"),
    ],
)
def test_a_bad_model_setting_fails_when_the_config_loads(
    tmp_path: Path, sections: dict, expected: str
) -> None:
    path = _config(tmp_path, **sections)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value) and expected in str(error.value)


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        tabular={"params": {"max_depht": 3}},
        fusion={"late": {"C": 0}},
        severity={"params": {"n_estimators": -2}},
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    for section in ("tabular.params", "fusion.late", "severity.params"):
        assert section in str(error.value)


def test_a_disabled_section_is_not_checked(tmp_path: Path) -> None:
    path = _config(tmp_path, severity={"enabled": False, "params": {"anything": 1}})
    assert load_config(path).severity.enabled is False


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_the_shipped_configs_load(path: Path) -> None:
    load_config(path)


def test_train_refuses_a_typo_before_it_reads_a_cohort(tmp_path: Path) -> None:
    path = _config(tmp_path, tabular={"params": {"max_depht": 3}})
    result = CliRunner().invoke(app, ["train", "--config", str(path), "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "max_depht" in result.output
    assert not (tmp_path / "cohort").exists()  # nothing generated, nothing trained
