"""Where studies live: an Optuna journal file (the default, under ``runs/tuning/``), SQLite, or a
database server (PostgreSQL, MySQL) shared by many machines.

* A plain path (or ``journal:PATH``) is a journal file — append-only, safe for several processes
  on one machine (file lock), nothing to install.
* ``sqlite:///PATH``, ``postgresql://USER:PASSWORD@HOST:PORT/DB`` (psycopg2) and ``mysql://…``
  are opened with Optuna's ``RDBStorage`` and a heartbeat: every running trial records a
  heartbeat every ``HEARTBEAT_S`` seconds, and a trial whose heartbeat is older than
  ``GRACE_S`` (its process was killed, its machine lost) is marked FAIL by the next worker that
  starts a trial — on any machine.
* Journal files have no heartbeat, so each trial records which process runs it (host, pid and
  the process's start time) and :func:`fail_stale_trials` marks FAIL the RUNNING trials of
  processes on this host that no longer exist. It runs whenever a study is opened.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from deeppcos.exceptions import ConfigError

if TYPE_CHECKING:
    import optuna

DEFAULT_FOLDER = Path("runs") / "tuning"
DEFAULT_JOURNAL = "optuna-journal.log"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
HEARTBEAT_S = 30
GRACE_S = 120
UNCLAIMED_GRACE_S = 60  # a RUNNING trial that never recorded its worker, older than this, is lost


def default_storage(runs: Path | str = DEFAULT_FOLDER) -> str:
    """The default storage: one journal file for every study, ``runs/tuning/optuna-journal.log``."""
    return str(Path(runs) / DEFAULT_JOURNAL)


def storage_kind(url: str) -> str:
    """``journal``, ``sqlite``, ``postgresql`` or ``mysql``; ConfigError for anything else."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if not scheme:
        return "journal"
    if scheme == "postgres":
        return "postgresql"
    if scheme in RDB_SCHEMES:
        return scheme
    raise ConfigError(
        f"--storage {redact(url)!r}: unknown scheme {scheme!r}; give a journal file path, "
        "sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DB or mysql://…"
    )


def journal_path(url: str) -> Path:
    return Path(url.removeprefix("journal:")).expanduser()


_OPENED: dict[str, Any] = {}


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (see the module notes); the journal's folder is created.

    One storage object per URL and process: opening a database storage checks its schema, and
    a journal replays its log, so a second opening would only repeat that work."""
    key = f"{os.getpid()}:{url}"
    if key not in _OPENED:
        _OPENED[key] = _open(url)
    return _OPENED[key]


def _open(url: str) -> optuna.storages.BaseStorage:
    import optuna

    kind = storage_kind(url)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = journal_path(url)
        if path.is_dir():
            raise ConfigError(f"--storage {path}: is a folder; give a journal file path")
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    url = database_url(url)
    if url.startswith("postgresql+psycopg2://"):
        from deeppcos.extras import require

        require("psycopg2", "postgres", "a postgresql:// tuning storage")
    engine: dict[str, Any] = {}
    if kind == "sqlite":
        Path(url.split("///", 1)[-1]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # several workers wait for the lock
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
            )
    except Exception as exc:  # SQLAlchemy's and the driver's errors, whatever their class
        raise ConfigError(f"--storage {redact(url)}: cannot open the database: {exc}") from exc


def database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` without a driver → ``postgresql+psycopg2://``:
    SQLAlchemy 2.1 defaults to psycopg 3, while deeppcos installs psycopg2 (binary wheels). A
    URL that names its driver (``postgresql+psycopg://``) is left as it is."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and tables)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# --- who runs a trial, and is it still alive ----------------------------------------------------


def worker_token() -> str:
    """``host:pid:start`` of this process (start: its start time in clock ticks since boot on
    Linux, so a recycled pid is not mistaken for the original process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    return stat.rsplit(")", 1)[1].split()[19]


def is_alive(token: str) -> bool:
    """Whether the process behind ``worker_token()``'s answer still runs (on this host)."""
    host, pid_text, start = token.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine's: its liveness is the heartbeat's business
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start == "?" or _start_ticks(pid) == start


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose process is gone; return their numbers.

    A trial is stale when it recorded a worker on this host that no longer exists, or when it
    never recorded one and started more than ``UNCLAIMED_GRACE_S`` seconds ago. For database
    storages Optuna's heartbeat also fails the trials of lost machines.
    """
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat storages only; a no-op otherwise
    now = dt.datetime.now()
    stale = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        token = trial.user_attrs.get("worker")
        started = trial.datetime_start or now
        lost = not is_alive(token) if token else (now - started).total_seconds() > UNCLAIMED_GRACE_S
        if lost and _mark_failed(study, trial._trial_id):
            stale.append(trial.number)
    return stale


def _mark_failed(study: optuna.Study, trial_id: int) -> bool:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    reason = "its worker process was gone (marked when the study was opened)"
    try:  # the reason first: a finished trial takes no more attributes
        study._storage.set_trial_system_attr(trial_id, "fail_reason", reason)
        return study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:  # it finished meanwhile: not stale after all
        return False
