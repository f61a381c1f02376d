"""CSV files a spreadsheet can open safely: no cell from user data runs as a formula.

A spreadsheet evaluates a CSV cell that starts with ``=``, ``+``, ``-`` or ``@`` (and, in some,
one starting with a tab or a carriage return) as a formula, so a patient id, a reviewer's reason
or a load-report ``found`` value such as ``=HYPERLINK("http://…")`` would become a live link or
command when a clinician opens the file (OWASP, "CSV Injection"). Every CSV deeppcos writes for
people goes through :func:`write_csv` (or :func:`csv_text` for a download), which prefixes such a
text cell with a single quote ``'``, as OWASP recommends; the cell then reads as text.

Only text is touched: numbers in numeric columns, and text cells that are plain numbers
(``"-5"``, ``"+1.5e3"``, which a spreadsheet reads as numbers, not formulas), stay as they are.
Column names are cells too and get the same treatment.

Patient ids are not rewritten on the way *into* a run: ``deeppcos train`` refuses ids that look
like formulas (:func:`refuse_formula_ids`), because run files are joined back on ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from deeppcos.exceptions import SchemaError

__all__ = ["csv_text", "defuse", "defuse_cell", "is_formula", "refuse_formula_ids", "write_csv"]

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def is_formula(value: object) -> bool:
    """Would a spreadsheet run this cell as a formula? (text starting with a trigger character,
    unless the whole cell is a plain number)."""
    return isinstance(value, str) and value[:1] in TRIGGERS and not _NUMBER.fullmatch(value)


def defuse_cell(value: Any) -> Any:
    return "'" + value if is_formula(value) else value


def defuse(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells, column names and index labels cannot run as
    formulas; numeric columns are returned unchanged."""
    out = frame.copy()
    for position in range(out.shape[1]):
        column = out.iloc[:, position]
        if _is_text(column.dtype):
            out.isetitem(position, _defuse_series(column))
    out.columns = _defuse_index(out.columns)
    out.index = _defuse_index(out.index)
    return out


def write_csv(frame: pd.DataFrame, target: Path | str, **kwargs: Any) -> Path:
    """``frame.to_csv(target, **kwargs)``, defused (see the module notes); returns ``target``."""
    defuse(frame).to_csv(target, **kwargs)
    return Path(target)


def csv_text(frame: pd.DataFrame, **kwargs: Any) -> str:
    """The defused CSV as text (for a download button)."""
    return str(defuse(frame).to_csv(None, **kwargs))


def refuse_formula_ids(ids: Iterable[object], where: str) -> None:
    """SchemaError naming the ids that a spreadsheet would run as formulas.

    Ids are join keys: run files (label corrections, grades, predictions) are read back and
    matched on them, and reviewers' feedback names them, so an id cannot be quoted on the way out
    without breaking those joins. No real patient id starts with these characters."""
    bad = [str(i) for i in ids if is_formula(i)]
    if bad:
        shown = ", ".join(repr(i) for i in bad[:5])
        if len(bad) > 5:
            shown += f" and {len(bad) - 5} more"
        raise SchemaError(
            f"{where}: {len(bad)} patient id(s) start with =, +, -, @, a tab or a carriage return, "
            f"which spreadsheets run as a formula: {shown}. Rename them (an id must start with a "
            "letter or a digit)"
        )


def _is_text(dtype: Any) -> bool:
    return (
        pd.api.types.is_object_dtype(dtype)
        or isinstance(dtype, pd.StringDtype)
        or (
            isinstance(dtype, pd.CategoricalDtype)
            and not pd.api.types.is_numeric_dtype(dtype.categories.dtype)
        )
    )


def _defuse_series(column: pd.Series) -> pd.Series:
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = column.cat.categories
        names = [defuse_cell(c) for c in categories]
        if names == list(categories):
            return column
        if len(set(names)) == len(names):
            return column.cat.rename_categories(names)
        column = column.astype(object)  # "=a" and "'=a" both present: no longer distinct
    flags = column.map(is_formula).astype(bool)  # missing values are not text: never flagged
    if not flags.any():
        return column  # the common case: nothing to change, no copy
    out = column.copy()
    out[flags] = ["'" + value for value in column[flags]]
    return out


def _defuse_index(index: pd.Index) -> pd.Index:
    if isinstance(index, pd.MultiIndex) or not _is_text(index.dtype):
        return index
    return index.map(defuse_cell)
