"""An images manifest's rows (read from a file or given in memory) into the canonical images
table: ids, paths resolved and kept inside the cohort's allowed folders, frames, sides, views and
image-level labels, each problem in the load report. Below the cohort core, which uses it for
:meth:`~deeppcos.data.cohort.Cohort.from_frames`, and the file readers
(:mod:`deeppcos.data.loaders`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from deeppcos.data.report import Level, LoadReport
from deeppcos.data.spec import CohortSpec, ImagesSpec
from deeppcos.data.tables import id_text, parse_binary_label
from deeppcos.exceptions import ConfigError, SchemaError

__all__ = [
    "IMAGES_FRAME",
    "PATIENTS_FRAME",
    "Where",
    "allowed_roots",
    "exclude_outside",
    "is_inside",
    "manifest_image_path",
    "manifest_images",
    "numbered",
    "resolved_path",
]

PATIENTS_FRAME = "<patients frame>"
IMAGES_FRAME = "<images frame>"


def manifest_images(
    raw: pd.DataFrame,
    spec: CohortSpec,
    ispec: ImagesSpec,
    report: LoadReport,
    file: str,
    root: Path,
) -> pd.DataFrame:
    """The canonical images table from a manifest's rows (read from a file or given in
    memory); relative paths resolve against ``root``."""
    raw = raw.rename(columns=lambda c: str(c).strip())
    needed = [ispec.patient_column, ispec.path_column]
    missing = [c for c in needed if c not in raw]
    if missing:
        raise SchemaError(
            f"{file}: images manifest lacks column(s) {missing} named by the spec "
            f"(patient_column, path_column); it has {list(raw.columns)}"
        )
    out = pd.DataFrame(index=raw.index)
    rel = raw[ispec.path_column].fillna("").astype(str).str.strip()
    empty = rel == ""
    for row in rel[empty].index:
        report.add(
            "excluded",
            "excluded_image",
            "no image path",
            file=file,
            row=row,
            column=ispec.path_column,
        )
    out["image_id"] = raw["image_id"].astype(str) if "image_id" in raw else rel
    out["patient_id"] = raw[ispec.patient_column].map(id_text)
    where = Where(report, file, ispec.path_column)
    roots = allowed_roots(spec, ispec, root)
    out["path"] = [
        "" if not text else manifest_image_path(text, root, roots, where.at(row))
        for row, text in rel.items()
    ]
    out["frame"] = pd.array(
        pd.to_numeric(raw["frame"], errors="coerce") if "frame" in raw else [pd.NA] * len(raw),
        dtype="Int64",
    )
    for key, target in (("side_column", "side"), ("view_column", "view")):
        column = getattr(ispec, key)
        if column:
            if column not in raw:
                raise SchemaError(f"{file}: images.{key} names {column!r}, which is not a column")
            out[target] = raw[column].astype("string")
    if ispec.label_column:
        if ispec.label_column not in raw:
            raise SchemaError(
                f"{file}: images.label_column names {ispec.label_column!r}, which is not a column"
            )
        labels = raw[ispec.label_column]
        if ispec.label_map is not None:
            labels = _mapped_labels(labels, ispec.label_map, file, ispec.label_column)
        out["label"] = parse_binary_label(labels, file, ispec.label_column, report)
    return out[out["path"] != ""]


def numbered(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy indexed 1 … n, the row numbers a file's rows get (the caller's index untouched)."""
    out = frame.copy()
    out.index = pd.RangeIndex(1, len(out) + 1, name="row")
    return out


# --- image paths stay inside the cohort's folders -------------------------------------------
# A manifest row, or a symlink in an image folder, can name any file on the machine
# (../../../../etc/passwd, /home/someone/.ssh/id_rsa). Such a file must never be opened: not
# even to find it is no image, since what probing reports about it reaches the console and every
# report. Paths are resolved first (symlinks followed), then checked against the allowed roots.


@dataclass(frozen=True)
class Where:
    """Where a path came from, for its load-report entries."""

    report: LoadReport
    file: str | None
    column: str | None
    row: int | str | None = None

    def at(self, row: int | str | None) -> Where:
        return Where(self.report, self.file, self.column, row)

    def add(self, level: Level, action: str, message: str, found: object, **extra: str) -> None:
        self.report.add(
            level,
            action,
            message,
            file=self.file,
            row=self.row,
            column=self.column,
            found=found,
            **extra,
        )


def allowed_roots(spec: CohortSpec, ispec: ImagesSpec, base: Path) -> list[Path]:
    """Folders image paths may resolve into: ``base`` (the images root, the manifest's folder
    or the image folder) and the spec's ``images.allowed_roots``, all resolved."""
    named = [spec.resolve(extra) for extra in ispec.allowed_roots]
    return [folder.resolve() for folder in (base, *named) if folder is not None]


def resolved_path(path: Path) -> Path | None:
    """``path`` with symlinks followed; None when it cannot be resolved (a symlink loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # Python 3.11 raises RuntimeError on a symlink loop
        return None


def is_inside(path: Path | None, roots: list[Path]) -> bool:
    return path is not None and any(path.is_relative_to(folder) for folder in roots)


def exclude_outside(where: Where, found: str, roots: list[Path]) -> None:
    named = ", ".join(str(folder) for folder in roots)
    plural = "s" if len(roots) > 1 else ""
    where.add(
        "excluded",
        "excluded_image",
        f"path resolves (symlinks followed) outside the allowed image root{plural} {named}; "
        "the file was not opened. If it is a genuine image, move it under the root or list its "
        "folder in images.allowed_roots in the spec",
        found,
        expected=f"a path inside {named}",
    )


def manifest_image_path(text: str, root: Path, roots: list[Path], where: Where) -> str:
    """The resolved path of a manifest row's image, or "" when it is left out (reported)."""
    if "\\" in text:
        text = _with_forward_slashes(text, root, roots, where)
    resolved = resolved_path(root / text)
    if not is_inside(resolved, roots):
        exclude_outside(where, text, roots)
        return ""
    return str(resolved)


def _with_forward_slashes(text: str, root: Path, roots: list[Path], where: Where) -> str:
    """A path holding backslashes, as a manifest written on Windows has them.

    On POSIX a backslash is a legal file-name character, so the path is used as written when
    that names a file; otherwise it is read with '/' as the separator (what a Windows user
    meant) and the report says so. This resolves rather than excludes: the intent is
    unambiguous, and nothing that loads today changes. Existence is only checked inside the
    allowed roots, so no file outside them is ever touched.
    """
    as_written = resolved_path(root / text)
    if is_inside(as_written, roots) and as_written is not None and as_written.exists():
        return text
    fixed = text.replace("\\", "/")
    candidate = resolved_path(root / fixed)
    if not is_inside(candidate, roots):
        return fixed  # left out as outside the root, by the caller
    if candidate is not None and candidate.exists():
        message = f"path written with '\\' separators (Windows); read with '/' instead: {fixed}"
        where.add("info", "note", message, text)
    else:
        where.add(
            "warning",
            "note",
            "image file not found, neither as written nor with '/' in place of '\\'; "
            "use / as the separator in manifest paths",
            text,
        )
    return fixed


def _mapped_labels(values: pd.Series, mapping: dict[str, int], file: str, column: str) -> pd.Series:
    """Source label values -> 0/1 through the spec's ``label_map`` (keys compared as text, so
    1, 1.0 and "1" in the file all match the key "1"); an unmapped value is an error naming rows."""
    table = {str(k).strip(): int(v) for k, v in mapping.items()}
    if set(table.values()) - {0, 1}:
        raise ConfigError(f"images.label_map must map to 0 or 1; got {mapping}")

    def key(value: object) -> str | None:
        if value is None or pd.isna(value):
            return None
        number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
        if pd.notna(number) and float(number).is_integer():
            return str(int(number))
        return str(value).strip()

    keys = values.map(key)
    bad = keys[keys.notna() & ~keys.isin(list(table))]
    if len(bad):
        shown = ", ".join(f"row {r}: {v!r}" for r, v in bad.head(5).items())
        raise SchemaError(
            f"{file}: label column {column!r} holds values the spec's label_map "
            f"{sorted(table)} does not name: {shown}"
        )
    return keys.map(table)
