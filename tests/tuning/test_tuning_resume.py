"""Interrupted studies lose only the running trials, and --resume finishes them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from deeppcos.tuning import tune
from deeppcos.tuning.objective import BranchEvaluator
from deeppcos.tuning.storage import is_alive, worker_token
from tests.conftest import REPO
from tests.tuning.conftest import write_config, write_settings


def _study(storage: str, name: str = "tiny-tabular") -> optuna.Study:
    return optuna.load_study(
        study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(storage))
    )


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_worker_token_liveness() -> None:
    assert is_alive(worker_token())
    assert not is_alive(f"{socket.gethostname()}:{_dead_pid()}:123")
    assert is_alive("some-other-machine:1:1")  # another host's trials: the heartbeat's business


def test_ctrl_c_then_resume(tmp_path: Path, tiny_cohort: Path, monkeypatch) -> None:
    config = write_config(tmp_path, tiny_cohort)
    settings = write_settings(tmp_path)
    storage = str(tmp_path / "journal.log")
    calls = {"n": 0}
    original = BranchEvaluator.score

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BranchEvaluator, "score", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune(config, "tabular", 6, space=settings, storage=storage)
    monkeypatch.setattr(BranchEvaluator, "score", original)
    study = _study(storage)
    states = [t.state for t in study.trials]
    assert states[:2] != [TrialState.FAIL] * 2 and states[2] == TrialState.FAIL
    assert len(states) == 3  # the interrupted trial is the only loss

    # A worker killed outright leaves a RUNNING trial behind: resume marks it FAIL.
    lost = study._storage.create_new_trial(study._study_id)
    study._storage.set_trial_user_attr(lost, "worker", f"{socket.gethostname()}:{_dead_pid()}:1")
    (result,) = tune(config, "tabular", 6, space=settings, storage=storage, resume=True)
    assert result.stale_failed == [3]
    study = _study(storage)
    assert _finished(study) == 6
    assert study.trials[3].state == TrialState.FAIL
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    params = [tuple(sorted(t.params.items())) for t in study.trials if t.state.is_finished()]
    assert study.trials[0].user_attrs["role"] == "default"
    assert len(params) >= 6


def test_killed_process_then_resume(tmp_path: Path, tiny_cohort: Path) -> None:
    """SIGKILL of a running `deeppcos tune`: its running trial is marked FAIL on --resume."""
    config = write_config(tmp_path, tiny_cohort)
    settings = write_settings(tmp_path)
    storage = str(tmp_path / "journal.log")
    command = [sys.executable, "-m", "deeppcos.cli", "tune", "--config", str(config),
               "--space", str(settings), "--storage", storage, "--trials", "500"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "tune.log").open("w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if Path(storage).is_file():
                try:
                    study = _study(storage)
                except KeyError:  # the study is being created
                    study = None
                # Kill only once a running trial has claimed its worker: a trial killed before
                # it records one is left for UNCLAIMED_GRACE_S (a slow machine widens that gap).
                if study is not None and _finished(study) >= 2 and any(
                    "worker" in t.user_attrs for t in study.get_trials(states=(TrialState.RUNNING,))
                ):
                    break
            assert process.poll() is None, (tmp_path / "tune.log").read_text()
            time.sleep(0.02)
        else:
            pytest.fail("no trial finished within 90 s")
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    study = _study(storage)
    running = [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]
    assert running, "the kill landed between two trials"
    done = _finished(study)
    (result,) = tune(config, "tabular", done + 2, space=settings, storage=storage, resume=True)
    assert result.stale_failed == running
    study = _study(storage)
    assert _finished(study) == done + 2
    assert all(study.trials[n].state == TrialState.FAIL for n in running)
