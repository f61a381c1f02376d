"""Clinicians' feedback on predictions: an append-only SQLite log beside the run folder.

A reviewer marks a prediction as agreed or not, with a reason and, when they disagree, the label
they believe is right. Entries are never edited or deleted (SQLite triggers refuse it): a change
of mind is a new entry, and the latest entry per patient wins when the log is read back as
label corrections. The log lives *beside* the run (``runs/NAME.feedback.sqlite``), not inside
it, because a run folder is a finished artefact; every entry records the run it was made on.

Opt-in learning from review: ``deeppcos train --config FILE --label-corrections LOG`` replaces a
patient's label with the reviewer's corrected label (latest entry per patient) before the split;
the run records which patients changed. Corrections from several runs of one cohort combine.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from deeppcos.exceptions import DataFileError, SchemaError

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
_SCHEMA = """
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
    decision INTEGER
);
CREATE TRIGGER IF NOT EXISTS feedback_no_update BEFORE UPDATE ON feedback
BEGIN SELECT RAISE(ABORT, 'the feedback log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS feedback_no_delete BEFORE DELETE ON feedback
BEGIN SELECT RAISE(ABORT, 'the feedback log is append-only'); END;
"""


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


class FeedbackLog:
    """The append-only log at ``path`` (created on first write)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=10)
        connection.executescript(_SCHEMA)
        return connection

    def append(self, entry: FeedbackEntry) -> int:
        """Store one entry; return its id."""
        entry.check()
        with self._connect() as connection:
            cursor = connection.execute(
                "INSERT INTO feedback (created_at, run_id, patient_id, user_name, agrees, "
                "corrected_label, reason, risk, decision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    datetime.now(UTC).isoformat(timespec="seconds"),
                    entry.run_id,
                    str(entry.patient_id),
                    entry.user_name.strip(),
                    int(entry.agrees),
                    entry.corrected_label,
                    entry.reason.strip(),
                    entry.risk,
                    None if entry.decision is None else int(entry.decision),
                ),
            )
            return int(cursor.lastrowid or 0)

    def read(self) -> pd.DataFrame:
        """Every entry, oldest first (an empty frame when the log does not exist yet)."""
        if not self.path.is_file():
            return pd.DataFrame(columns=COLUMNS)
        try:
            with sqlite3.connect(self.path) as connection:
                frame = pd.read_sql_query(
                    f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY entry_id", connection
                )
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
            raise DataFileError(f"{self.path}: not a deeppcos feedback log ({exc})") from exc
        frame["agrees"] = frame["agrees"].astype(bool)
        frame["corrected_label"] = frame["corrected_label"].astype("Int8")
        return frame

    def to_csv(self, target: Path | str) -> Path:
        self.read().to_csv(target, index=False)
        return Path(target)

    def label_corrections(self) -> pd.Series:
        """patient_id → corrected label, from each patient's latest entry that has one (an
        agreeing entry after a correction withdraws it)."""
        entries = self.read()
        if entries.empty:
            return pd.Series(dtype="Int8", name="label")
        latest = entries.groupby("patient_id", sort=True).tail(1).set_index("patient_id")
        corrected = latest["corrected_label"].dropna()
        return corrected.astype("Int8").rename("label")
