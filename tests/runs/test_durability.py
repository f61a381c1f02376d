"""Kills and tampering: batch scoring keeps every finished chunk and resumes; ``train
--overwrite`` never leaves a half-deleted run; the feedback log detects rewritten entries."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deeppcos.exceptions import DataFileError, RunError
from deeppcos.runs.feedback import FeedbackEntry, FeedbackLog
from deeppcos.runs.folder import RunWriter, read_run_record
from tests.conftest import REPO, read_metrics

# --- batch scoring: kill, then resume ---------------------------------------------------------

CHUNK = 10
# The scoring command, slowed to ~0.25 s a chunk so the test can kill it mid-way.
SLOW_SCORE = """
import sys, time
import deeppcos.inference.batch as batch
real = batch.score_chunk
def slow(*args, **kwargs):
    time.sleep(0.25)
    return real(*args, **kwargs)
batch.score_chunk = slow
from deeppcos.cli import app
app(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tabular-only run on 70 synthetic patients (a few seconds)."""
    from deeppcos.config import load_config
    from deeppcos.pipeline.training import train

    folder = tmp_path_factory.mktemp("durability")
    config = {
        "name": "tiny-durability",
        "seed": 3,
        "synthetic": {"patients": 70, "seed": 1, "image_size": 32, "folder": str(folder / "c")},
        "split": {"n_folds": 2, "test_fraction": 0.2},
        "tabular": {"enabled": True, "params": {"n_estimators": 30}},
        "image": {"enabled": False},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return train(load_config(folder / "config.yaml"), folder / "run")


def _patients(run: Path, folder: Path) -> Path:
    """140 patients (the synthetic 70, twice under new ids): 14 chunks of 10."""
    source = pd.read_csv(run.parent / "c" / "patients.csv")
    table = pd.concat([source.assign(patient_id=source["patient_id"] + f"-{k}") for k in (0, 1)])
    path = folder / "patients.csv"
    table.to_csv(path, index=False)
    return path


def _committed(partial: Path) -> bool:
    """Something scored is on disk: a committed chunk (or, before the fix, the single file)."""
    if partial.is_dir():
        return any(partial.glob("chunk-*.parquet"))
    return partial.is_file() and partial.stat().st_size > 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_batch_keeps_finished_chunks_and_resumes(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: signal.Signals
) -> None:
    import deeppcos.inference.batch as batch

    patients = _patients(tiny_run, tmp_path)
    out = tmp_path / "scores.parquet"
    partial = tmp_path / "scores.parquet.partial"
    args = ["predict", str(tiny_run), "--patients", str(patients), "--chunk-size", str(CHUNK)]
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_SCORE, *args, "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not _committed(partial) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        child.send_signal(sig)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not out.exists()
    kept = pd.read_parquet(partial)  # every committed chunk, readable after the kill
    committed = len(list(partial.glob("chunk-*.parquet")))
    assert 1 <= committed < 14 and len(kept) == committed * CHUNK

    calls: list[int] = []
    real = batch.score_chunk

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "score_chunk", counting)
    resumed = batch.score_table(tiny_run, patients, out, chunk_size=CHUNK)
    assert resumed.resumed == committed and len(calls) == 14 - committed
    assert resumed.patients == 140 and resumed.chunks == 14
    assert not partial.exists()

    monkeypatch.setattr(batch, "score_chunk", real)
    reference = batch.score_table(tiny_run, patients, tmp_path / "ref.parquet", chunk_size=CHUNK)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(reference.out))
    assert resumed.report_csv.read_text() == reference.report_csv.read_text()
    assert resumed.report_counts == reference.report_counts
    assert resumed.modalities == reference.modalities


def test_resume_ignores_chunks_of_another_input(tiny_run: Path, tmp_path: Path) -> None:
    import deeppcos.inference.batch as batch

    patients = _patients(tiny_run, tmp_path)
    out = tmp_path / "scores.parquet"
    first = batch.score_table(tiny_run, patients, out, chunk_size=CHUNK)
    # Leave the chunks behind as an interrupted run would, then change the input.
    partial = tmp_path / "scores.parquet.partial"
    partial.mkdir()
    (partial / "chunk-000000.parquet").write_bytes(b"not from this input")
    (partial / "_resume.json").write_text(json.dumps({"input": "elsewhere"}))
    again = batch.score_table(tiny_run, patients, out, chunk_size=CHUNK)
    assert again.resumed == 0 and again.patients == first.patients
    assert not partial.exists()


# --- train --overwrite: killed at each step --------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even ``except Exception``."""


def _kill_after(monkeypatch: pytest.MonkeyPatch, operations: int, midway: bool) -> None:
    """Let ``operations`` file-system moves/deletions succeed, then die: before the next one, or
    (``midway``) after it deleted half of what it was deleting."""
    done = [0]
    real_rmtree, real_rename, real_replace = shutil.rmtree, Path.rename, Path.replace

    def tick() -> None:
        if done[0] == operations and not midway:
            raise Killed
        done[0] += 1

    def rmtree(path, *args, **kwargs):
        if done[0] == operations and midway:
            files = sorted(p for p in Path(path).rglob("*") if p.is_file())
            for file in files[: len(files) // 2]:
                file.unlink()
            raise Killed
        tick()
        return real_rmtree(path, *args, **kwargs)

    def rename(self, target):
        tick()
        return real_rename(self, target)

    def replace(self, target):
        tick()
        return real_replace(self, target)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(Path, "replace", replace)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _old_run(out: Path) -> dict[str, bytes]:
    writer = RunWriter(out)
    writer.write_json("metrics.json", {"which": "old"})
    for k in range(6):
        writer.write_json(f"curves/c{k}.json", {"k": k})
    writer.finish({"which": "old"})
    return _files(out)


@pytest.mark.parametrize(
    ("operations", "midway"),
    [(0, False), (0, True), (1, False), (2, False), (2, True), (3, False)],
)
def test_overwrite_killed_at_any_step_leaves_one_whole_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operations: int, midway: bool
) -> None:
    out = tmp_path / "runs" / "r"
    old = _old_run(out)
    writer = RunWriter(out, overwrite=True)
    writer.write_json("metrics.json", {"which": "new"})
    with monkeypatch.context() as patch:
        _kill_after(patch, operations, midway)
        with contextlib.suppress(Killed):
            writer.finish({"which": "new"})
    # The next start (a rerun with --overwrite) recovers: the old run whole, or the new one.
    again = RunWriter(out, overwrite=True)
    record = read_run_record(out)
    if record["which"] == "old":
        assert _files(out) == old
    else:
        assert read_metrics(out) == {"which": "new"}
    again.write_json("metrics.json", {"which": "third"})
    again.finish({"which": "third"})
    assert read_metrics(out) == {"which": "third"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["r"]  # nothing left aside


def test_an_incomplete_new_run_never_replaces_the_old_one(tmp_path: Path) -> None:
    out = tmp_path / "r"
    old = _old_run(out)
    out.rename(tmp_path / ".r.replaced")  # the old run aside, the new one without run.json
    (tmp_path / ".r.partial").mkdir()
    with pytest.raises(RunError, match="interrupted"):
        read_run_record(out)
    with pytest.raises(RunError, match="already there"):
        RunWriter(out)  # any start recovers first: the old run moves back, and is kept
    assert _files(out) == old


def test_a_run_half_deleted_by_an_older_version_is_replaced_with_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "r"
    _old_run(out)
    (out / "run.json").unlink()  # what a kill during the old rmtree could leave
    with pytest.raises(RunError, match="--overwrite"):
        RunWriter(out)
    RunWriter(out, overwrite=True).finish({"which": "new"})
    assert read_run_record(out)["which"] == "new"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("not a run")
    with pytest.raises(RunError, match="not a deeppcos run"):
        RunWriter(tmp_path / "mine", overwrite=True)


# --- the feedback log: a hash chain -----------------------------------------------------------


def _log(tmp_path: Path) -> FeedbackLog:
    log = FeedbackLog(tmp_path / "review.sqlite")
    for patient, label in (("P1", 1), ("P2", 0), ("P3", 1)):
        log.append(FeedbackEntry("run", patient, "dr who", False, "scan says so", label, 0.4))
    return log


def _raw(log: FeedbackLog, *statements: str) -> None:
    with sqlite3.connect(log.path) as connection:
        for statement in statements:
            connection.execute(statement)


ROW = "(2, '2024-01-01T00:00:00+00:00', 'run', 'P2', 'mallory', 0, 1, 'changed', 0.9, 1)"
INSERT_OR_REPLACE = (
    "INSERT OR REPLACE INTO feedback (entry_id, created_at, run_id, patient_id, user_name, "
    f"agrees, corrected_label, reason, risk, decision) VALUES {ROW}"
)


def test_update_after_dropping_the_trigger_is_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    assert log.label_corrections().to_dict() == {"P1": 1, "P2": 0, "P3": 1}
    _raw(
        log,
        "DROP TRIGGER feedback_no_update",
        "UPDATE feedback SET corrected_label = 1 WHERE entry_id = 2",
    )
    with pytest.raises(DataFileError, match=r"entry 2\b.*changed"):
        log.label_corrections()


def test_insert_or_replace_is_refused_and_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        _raw(log, INSERT_OR_REPLACE)
    assert log.read()["user_name"].eq("dr who").all()
    with sqlite3.connect(log.path) as connection:
        triggers = connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        names = [name for (name,) in triggers]
    _raw(log, *(f"DROP TRIGGER {name}" for name in names), INSERT_OR_REPLACE)
    with pytest.raises(DataFileError, match=r"entry 2\b"):
        log.read()


def test_deleting_a_middle_entry_is_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _raw(log, "DROP TRIGGER feedback_no_delete", "DELETE FROM feedback WHERE entry_id = 2")
    with pytest.raises(DataFileError, match=r"entry 2 is missing"):
        log.read()


def test_training_refuses_a_tampered_log(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from deeppcos.cli import app

    log = _log(tmp_path)
    _raw(log, "DROP TRIGGER feedback_no_update", "UPDATE feedback SET reason = 'x'")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "t", "synthetic": {"patients": 50}}))
    args = ["train", "-c", str(config), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*args, "--label-corrections", str(log.path)])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert str(log.path) in message and "entry 1" in message


LEGACY_SCHEMA = """
CREATE TABLE feedback (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT, created_at TEXT NOT NULL, run_id TEXT NOT NULL,
    patient_id TEXT NOT NULL, user_name TEXT NOT NULL,
    agrees INTEGER NOT NULL CHECK (agrees IN (0, 1)),
    corrected_label INTEGER CHECK (corrected_label IN (0, 1)), reason TEXT NOT NULL,
    risk REAL, decision INTEGER
);
CREATE TRIGGER feedback_no_update BEFORE UPDATE ON feedback
BEGIN SELECT RAISE(ABORT, 'the feedback log is append-only'); END;
CREATE TRIGGER feedback_no_delete BEFORE DELETE ON feedback
BEGIN SELECT RAISE(ABORT, 'the feedback log is append-only'); END;
INSERT INTO feedback (created_at, run_id, patient_id, user_name, agrees, corrected_label,
    reason, risk, decision)
VALUES ('2024-01-01T00:00:00+00:00', 'run', 'P1', 'a', 0, 1, 'why', NULL, NULL),
       ('2024-01-02T00:00:00+00:00', 'run', 'P2', 'b', 1, NULL, '', 0.25, 0);
"""


def test_a_log_without_hashes_is_migrated_once_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(LEGACY_SCHEMA)
    log = FeedbackLog(path)
    assert log.label_corrections().to_dict() == {"P1": 1}
    notes = log.notes()
    assert len(notes) == 1 and "entries 1–2" in notes[0] and "not hash-protected" in notes[0]
    log.append(FeedbackEntry("run", "P3", "c", False, "why", 0))
    assert len(log.read()) == 3 and len(log.notes()) == 1  # migrated once
    _raw(log, "DROP TRIGGER feedback_no_update", "UPDATE feedback SET agrees = 1 WHERE entry_id=1")
    with pytest.raises(DataFileError, match=r"entry 1\b"):
        log.read()
