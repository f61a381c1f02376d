"""Tuning settings: the documented defaults, validation messages, metrics and the decision rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deeppcos.evaluation.metrics import classification_metrics
from deeppcos.exceptions import ConfigError
from deeppcos.tabular.branch import TabularParams
from deeppcos.tuning.objective import metric, sensitivity_at_specificity
from deeppcos.tuning.selection import _apply
from deeppcos.tuning.spaces import (
    SelectionSettings,
    TuningSettings,
    check_space,
    load_tuning_settings,
)
from tests.conftest import REPO


def test_configs_tuning_yaml_spells_out_the_defaults() -> None:
    assert load_tuning_settings(REPO / "configs" / "tuning.yaml") == TuningSettings()
    assert load_tuning_settings(None) == TuningSettings()


def test_default_tabular_space_contains_the_branch_default() -> None:
    space = TuningSettings().tabular.space
    point = check_space(space, {}, TabularParams, "tabular.space")
    assert point["max_depth"] == 3 and point["learning_rate"] == 0.05
    assert point["n_estimators"] == 300 and space["max_depth"].bounds() == [2, 5]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tabular:\n  space:\n    max_depth: {type: int, low: 5, high: 2}\n", "low must be below"),
        ("tabular:\n  space:\n    eta: {type: float, low: 0, high: 1, log: true}\n", "low > 0"),
        ("objective:\n  metrics: [accuracy]\n", "objective.metrics"),
        ("fusion:\n  selection: {confirm_repeats: 2}\n", "confirm_repeats must be 0"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_invalid_settings_name_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "tuning.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"tuning\.yaml") as info:
        load_tuning_settings(path)
    assert expected in str(info.value)


def test_space_must_contain_the_configs_own_value() -> None:
    space = TuningSettings().tabular.space
    with pytest.raises(ConfigError, match=r"tabular.space: unknown parameter\(s\) \['depth'\]"):
        check_space(space | {"depth": space["max_depth"]}, {}, TabularParams, "tabular.space")
    with pytest.raises(ConfigError, match=r"outside the search space for max_depth=8"):
        check_space(space, {"max_depth": 8}, TabularParams, "tabular.space")
    with pytest.raises(ConfigError, match=r"tabular.space.max_depth: 0"):
        bad = space | {"max_depth": space["max_depth"].model_copy(update={"low": 0})}
        check_space(bad, {}, TabularParams, "tabular.space")


def test_sensitivity_at_fixed_specificity() -> None:
    y = np.array([0] * 10 + [1] * 4)
    p = np.array([0.1 * i for i in range(10)] + [0.95, 0.85, 0.5, 0.05])
    # 90% specificity: 9 of 10 negatives must fall at or below the cut (0.8); 2 of 4 above it.
    assert sensitivity_at_specificity(y, p, 0.9) == 0.5
    assert sensitivity_at_specificity(y, p, 0.5) == 0.75  # cut at 0.4
    assert metric("roc_auc", y, p) == pytest.approx(25.5 / 40)  # 0.5 ties a negative
    assert np.isnan(metric("roc_auc", np.zeros(3, int), np.ones(3)))


def test_expected_calibration_error() -> None:
    y = np.array([0, 0, 1, 1])
    assert metric("ece", y, np.array([0.0, 0.0, 0.999, 1.0])) < 1e-3
    # one bin [0.5, 0.6): mean p 0.5, observed 0.5 -> 0
    assert metric("ece", y, np.full(4, 0.5)) == 0.0
    # bin [0.5, 0.6): 2 negatives at 0.5 -> 0.5 x 2/4; bin [0, 0.1): 2 positives at 0 -> 1 x 2/4
    assert metric("ece", y, np.array([0.5, 0.5, 0.0, 0.0])) == pytest.approx(0.75)


def test_the_tuning_scores_with_the_evaluations_metrics() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(120) < 0.4).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random(120), 0, 1)
    reported = classification_metrics(y, p, 0.5, n_boot=0)
    for name in ("roc_auc", "pr_auc", "brier"):
        assert metric(name, y, p) == pytest.approx(reported[name]["value"], abs=1e-12), name
    assert metric("ece", y, p) == pytest.approx(reported["ece"]["plugin"], abs=1e-12)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    log_loss = -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
    assert metric("log_loss", y, p) == pytest.approx(log_loss)
    assert np.isnan(metric("pr_auc", np.ones(3, int), np.full(3, 0.4)))  # one class: undefined


def test_rule_keeps_the_default_unless_the_gain_beats_the_noise() -> None:
    rule = SelectionSettings(rule="paired_se", min_gain_se=1.0, n_boot=500)
    noisy = np.array([0.02, -0.03, 0.01, -0.01, 0.015, -0.02, 0.03, -0.025, 0.0, 0.005])
    clear = np.array([0.02, 0.015, 0.03, 0.01, 0.025, 0.02, 0.018, 0.022, 0.012, 0.028])
    assert not _apply(noisy, rule)["keep"]
    kept = _apply(clear, rule)
    assert kept["keep"] and "beyond 1 standard error" in kept["reason"]
    boot = SelectionSettings(rule="bootstrap", n_boot=500)
    assert _apply(clear, boot)["keep"] and not _apply(noisy, boot)["keep"]
    assert not _apply(np.array([0.5]), rule)["keep"]  # one fold proves nothing
