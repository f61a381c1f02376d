"""Reading tables (CSV, Parquet, XLSX) and checking their cells against the feature catalog.

Rows keep their position in the source file as the frame index (1 = first data row), so every
report entry can name the row a user finds in their spreadsheet, even after rows are excluded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deeppcos.data.catalog import CATALOG
from deeppcos.data.report import LoadReport
from deeppcos.exceptions import DataFileError, SchemaError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".xlsx": "xlsx"}

# A declared numeric column with more text cells than this is the wrong type, not a few typos.
MAX_TEXT_FRACTION = 0.5


def read_table(path: Path, sheet: str | None = None) -> pd.DataFrame:
    """Read a table with every cell as found (object dtype where not typed by the format)."""
    if not path.is_file():
        raise DataFileError(f"{path}: table file not found")
    if path.stat().st_size == 0:
        raise DataFileError(f"{path}: table file is empty (0 bytes)")
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    try:
        if kind in ("csv", "tsv"):
            frame = pd.read_csv(
                path,
                dtype=str,
                sep="\t" if kind == "tsv" else ",",
                keep_default_na=False,
                na_values=[""],
            )
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        elif kind == "xlsx":
            frame = _read_xlsx(path, sheet)
        else:
            raise DataFileError(
                f"{path}: unsupported table format {path.suffix!r}; expected one of "
                f"{sorted(TABLE_SUFFIXES)}"
            )
    except DataFileError:
        raise
    except Exception as exc:  # parsers raise many types; the user needs the file and the cause
        raise DataFileError(
            f"{path}: could not read the table ({type(exc).__name__}: {exc})"
        ) from exc
    frame.columns = [str(c) for c in frame.columns]
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return frame


def _read_xlsx(path: Path, sheet: str | None) -> pd.DataFrame:
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        names = book.sheetnames
        if sheet is not None and sheet not in names:
            raise DataFileError(f"{path}: no worksheet {sheet!r}; the file has {names}")
        rows = list(book[sheet or names[0]].iter_rows(values_only=True))
    finally:
        book.close()
    if not rows:
        raise DataFileError(f"{path}: worksheet {sheet or names[0]!r} is empty")
    header, *body = rows
    header = [f"Unnamed: {i}" if h is None else str(h) for i, h in enumerate(header)]
    # Trailing all-empty rows are spreadsheet padding, not patients.
    while body and all(v is None for v in body[-1]):
        body.pop()
    return pd.DataFrame(body, columns=header, dtype=object)


def coerce_numeric(
    frame: pd.DataFrame, column: str, report: LoadReport, file: str, *, strict: bool = True
) -> pd.Series:
    """Numbers from a column; each non-numeric cell becomes missing and is reported.

    With ``strict``, a column that is mostly text raises SchemaError (wrong type) instead.
    """
    raw = frame[column]
    numbers = pd.to_numeric(raw, errors="coerce").astype("float64")
    present = raw.notna() & (raw.astype(str).str.strip() != "")
    bad = present & numbers.isna()
    if strict and present.any() and bad.sum() > MAX_TEXT_FRACTION * present.sum():
        examples = ", ".join(repr(v) for v in raw[bad].head(3))
        raise SchemaError(
            f"{file}: column {column!r} should hold numbers but {int(bad.sum())} of "
            f"{int(present.sum())} cells are text (e.g. {examples}); fix the column or leave it "
            "out of the spec's feature_columns"
        )
    for row, value in raw[bad].items():
        report.add(
            "warning",
            "coerced",
            "not a number; set to missing",
            file=file,
            row=row,
            column=column,
            found=value,
            expected="a number",
        )
    # Empty strings (CSV) are missing already; make that explicit.
    return numbers.where(present, np.nan)


def check_ranges(
    frame: pd.DataFrame, report: LoadReport, file: str, policy: str, columns: list[str]
) -> None:
    """Flag values outside the catalog's plausible range; with policy 'null', set them missing."""
    for column in columns:
        feature = CATALOG.get(column)
        if feature is None or feature.plausible is None:
            continue
        low, high = feature.plausible
        values = frame[column]
        outside = values.notna() & ((values < low) | (values > high))
        for row, value in values[outside].items():
            kept = "kept" if policy == "keep" else "set to missing"
            report.add(
                "warning",
                "out_of_range",
                f"outside the plausible range {low:g}–{high:g} {feature.unit}; {kept}",
                file=file,
                row=row,
                column=column,
                found=f"{value:g}",
                expected=f"{low:g}–{high:g} {feature.unit}",
            )
        if policy == "null" and outside.any():  # a write per column is slow on small frames
            frame.loc[outside, column] = np.nan
