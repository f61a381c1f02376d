"""XGBoost's pruning callback: with ``tabular.report_every_rounds`` a booster fold that stops
early reports its validation AUC every N rounds at steps of its own, and a trial can be pruned
inside a fold; the default trial reports but is never pruned."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from deeppcos.config import load_config
from deeppcos.exceptions import ConfigError
from deeppcos.pipeline.training import fit_booster_as_deployed
from deeppcos.tabular.branch import TabularParams
from deeppcos.tuning import tune
from deeppcos.tuning.objective import (
    DEFAULT_ROLE,
    BranchEvaluator,
    Objective,
    load_development,
    xgboost_pruning_callback,
)
from deeppcos.tuning.spaces import load_tuning_settings
from deeppcos.tuning.storage import open_storage
from tests.tuning.conftest import TINY_SETTINGS, write_config, write_settings

EVERY = 10
# the tiny space allows at most 60 rounds: 6 round reports per fold, then the fold's score
STRIDE = 60 // EVERY + 1


class AlwaysPrune(optuna.pruners.BasePruner):
    """Prunes at the first chance, so a test sees where a trial can be stopped."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def _cohort_ids(tmp_path: Path, tiny_cohort: Path):
    dev = load_development(load_config(write_config(tmp_path, tiny_cohort)))
    return dev.cohort, list(dev.split.development_ids)


def test_callback_reports_every_n_rounds_and_prunes_mid_fold(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    cohort, ids = _cohort_ids(tmp_path, tiny_cohort)
    params = TabularParams(n_estimators=40, early_stopping_rounds=100, n_jobs=1)
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())

    never = study.ask()  # prunable=False: reports every 10 rounds, never stops
    callback = xgboost_pruning_callback(never, offset=14, every=EVERY, prunable=False)
    fit_booster_as_deployed(params, cohort, ids, None, 0, [callback])
    reports = study.trials[0].intermediate_values
    assert sorted(reports) == [14, 15, 16, 17]  # rounds 10, 20, 30, 40 from the offset
    assert all(0.0 <= v <= 1.0 for v in reports.values())

    pruned = study.ask()
    callback = xgboost_pruning_callback(pruned, offset=0, every=EVERY)
    with pytest.raises(optuna.TrialPruned, match="iteration 0"):
        fit_booster_as_deployed(params, cohort, ids, None, 0, [callback])
    assert list(study.trials[1].intermediate_values) == [0]  # stopped at round 10


def test_fixed_rounds_have_no_validation_part_to_watch(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    cohort, ids = _cohort_ids(tmp_path, tiny_cohort)
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask()
    fixed = TabularParams(n_estimators=40, early_stopping_rounds=None, n_jobs=1)
    model = fit_booster_as_deployed(
        fixed, cohort, ids, None, 0, [xgboost_pruning_callback(trial, 0, EVERY)]
    )
    assert model.n_trees_ == 40 and not study.trials[0].intermediate_values


def test_objective_lays_out_round_steps_and_prunes_inside_the_first_fold(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    dev = load_development(load_config(write_config(tmp_path, tiny_cohort)))
    tabular = {**TINY_SETTINGS["tabular"], "report_every_rounds": EVERY}
    settings = load_tuning_settings(write_settings(tmp_path, tabular=tabular))
    evaluator = BranchEvaluator("tabular", dev, settings.tabular, settings.objective, 0, 1)
    assert evaluator.stride == STRIDE
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    study.enqueue_trial(evaluator.default_points()[0], user_attrs={"role": DEFAULT_ROLE})
    study.optimize(Objective(evaluator, "w", 0), n_trials=2)

    default, other = study.trials
    assert default.state.name == "COMPLETE"  # the default is never pruned
    # The default (40 rounds, early stopping after 50) reports at rounds 10..40 of each of the
    # 3 folds, and each fold's held-out score at the fold's last step.
    expected = {k * STRIDE + r for k in range(3) for r in (0, 1, 2, 3, STRIDE - 1)}
    assert set(default.intermediate_values) == expected
    assert other.state.name == "PRUNED"
    assert list(other.intermediate_values) == [0]  # inside fold 0, after 10 rounds
    assert "duration_s" in other.user_attrs


def test_round_reports_in_a_real_study_and_a_two_metric_study(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    config = write_config(tmp_path, tiny_cohort)
    tabular = {**TINY_SETTINGS["tabular"], "report_every_rounds": EVERY}
    storage = str(tmp_path / "journal.log")
    tune(config, "tabular", 3, space=write_settings(tmp_path, tabular=tabular), storage=storage)
    study = optuna.load_study(study_name="tiny-tabular", storage=open_storage(storage))
    assert {STRIDE - 1, 0, 1} <= set(study.trials[0].intermediate_values)

    # Optuna takes no reports from a multi-objective trial: the callback must stay out.
    two = write_settings(
        tmp_path, tabular=tabular, objective={"metrics": ["roc_auc", "brier"]}
    )
    (result,) = tune(config, "tabular", 3, space=two, storage=storage, study="two-metrics")
    assert result.trials.get("complete") == 3


def test_round_reports_are_for_the_tabular_branch_only(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    config = load_config(write_config(tmp_path, tiny_cohort, image=True))
    image = {**TINY_SETTINGS["image"], "report_every_rounds": 5}
    settings = load_tuning_settings(write_settings(tmp_path, image=image))
    with pytest.raises(ConfigError, match=r"image.report_every_rounds: .*set it to 0"):
        BranchEvaluator("image", load_development(config), settings.image, settings.objective, 0)


def test_studies_made_before_the_setting_still_resume(tmp_path: Path, tiny_cohort: Path) -> None:
    # A study made before ``report_every_rounds`` existed stored no such key; off, the key is
    # left out of the identity, so such a study resumes. On, it is part of the identity.
    config = write_config(tmp_path, tiny_cohort)
    storage = str(tmp_path / "journal.log")
    tune(config, "tabular", 2, space=write_settings(tmp_path), storage=storage)
    study = optuna.load_study(study_name="tiny-tabular", storage=open_storage(storage))
    assert "report_every_rounds" not in study.user_attrs["deeppcos"]["search"]
    tabular = {**TINY_SETTINGS["tabular"], "report_every_rounds": EVERY}
    with pytest.raises(ConfigError, match=r"other settings \(\['search'\] differ"):
        tune(config, "tabular", 3, space=write_settings(tmp_path, tabular=tabular),
             storage=storage, resume=True)
