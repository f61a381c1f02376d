"""Clinicians' feedback on predictions: an append-only SQLite log beside the run folder.

A reviewer marks a prediction as agreed or not, with a reason and, when they disagree, the label
they believe is right. Entries are never edited or deleted (SQLite triggers refuse it): a change
of mind is a new entry, and the latest entry per patient wins when the log is read back as
label corrections. The log lives *beside* the run (``runs/NAME.feedback.sqlite``), not inside
it, because a run folder is a finished artefact; every entry records the run it was made on.

Opt-in learning from review: ``deeppcos train --config FILE --label-corrections LOG`` replaces a
patient's label with the reviewer's corrected label (latest entry per patient) before the split;
the run records which patients changed. Corrections from several runs of one cohort combine.

Tamper evidence: each entry stores ``entry_hash``, the SHA-256 of the previous entry's hash and
its own content (canonical JSON of every column), so changing, replacing or removing an entry
outside deeppcos breaks the chain from that entry on. The chain is checked whenever the log is
read (the dashboard, exports, ``train --label-corrections``); a break is a
:class:`~deeppcos.exceptions.LogIntegrityError` naming the file and the first bad entry. The
triggers refuse UPDATE, DELETE and the delete-then-insert of ``INSERT OR REPLACE``; the chain
catches what they no longer can once someone drops them. It cannot stop whoever rewrites the whole
chain by hand (there is no secret); keep a copy of the latest hash elsewhere if that matters.

A log written before the chain existed is migrated when it is first opened: the chain is computed
over its entries as they are then, and a note in ``feedback_notes`` says which entries were not
protected before that moment.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from deeppcos.exceptions import DataFileError, LogIntegrityError, SchemaError
from deeppcos.runs.csvsafe import write_csv

__all__ = ["FeedbackEntry", "FeedbackLog", "feedback_path"]

COLUMNS = [
    "entry_id",
    "created_at",
    "run_id",
    "patient_id",
    "user_name",
    "agrees",
    "corrected_label",
    "reason",
    "risk",
    "decision",
]
CHAIN_VERSION = 1  # PRAGMA user_version of a log whose entries carry entry_hash
GENESIS = "0" * 64  # the "previous hash" of the first entry
_APPEND_ONLY = "the feedback log is append-only"
_TABLES = """
CREATE TABLE IF NOT EXISTS feedback (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    run_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    agrees INTEGER NOT NULL CHECK (agrees IN (0, 1)),
    corrected_label INTEGER CHECK (corrected_label IN (0, 1)),
    reason TEXT NOT NULL,
    risk REAL,
    decision INTEGER,
    entry_hash TEXT
);
"""
_NOTES = """
CREATE TABLE IF NOT EXISTS feedback_notes (
    note_id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    note TEXT NOT NULL
);
"""
# Refusals, re-created whenever one is missing. INSERT OR REPLACE deletes the old row without
# firing delete triggers (unless that connection turned recursive_triggers on), so a reused entry
# id is refused before the insert instead.
_TRIGGERS = {
    "feedback_no_update": "BEFORE UPDATE ON feedback",
    "feedback_no_delete": "BEFORE DELETE ON feedback",
    "feedback_no_replace": "BEFORE INSERT ON feedback "
    "WHEN EXISTS (SELECT 1 FROM feedback WHERE entry_id = NEW.entry_id)",
    "feedback_notes_no_update": "BEFORE UPDATE ON feedback_notes",
    "feedback_notes_no_delete": "BEFORE DELETE ON feedback_notes",
}


def feedback_path(run: Path | str) -> Path:
    """Where a run's feedback log lives: ``<parent>/<run name>.feedback.sqlite``."""
    run = Path(run).resolve()
    return run.parent / f"{run.name}.feedback.sqlite"


@dataclass(frozen=True)
class FeedbackEntry:
    run_id: str
    patient_id: str
    user_name: str
    agrees: bool
    reason: str
    corrected_label: int | None = None
    risk: float | None = None
    decision: bool | None = None

    def check(self) -> None:
        for name in ("run_id", "patient_id", "user_name"):
            if not str(getattr(self, name)).strip():
                raise SchemaError(f"feedback needs a non-empty {name}")
        if not self.agrees and not self.reason.strip():
            raise SchemaError("say why you disagree: the reason is required")
        if self.corrected_label not in (None, 0, 1):
            raise SchemaError(
                f"corrected_label must be 0, 1 or empty; got {self.corrected_label!r}"
            )
        if self.agrees and self.corrected_label is not None:
            raise SchemaError("an agreeing entry cannot carry a corrected label")

    def values(self, created_at: str) -> tuple[Any, ...]:
        """The stored columns after ``entry_id``, as SQLite gives them back (TEXT as str,
        INTEGER as int, REAL as float, NaN as NULL): the hash is computed from these."""
        risk = None if self.risk is None or math.isnan(float(self.risk)) else float(self.risk)
        return (
            created_at,
            str(self.run_id),
            str(self.patient_id),
            self.user_name.strip(),
            int(self.agrees),
            None if self.corrected_label is None else int(self.corrected_label),
            self.reason.strip(),
            risk,
            None if self.decision is None else int(self.decision),
        )


def entry_hash(previous: str, row: Sequence[Any]) -> str:
    """SHA-256 of the previous entry's hash and this entry's ``COLUMNS`` values (canonical
    JSON: the same values always give the same text)."""
    content = json.dumps(list(row), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{previous}\n{content}".encode()).hexdigest()


class FeedbackLog:
    """The append-only log at ``path`` (created on first write)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @contextmanager
    def _open(self, create: bool) -> Iterator[sqlite3.Connection]:
        """A connection with the schema checked (a pre-chain log migrated, a dropped trigger
        re-created); ``create`` makes the tables of a new log, else a file without them is not
        a feedback log."""
        try:
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        except sqlite3.Error as exc:
            raise DataFileError(f"{self.path}: cannot open the feedback log ({exc})") from exc
        try:
            if self._changes(connection, create):  # reads only: a read-only log can be read
                with _transaction(connection):  # one writer; checked again under its lock
                    self._set_up(connection, create)
            yield connection
        except sqlite3.DatabaseError as exc:
            raise DataFileError(f"{self.path}: not a usable deeppcos feedback log ({exc})") from exc
        finally:
            connection.close()

    def _changes(self, connection: sqlite3.Connection, create: bool) -> list[str]:
        """What the file lacks: tables, the hash column (a pre-chain log), triggers."""
        names = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        if "feedback" not in names:
            if not create:
                raise DataFileError(f"{self.path}: not a deeppcos feedback log (no feedback table)")
            return ["feedback"]
        columns = {row[1] for row in connection.execute("PRAGMA table_info(feedback)")}
        if "entry_hash" not in columns:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version >= CHAIN_VERSION:
                raise LogIntegrityError(
                    f"{self.path}: the entry_hash column of this hash-chained feedback log was "
                    "removed outside deeppcos; its entries can no longer be verified. Restore "
                    "the log from a backup"
                )
            return ["entry_hash"]
        return [name for name in ("feedback_notes", *_TRIGGERS) if name not in names]

    def _set_up(self, connection: sqlite3.Connection, create: bool) -> None:
        changes = self._changes(connection, create)
        if "feedback" in changes:
            connection.execute(_TABLES)
            connection.execute(f"PRAGMA user_version = {CHAIN_VERSION}")
        connection.execute(_NOTES)
        if "entry_hash" in changes:
            self._migrate(connection)
        for name, when in _TRIGGERS.items():
            connection.execute(
                f"CREATE TRIGGER IF NOT EXISTS {name} {when} "
                f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"
            )

    def _migrate(self, connection: sqlite3.Connection) -> None:
        """Add the hash chain to a log written before it existed, with a note saying so."""
        connection.execute("ALTER TABLE feedback ADD COLUMN entry_hash TEXT")
        connection.execute("DROP TRIGGER IF EXISTS feedback_no_update")  # re-created after
        rows = connection.execute(
            f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY entry_id"
        ).fetchall()
        previous = GENESIS
        for row in rows:
            previous = entry_hash(previous, row)
            connection.execute(
                "UPDATE feedback SET entry_hash = ? WHERE entry_id = ?", (previous, row[0])
            )
        from deeppcos._version import __version__

        covered = f"entries {rows[0][0]}–{rows[-1][0]}" if rows else "no entries"
        connection.execute(
            "INSERT INTO feedback_notes (created_at, note) VALUES (?, ?)",
            (
                _now(),
                f"hash chain added by deeppcos {__version__}: {covered} were written before it "
                "and were not hash-protected until now; any later change to any entry is "
                "detected",
            ),
        )
        connection.execute(f"PRAGMA user_version = {CHAIN_VERSION}")

    def append(self, entry: FeedbackEntry) -> int:
        """Store one entry, chained to the latest one; return its id."""
        entry.check()
        with self._open(create=True) as connection, _transaction(connection):
            last = connection.execute(
                "SELECT entry_id, entry_hash FROM feedback ORDER BY entry_id DESC LIMIT 1"
            ).fetchone()
            used = connection.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'feedback'"
            ).fetchone()
            # The id is fixed before the insert because the hash covers it (and AUTOINCREMENT
            # never reuses one: a removed last entry leaves a gap the check reports).
            entry_id = max(used[0] if used else 0, last[0] if last else 0) + 1
            row = (entry_id, *entry.values(_now()))
            digest = entry_hash(last[1] if last and last[1] else GENESIS, row)
            connection.execute(
                f"INSERT INTO feedback ({', '.join(COLUMNS)}, entry_hash) "
                f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
                (*row, digest),
            )
            return entry_id

    def read(self, *, verify: bool = True) -> pd.DataFrame:
        """Every entry, oldest first (an empty frame when the log does not exist yet); the hash
        chain is checked first (``verify=False`` only to inspect a log that fails it)."""
        if not self.path.is_file():
            return pd.DataFrame(columns=COLUMNS)
        with self._open(create=False) as connection:
            query = f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY entry_id"
            if verify:
                self._verify(connection)
            try:
                frame = pd.read_sql_query(query, connection)
            except pd.errors.DatabaseError as exc:
                raise DataFileError(f"{self.path}: not a deeppcos feedback log ({exc})") from exc
        frame["agrees"] = frame["agrees"].astype(bool)
        frame["corrected_label"] = frame["corrected_label"].astype("Int8")
        return frame

    def _verify(self, connection: sqlite3.Connection) -> None:
        """LogIntegrityError at the first entry that breaks the chain (changed, replaced,
        added or removed outside deeppcos)."""
        rows = connection.execute(
            f"SELECT {', '.join(COLUMNS)}, entry_hash FROM feedback ORDER BY entry_id"
        )
        previous, previous_id = GENESIS, 0
        for *row, stored in rows:
            entry_id = row[0]
            if stored is None:
                self._broken(
                    f"entry {entry_id} has no hash: it was added or replaced outside deeppcos"
                )
            if stored != entry_hash(previous, row):
                if entry_id != previous_id + 1:
                    self._broken(_missing(previous_id + 1, entry_id - 1))
                self._broken(
                    f"entry {entry_id} was changed or replaced outside deeppcos: its content no "
                    "longer matches the hash chain"
                )
            previous, previous_id = stored, entry_id
        used = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'feedback'")
        (last,) = used.fetchone() or (0,)
        if last > previous_id:
            self._broken(_missing(previous_id + 1, last) + " (the newest)")

    def _broken(self, what: str) -> None:
        raise LogIntegrityError(
            f"{self.path}: feedback {what}. The log is append-only and its "
            "entries are hash-chained; it cannot be trusted for training. Restore it from a "
            "backup (FeedbackLog.read(verify=False) shows the entries as they are)"
        )

    def notes(self) -> list[str]:
        """The log's own notes (e.g. when its hash chain was added), oldest first."""
        if not self.path.is_file():
            return []
        with self._open(create=False) as connection:
            rows = connection.execute("SELECT note FROM feedback_notes ORDER BY note_id")
            return [note for (note,) in rows]

    def to_csv(self, target: Path | str) -> Path:
        return write_csv(self.read(), target, index=False)

    def label_corrections(self) -> pd.Series:
        """patient_id → corrected label, from each patient's latest entry that has one (an
        agreeing entry after a correction withdraws it)."""
        entries = self.read()
        if entries.empty:
            return pd.Series(dtype="Int8", name="label")
        latest = entries.groupby("patient_id", sort=True).tail(1).set_index("patient_id")
        corrected = latest["corrected_label"].dropna()
        return corrected.astype("Int8").rename("label")


def _missing(first: int, last: int) -> str:
    which = f"entry {first} is" if first == last else f"entries {first}–{last} are"
    return f"{which} missing: removed outside deeppcos"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on any error): one writer at a time, all or nothing."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
