"""One study, two workers, listing and resume on every kind of storage a user can name: a
journal file, SQLite, and a real PostgreSQL server (``.ci/run`` starts one and sets
``DEEPPCOS_TEST_POSTGRES_URL``; without it that case skips)."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from deeppcos.tuning import list_studies, open_storage, tune
from tests.tuning.conftest import write_config, write_settings

URL = os.environ.get("DEEPPCOS_TEST_POSTGRES_URL")


@pytest.fixture(params=["journal", "sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "journal":
        return str(tmp_path / "studies.log")
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    return request.getfixturevalue("postgres")


@pytest.fixture(scope="module")
def postgres() -> str:
    if not URL:
        pytest.skip(
            "no PostgreSQL server: set DEEPPCOS_TEST_POSTGRES_URL="
            "postgresql://USER:PW@HOST:PORT/DB (.ci/run installs Debian's postgresql, "
            "starts it on 127.0.0.1 and sets it)"
        )
    try:
        storage = open_storage(URL)
        optuna.get_all_study_names(storage)
    except Exception as exc:
        pytest.skip(f"PostgreSQL at DEEPPCOS_TEST_POSTGRES_URL does not answer: {exc}")
    return URL


def test_two_workers_list_and_resume(storage_url: str, tmp_path: Path, tiny_cohort: Path) -> None:
    config = write_config(tmp_path, tiny_cohort)
    settings = write_settings(tmp_path, pruner={"kind": "none"})
    name = f"pg-{uuid.uuid4().hex[:8]}"
    try:
        (result,) = tune(
            config, "tabular", 6, space=settings, storage=storage_url, study=name, workers=2
        )
        if storage_url.startswith("postgresql"):
            assert "deeppcos:***@" in result.storage  # the password never reaches the output
        storage = open_storage(storage_url)
        if not storage_url.endswith(".log"):  # RDB storages: lost machines' trials get failed
            assert storage.get_heartbeat_interval() is not None
        study = optuna.load_study(study_name=name, storage=storage)
        done = study.get_trials(states=(TrialState.COMPLETE,))
        assert 6 <= len(done) <= 7
        assert len({t.user_attrs["worker"] for t in done}) == 2
        rows = {row["study"]: row for row in list_studies(storage_url)}
        assert rows[name]["target"] == "tabular"
        assert rows[name]["best_value"][0] == pytest.approx(study.best_value)
        assert rows[name]["decision"] == result.decision.chosen

        (again,) = tune(
            config,
            "tabular",
            len(done) + 2,
            space=settings,
            storage=storage_url,
            study=name,
            resume=True,
        )
        assert again.trials["complete"] == len(done) + 2
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=open_storage(storage_url))
