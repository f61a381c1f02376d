"""What a run folder holds, and what to tell a user when it is missing or incomplete.

No Streamlit here: the pages call these and show the message; tests call them directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deeppcos.exceptions import DeepPCOSError
from deeppcos.runs.folder import RUN_RECORD, read_run_record
from deeppcos.runs.layout import RunFiles
from deeppcos.runs.reader import Run

ENV_RUN = "DEEPPCOS_RUN"
DEFAULT_RUNS = (Path("demo") / "run",)
AUDIT_FILE = "audit.json"


@dataclass(frozen=True)
class RunCheck:
    """``problem`` is None when the run folder is complete; else a sentence saying what is
    wrong and ``hint`` the command that fixes it."""

    path: Path | None
    problem: str | None = None
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def initial_run() -> str:
    """The run the dashboard opens with: ``$DEEPPCOS_RUN``, else ``demo/run`` if present."""
    chosen = os.environ.get(ENV_RUN, "").strip()
    if chosen:
        return chosen
    for candidate in DEFAULT_RUNS:
        if (candidate / RUN_RECORD).is_file():
            return str(candidate.resolve())
    return ""


def check_run(text: str | Path | None) -> RunCheck:
    """Whether ``text`` names a complete run folder; a clear problem and hint when not."""
    if text is None or not str(text).strip():
        return RunCheck(
            None,
            "No run folder chosen.",
            "Type a run folder in the sidebar, or start with `deeppcos dashboard RUN` "
            "(`deeppcos demo` trains one into demo/run).",
        )
    path = Path(str(text).strip()).expanduser()
    if path.name.endswith(".partial"):
        return RunCheck(
            path,
            f"{path} is a half-written run: training was interrupted or is still running.",
            f"Wait for training to finish, or train again into "
            f"`{path.parent / path.name.removeprefix('.').removesuffix('.partial')}`.",
        )
    if not path.exists():
        return _missing(path)
    if not path.is_dir():
        return RunCheck(path, f"{path} is a file, not a run folder.", "Choose the run's folder.")
    try:
        read_run_record(path)
    except DeepPCOSError as exc:
        return RunCheck(path, str(exc), _retrain_hint(path))
    return RunCheck(path)


def _missing(path: Path) -> RunCheck:
    partial = path.parent / f".{path.name}.partial"
    if partial.exists():
        return RunCheck(
            path,
            f"{path} does not exist yet: only the half-written {partial.name} is there "
            "(training was interrupted or is still running).",
            "Wait for training to finish, or run the same `deeppcos train` command again.",
        )
    return RunCheck(
        path,
        f"Run folder not found: {path}.",
        f"Train one with `deeppcos train --config FILE --out {path}`, or `deeppcos demo`.",
    )


def _retrain_hint(path: Path) -> str:
    return f"Train the run again: `deeppcos train --config FILE --out {path} --overwrite`."


def predictor_problem(run: Path) -> str | None:
    """What keeps a complete run from loading into a predictor (None when nothing does)."""
    folder = Run(run)
    if folder.has_fusion:
        return None
    if folder.fusion_folder.is_dir():
        return (
            f"{run}: the fusion stage was written by an older deeppcos (no "
            f"{RunFiles.FUSION_RECORD}); train the run again with this version."
        )
    return f"{run}: no fusion stage in this run; retrain it with fusion enabled."


def evaluated(run: Path) -> bool:
    return Run(run).is_evaluated


def stamp(path: Path) -> int:
    """A cache key that changes when a file is rewritten (0 when it does not exist)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def audit_file(run: Path) -> Path | None:
    """The audit ``deeppcos demo`` writes beside the run (``<parent>/audit.json``), if any."""
    candidate = run.parent / AUDIT_FILE
    return candidate if candidate.is_file() else None


def storage_candidates(run: Path | None) -> list[str]:
    """Where tuning studies of this project usually are: the journal beside the runs."""
    from deeppcos.tuning.storage import DEFAULT_FOLDER, DEFAULT_JOURNAL

    places = [Path(DEFAULT_FOLDER) / DEFAULT_JOURNAL]
    if run is not None:
        places.insert(0, run.parent / "tuning" / DEFAULT_JOURNAL)
    return [str(p.resolve()) for p in places]


def default_storage(run: Path | None) -> str:
    """The first existing journal among :func:`storage_candidates`, else the usual place."""
    candidates = storage_candidates(run)
    for candidate in candidates:
        if Path(candidate).is_file():
            return candidate
    return candidates[-1]


def run_id(record: dict) -> str:
    """How feedback names the run it was given on: ``<name>@<start time>``."""
    return f"{record.get('name', 'run')}@{record.get('started', '?')}"
