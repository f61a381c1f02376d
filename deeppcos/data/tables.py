"""Reading tables (CSV, Parquet, XLSX) and checking their cells against the feature catalog.

Rows keep their position in the source file as the frame index (1 = first data row), so every
report entry can name the row a user finds in their spreadsheet, even after rows are excluded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from deeppcos.data.report import LoadReport
from deeppcos.data.spec import PatientsSpec
from deeppcos.exceptions import ConfigError, DataFileError, SchemaError
from deeppcos.knowledge.ranges import SOURCE_TEXT, RangeRule, range_rules

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".xlsx": "xlsx"}

# A declared numeric column with more text cells than this is the wrong type, not a few typos.
MAX_TEXT_FRACTION = 0.5


def read_table(
    path: Path,
    sheet: str | None = None,
    *,
    encoding: str | None = None,
    sep: str | None = None,
    header_row: int = 1,
    spec_section: str | None = None,
) -> pd.DataFrame:
    """Read a table with every cell as found (object dtype where not typed by the format).

    ``encoding`` and ``sep`` apply to CSV/TSV (default UTF-8, and ',' or tab by suffix);
    ``header_row`` is the line (CSV/TSV) or worksheet row (XLSX) holding the column names,
    1 = the first. ``spec_section`` names the spec section these options live in (such as
    "patients"), so error messages can say where to set them.
    """
    if not path.is_file():
        raise DataFileError(f"{path}: table file not found")
    if path.stat().st_size == 0:
        raise DataFileError(f"{path}: table file is empty (0 bytes)")
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    _check_options(path, kind, encoding, sep, header_row, spec_section)
    try:
        if kind in ("csv", "tsv"):
            frame = _read_text(path, kind, encoding, sep, header_row, spec_section)
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        elif kind == "xlsx":
            frame = _read_xlsx(path, sheet, header_row)
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


def read_patients_table(path: Path, pspec: PatientsSpec) -> pd.DataFrame:
    """The patients table, read with the spec's sheet, encoding, separator and header row."""
    return read_table(
        path,
        pspec.sheet,
        encoding=pspec.encoding,
        sep=pspec.sep,
        header_row=pspec.header_row,
        spec_section="patients",
    )


def _check_options(
    path: Path,
    kind: str | None,
    encoding: str | None,
    sep: str | None,
    header_row: int,
    section: str | None,
) -> None:
    """Options that cannot apply to this kind of file are a spec mistake, not to be ignored."""
    where = f"{section}." if section else ""
    if kind in ("parquet", "xlsx") and (encoding is not None or sep is not None):
        raise ConfigError(
            f"{path}: {where}encoding and {where}sep apply to CSV/TSV files only; this is a "
            f"{kind} file, which stores its own encoding and columns"
        )
    if kind == "parquet" and header_row != 1:
        raise ConfigError(f"{path}: {where}header_row does not apply to a Parquet file")


def _read_text(
    path: Path,
    kind: str,
    encoding: str | None,
    sep: str | None,
    header_row: int,
    section: str | None,
) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            sep=sep or ("\t" if kind == "tsv" else ","),
            encoding=encoding,
            skiprows=header_row - 1,  # lines above the header (a title, an export banner)
            keep_default_na=False,
            na_values=[""],
        )
    except UnicodeDecodeError as exc:
        raise DataFileError(_decoding_problem(path, encoding, section)) from exc
    except pd.errors.ParserError as exc:
        where = f" under {section}" if section else ""
        raise DataFileError(
            f"{path}: could not split the table into columns ({exc}); if the column names are "
            f"not on the first line, set header_row{where} in the spec; if columns are "
            f"separated by another character, set sep{where} (e.g. sep: ';')"
        ) from exc
    if not isinstance(frame.index, pd.RangeIndex):
        # Rows with more fields than the header make pandas take the first fields as an index,
        # which the 1-based row numbering then discards: columns would shift without a word.
        where = f" under {section}" if section else ""
        raise DataFileError(
            f"{path}: rows have more fields than the header line ({len(frame.columns)} column "
            f"name(s)); if the column names are not on line 1, set header_row{where} in the "
            f"spec; if columns are separated by another character, set sep{where}; or remove "
            "the separator at the end of each row"
        )
    return frame


def _decoding_problem(path: Path, encoding: str | None, section: str | None) -> str:
    """Where decoding fails (byte offset and line, counted in the file itself: pandas' own
    position is within a buffer) and how to fix it. The bytes themselves are not shown."""
    name = encoding or "utf-8"
    data = path.read_bytes()  # only on this error path, to find the first bad byte
    try:
        data.decode(name)
        position = ""
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        position = f" at byte {exc.start} (line {line})"
    where = f"under {section} " if section else ""
    if encoding is None:
        fix = (
            f"the file is probably in another encoding, such as Latin-1 or Windows-1252: set "
            f"'encoding: latin-1' (or cp1252) {where}in the spec"
            if section
            else "the file is probably in another encoding, such as Latin-1: save it as UTF-8"
        )
        return f"{path}: not valid UTF-8 text{position}; {fix}"
    return (
        f"{path}: not valid {encoding} text{position}, the encoding the spec names {where}"
        "(encoding); set the file's real encoding there"
    )


def _read_xlsx(path: Path, sheet: str | None, header_row: int = 1) -> pd.DataFrame:
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
    if len(rows) < header_row:
        raise DataFileError(
            f"{path}: worksheet {sheet or names[0]!r} has {len(rows)} row(s); expected the "
            f"column names on row {header_row}"
        )
    header, *body = rows[header_row - 1 :]
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
    if is_plain_number_dtype(raw.dtype):  # nothing to parse (a frame built in memory)
        return raw.astype("float64")
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
    frame: pd.DataFrame,
    report: LoadReport,
    file: str,
    policy: str,
    columns: list[str],
    rules: Mapping[str, RangeRule] | None = None,
) -> None:
    """Flag values outside each column's range; with policy 'null', set them missing.

    ``rules`` (from :func:`deeppcos.knowledge.ranges.rules_for_spec`) say which range applies
    to which column and where it came from; None means the catalog's ranges for a PCOS cohort.
    Each report entry names the range and its source."""
    if rules is None:
        rules = range_rules(columns, pcos=True)
    for column in columns:
        rule = rules.get(column)
        if rule is None:
            continue
        values = frame[column]
        outside = _outside(values, rule)
        if outside is None:
            continue
        kept = "kept" if policy == "keep" else "set to missing"
        for row, value in values[outside].items():
            report.add(
                "warning",
                "out_of_range",
                f"outside the plausible range {rule.text()} ({SOURCE_TEXT[rule.source]}); {kept}",
                file=file,
                row=row,
                column=column,
                found=f"{value:g}",
                expected=rule.text(),
            )
        if policy == "null" and outside.any():  # a write per column is slow on small frames
            frame.loc[outside, column] = np.nan


def is_plain_number_dtype(dtype: object) -> bool:
    """A column of plain numbers (not booleans, not text): its values need no parsing."""
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _outside(values: pd.Series, rule: RangeRule) -> pd.Series | None:
    """Rows outside the rule's range (missing values never are); None when there are none.
    Compared as one numpy array: a pandas comparison per column costs more than the data on
    the small frames the service and batch chunks read."""
    array = values.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        mask = (array < rule.low) | (array > rule.high)
    return pd.Series(mask, index=values.index) if mask.any() else None


def id_text(value: object) -> str:
    """Ids as text; spreadsheets turn 10001 into 10001.0, which must not change the id."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse_binary_label(values: pd.Series, file: str, column: str, report: LoadReport) -> pd.Series:
    """0/1 labels (missing allowed and reported); anything else is an error naming the rows."""
    text = values.map(lambda v: "" if v is None or pd.isna(v) else str(v).strip())
    mapping = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "False": 0, "True": 1}
    bad = text[(text != "") & ~text.isin(list(mapping))]
    if len(bad):
        shown = ", ".join(f"row {r}: {v!r}" for r, v in bad.head(5).items())
        raise SchemaError(
            f"{file}: label column {column!r} must be 0 or 1 (or empty when unknown); "
            f"found {shown}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        )
    for row in text[text == ""].index:
        report.add(
            "warning",
            "note",
            "label missing; the patient can be scored, not trained on",
            file=file,
            row=row,
            column=column,
        )
    return text.map(mapping).astype("Int8")
