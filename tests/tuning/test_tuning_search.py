"""A tiny search end to end: default first, user attributes, decision, tuned config, locked test
part untouched, errors for existing/missing studies, and the fusion target."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from deeppcos.config import load_config
from deeppcos.data.splits import CohortSplit
from deeppcos.exceptions import ConfigError
from deeppcos.pipeline.training import train
from deeppcos.tuning import list_studies, tune
from deeppcos.tuning.objective import load_development
from tests.tuning.conftest import write_config, write_settings


def test_tiny_tabular_search(tmp_path: Path, tiny_cohort: Path) -> None:
    config = write_config(tmp_path, tiny_cohort)
    settings = write_settings(tmp_path)
    storage = str(tmp_path / "studies" / "journal.log")
    (result,) = tune(config, "tabular", 5, space=settings, storage=storage)

    study = optuna.load_study(study_name="tiny-tabular", storage=_journal(storage))
    trials = study.trials
    assert len(trials) == 5 and result.trials.get("complete", 0) >= 1
    first = trials[0]
    assert first.user_attrs["role"] == "default" and first.state.name == "COMPLETE"
    assert first.params == {"max_depth": 3, "learning_rate": 0.05, "n_estimators": 40}
    assert len(first.user_attrs["fold_metrics"]) == 3  # 3 folds x 1 repeat
    assert {"roc_auc", "n", "seconds"} <= set(first.user_attrs["fold_metrics"][0])
    for attr in ("duration_s", "model_seed", "sampler_seed", "worker"):
        assert attr in first.user_attrs
    decision = study.user_attrs["decision"]
    assert decision["chosen"] in ("tuned", "default") and decision["reason"]

    # The tuned config sits next to the study, loads, keeps paths working and says why.
    assert result.tuned_config == tmp_path / "studies" / "tiny-tabular" / "tuned.yaml"
    text = result.tuned_config.read_text()
    assert f"# decision: {decision['chosen']}" in text
    tuned = load_config(result.tuned_config)
    expected = decision["params"] if decision["chosen"] == "tuned" else {"n_estimators": 40}
    for key, value in expected.items():
        assert tuned.tabular.params[key] == value
    summary = json.loads((result.folder / "summary.json").read_text())
    assert summary["decision"]["chosen"] == decision["chosen"]


def test_development_split_is_the_one_train_makes(tmp_path: Path, tiny_cohort: Path) -> None:
    config = load_config(write_config(tmp_path, tiny_cohort))
    dev = load_development(config)
    run = train(config, tmp_path / "run")
    trained = CohortSplit.load(run / "split.json")
    assert dev.split.assignments.to_dict() == trained.assignments.to_dict()
    test_ids = set(dev.split.test_ids)
    assert test_ids
    for train_ids, held_out in dev.folds(3, 2, seed=0):
        assert not test_ids & (set(train_ids) | set(held_out))
        assert set(train_ids) | set(held_out) == set(dev.split.development_ids)


def test_existing_study_needs_resume_and_resume_needs_a_study(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    config = write_config(tmp_path, tiny_cohort)
    settings = write_settings(tmp_path)
    storage = str(tmp_path / "journal.log")
    with pytest.raises(ConfigError, match=r"no study 'tiny-tabular'.*leave out --resume"):
        tune(config, "tabular", 2, space=settings, storage=storage, resume=True)
    tune(config, "tabular", 2, space=settings, storage=storage)
    with pytest.raises(ConfigError, match=r"already exists.*use --resume"):
        tune(config, "tabular", 3, space=settings, storage=storage)
    # A resumed study must keep its objective: other folds would make trials incomparable.
    data = yaml.safe_load(settings.read_text())
    data["tabular"]["cv"]["folds"] = 4
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"other settings \(\['search'\] differ"):
        tune(config, "tabular", 3, space=other, storage=storage, resume=True)
    (result,) = tune(config, "tabular", 3, space=settings, storage=storage, resume=True)
    assert sum(result.trials.get(s, 0) for s in ("complete", "pruned")) == 3


def test_default_outside_the_space_is_refused(tmp_path: Path, tiny_cohort: Path) -> None:
    config = write_config(tmp_path, tiny_cohort, max_depth=8)
    with pytest.raises(ConfigError, match=r"tuning.yaml with config .*max_depth=8"):
        tune(config, "tabular", 2, space=write_settings(tmp_path), storage=str(tmp_path / "j"))


def test_fusion_target_tunes_on_cached_branch_outputs(tmp_path: Path, tiny_cohort: Path) -> None:
    config = write_config(tmp_path, tiny_cohort)
    storage = str(tmp_path / "journal.log")
    (result,) = tune(config, "fusion", 4, space=write_settings(tmp_path), storage=storage)
    study = optuna.load_study(study_name="tiny-fusion", storage=_journal(storage))
    assert study.trials[0].params == {"method": "late", "late.C": 1.0}
    assert {t.params["method"] for t in study.trials} == {"late"}  # one branch: late only
    assert list((result.folder / "fusion-inputs").glob("*/oof.parquet"))
    assert len(study.trials[0].user_attrs["fold_metrics"]) == 3  # the run config's 3 folds
    tuned = load_config(result.tuned_config)
    if result.decision.chosen == "tuned":
        assert tuned.fusion.method == "late"
        assert tuned.fusion.late["C"] == result.decision.params["late.C"]


def _journal(path: str) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(path))


def test_sqlite_storage_and_listing(tmp_path: Path, tiny_cohort: Path) -> None:
    config = write_config(tmp_path, tiny_cohort)
    storage = f"sqlite:///{tmp_path}/db/studies.db"
    (result,) = tune(config, "tabular", 3, space=write_settings(tmp_path), storage=storage)
    assert result.folder == tmp_path / "db" / "tiny-tabular"
    (row,) = list_studies(storage)
    assert row["study"] == "tiny-tabular" and row["decision"] == result.decision.chosen
    assert sum(row["trials"].values()) == 3


def test_two_metrics_and_hyperband(tmp_path: Path, tiny_cohort: Path) -> None:
    config = write_config(tmp_path, tiny_cohort)
    storage = str(tmp_path / "journal.log")
    two = write_settings(tmp_path, objective={"metrics": ["roc_auc", "ece"]})
    (result,) = tune(config, "tabular", 4, space=two, storage=storage, study="two")
    study = optuna.load_study(study_name="two", storage=_journal(storage))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["roc_auc", "ece"]
    assert all(t.state.name == "COMPLETE" for t in study.trials)  # no pruning with two metrics
    assert result.decision.metric == "roc_auc"
    assert {"roc_auc", "ece"} <= set(study.trials[0].user_attrs["fold_metrics"][0])

    hyper = tmp_path / "hyper"
    hyper.mkdir()
    settings = write_settings(hyper, pruner={"kind": "hyperband", "reduction_factor": 2})
    (result,) = tune(config, "tabular", 5, space=settings, storage=storage, study="hyper")
    study = optuna.load_study(study_name="hyper", storage=_journal(storage))
    assert len(study.trials[0].intermediate_values) == 3  # the default runs every fold
    assert result.trials.get("complete", 0) + result.trials.get("pruned", 0) == 5


def test_target_all_chains_the_studies(tmp_path: Path, tiny_cohort: Path) -> None:
    config = write_config(tmp_path, tiny_cohort)
    storage = str(tmp_path / "journal.log")
    results = tune(config, "all", 2, space=write_settings(tmp_path), storage=storage)
    assert [r.target for r in results] == ["tabular", "fusion"]  # the image branch is disabled
    assert [r.study for r in results] == ["tiny-tabular", "tiny-fusion"]
    fusion = optuna.load_study(study_name="tiny-fusion", storage=_journal(storage))
    assert fusion.user_attrs["config"] == str(results[0].tuned_config.resolve())
