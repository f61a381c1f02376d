"""The load report: every change, exclusion and warning a loader makes, by file, row and column.

Loaders never drop or alter data silently; they record it here. ``validate`` prints the summary,
``--json`` writes all entries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import pandas as pd

Level = Literal["info", "warning", "excluded", "error"]

# What a loader did with the value or row.
ACTIONS = (
    "renamed",  # column renamed to its canonical name
    "converted",  # unit conversion applied to a whole column
    "recomputed",  # derived column recomputed from its parts
    "coerced",  # a cell that was not a number became missing
    "out_of_range",  # outside the column's plausible range (kept or nulled, see message)
    "dropped_column",  # junk or unused column removed
    "recoded",  # categorical code mapped (e.g. cycle code 5 -> irregular)
    "categorical",  # a text column read as a categorical feature
    "unseen_category",  # a category the model was not trained on: scored as missing
    "excluded_row",  # a patient row left out of the cohort
    "excluded_image",  # an image left out of the cohort
    "conflicting_copy",  # a byte-identical copy of another image file with the opposite label
    "label_noise",  # a patient the split set aside: her duplicate group's labels ignore the images
    "unknown_column",  # a column the spec and catalog do not know
    "note",  # anything else worth knowing
)


@dataclass(frozen=True)
class ReportEntry:
    level: Level
    action: str
    message: str
    file: str | None = None
    row: int | str | None = None
    column: str | None = None
    found: str | None = None
    expected: str | None = None

    def location(self, short: bool = False) -> str:
        """'file, row R, column 'C'' (``short``: the file's name without its folder)."""
        file = self.file.replace("\\", "/").rsplit("/", 1)[-1] if short and self.file else self.file
        parts = [p for p in (file, _fmt("row", self.row), _fmt("column", self.column)) if p]
        return ", ".join(parts)


def _fmt(name: str, value: object) -> str | None:
    return None if value is None else f"{name} {value!r}" if name == "column" else f"{name} {value}"


@dataclass
class LoadReport:
    """An ordered list of what happened while loading one cohort."""

    entries: list[ReportEntry] = field(default_factory=list)

    def add(
        self,
        level: Level,
        action: str,
        message: str,
        *,
        file: str | None = None,
        row: int | str | None = None,
        column: str | None = None,
        found: object = None,
        expected: str | None = None,
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown report action {action!r}; expected one of {ACTIONS}")
        self.entries.append(
            ReportEntry(
                level=level,
                action=action,
                message=message,
                file=file,
                row=row,
                column=column,
                found=None if found is None else str(found),
                expected=expected,
            )
        )

    def extend(self, other: LoadReport) -> None:
        self.entries.extend(other.entries)

    def __iter__(self) -> Iterator[ReportEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def by_action(self, action: str) -> list[ReportEntry]:
        return [e for e in self.entries if e.action == action]

    def by_level(self, level: Level) -> list[ReportEntry]:
        return [e for e in self.entries if e.level == level]

    def counts(self) -> dict[str, int]:
        """Number of entries per (level, action), as ``"level/action"`` keys."""
        return dict(Counter(f"{e.level}/{e.action}" for e in self.entries))

    def to_frame(self) -> pd.DataFrame:
        columns = list(ReportEntry.__dataclass_fields__)
        return pd.DataFrame([asdict(e) for e in self.entries], columns=columns)

    def to_records(self) -> list[dict[str, object]]:
        return [asdict(e) for e in self.entries]
