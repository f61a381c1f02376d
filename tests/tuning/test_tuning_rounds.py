"""Early stopping or fixed rounds: a tuning trial scores the booster ``train`` would save, and a
booster with a fixed number of rounds holds no patient out."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from deeppcos.config import load_config
from deeppcos.data.loaders import load_cohort
from deeppcos.pipeline.training import fit_booster_as_deployed, fit_split, inner_validation, train
from deeppcos.tabular.branch import TabularBranch, TabularParams
from deeppcos.tuning import tune
from deeppcos.tuning.storage import open_storage
from tests.conftest import read_metrics
from tests.tuning.conftest import TINY_SETTINGS, write_config, write_settings


def _ids_and_labels(spec: Path):
    cohort = load_cohort(spec)
    labels = cohort.patients.set_index("patient_id")["label"]
    return cohort, sorted(labels.index[labels.notna()]), labels


def test_fixed_rounds_hold_no_patient_out(tiny_cohort: Path) -> None:
    cohort, ids, labels = _ids_and_labels(tiny_cohort)
    fixed = TabularParams(n_estimators=30, early_stopping_rounds=None)
    assert fit_split("tabular", fixed, ids, labels, None, 0) == (ids, [])
    fit_ids, val_ids = fit_split("tabular", TabularParams(), ids, labels, None, 0)
    assert val_ids and sorted(fit_ids + val_ids) == ids
    # A network always keeps its validation part: it stops on it. A frozen head has nothing
    # to stop: it trains on every patient.
    from deeppcos.image.params import ImageParams

    assert fit_split("image", ImageParams(), ids, labels, None, 0)[1]
    frozen = ImageParams(backbone="mobilenet", weights="imagenet", width=0.25, mode="frozen")
    assert fit_split("image", frozen, ids, labels, None, 0) == (ids, [])

    model = fit_booster_as_deployed(fixed, cohort, ids, None, 0)
    everyone = TabularBranch(fixed).fit(cohort, ids).n_train_  # those with tabular data
    assert model.n_train_ == everyone and model.n_trees_ == 30


def test_early_stopped_booster_is_refit_on_every_training_patient(tiny_cohort: Path) -> None:
    cohort, ids, labels = _ids_and_labels(tiny_cohort)
    params = TabularParams(n_estimators=400, learning_rate=0.2, early_stopping_rounds=10)
    fit_ids, val_ids = inner_validation(ids, labels, None, 7)
    stopped = TabularBranch(params, seed=7).fit(cohort, fit_ids, val_ids)
    assert stopped.n_trees_ < 400  # it did stop, so the refit has something to inherit

    deployed = fit_booster_as_deployed(params, cohort, ids, None, 7)
    everyone = TabularBranch(params).fit(cohort, ids).n_train_  # those with tabular data
    assert deployed.n_train_ == everyone > stopped.n_train_
    assert deployed.n_trees_ == stopped.n_trees_


def test_search_over_the_stopping_rule_and_train_the_result(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    config = write_config(tmp_path, tiny_cohort)
    space = {
        **TINY_SETTINGS["tabular"]["space"],
        "early_stopping_rounds": {"type": "categorical", "choices": [50, None]},
    }
    settings = write_settings(
        tmp_path,
        tabular={
            **TINY_SETTINGS["tabular"],
            "space": space,
            "selection": {"rule": "best", "confirm_repeats": 0, "n_boot": 200},
        },
    )
    storage = str(tmp_path / "journal.log")
    (result,) = tune(config, "tabular", 6, space=settings, storage=storage)

    study = optuna.load_study(study_name="tiny-tabular", storage=open_storage(storage))
    tried = {t.params["early_stopping_rounds"] for t in study.trials if t.state.name == "COMPLETE"}
    assert study.trials[0].params["early_stopping_rounds"] == 50  # the config's own value first
    assert None in tried  # the search did try fixed rounds

    # Whatever won, the tuned config states the stopping rule and trains.
    tuned = yaml.safe_load(result.tuned_config.read_text())
    chosen = study.user_attrs["decision"]["params"]["early_stopping_rounds"]
    assert tuned["tabular"]["params"]["early_stopping_rounds"] == chosen
    fixed = load_config(write_config(tmp_path, tiny_cohort, early_stopping_rounds=None))
    run = train(fixed, tmp_path / "run")
    assert read_metrics(run)["branches"]["tabular"]["oof"]["roc_auc"] > 0.6
    assert TabularBranch.load(run / "tabular").n_trees_ == 40  # exactly the rounds asked for
