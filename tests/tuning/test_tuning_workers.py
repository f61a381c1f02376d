"""Worker processes sharing one storage finish the study's budget of distinct trials."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from deeppcos.tuning import open_storage, tune
from deeppcos.tuning.workers import THREAD_VARIABLES, thread_limited_env
from tests.tuning.conftest import write_config, write_settings


def test_thread_limited_env() -> None:
    env = thread_limited_env(1)
    assert all(env[name] == "1" for name in THREAD_VARIABLES)


def test_two_workers_finish_n_distinct_trials(tmp_path: Path, tiny_cohort: Path) -> None:
    config = write_config(tmp_path, tiny_cohort)
    settings = write_settings(tmp_path, pruner={"kind": "none"})
    storage = str(tmp_path / "j.log")
    (result,) = tune(config, "tabular", 8, space=settings, storage=storage, workers=2)

    study = optuna.load_study(study_name="tiny-tabular", storage=open_storage(storage))
    done = study.get_trials(states=(TrialState.COMPLETE,))
    # Both workers count the study's finished and running trials before starting another;
    # two that check at the same instant may overshoot by one.
    assert 8 <= len(done) <= 9 and len(done) == len(study.trials)
    assert len({t.number for t in done}) == len(done)
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)  # distinct points
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2  # both processes ran trials
    assert len({t.user_attrs["sampler_seed"] for t in done}) == 2  # each its own sampler seed
    assert (result.folder / "worker-0.log").is_file() and result.tuned_config.is_file()
