"""Reading the JSON metadata that every saved model writes beside its weights (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deeppcos.exceptions import DataFileError


def read_meta(path: Path, fmt: str, max_version: int, what: str) -> dict[str, Any]:
    """The metadata dict at ``path``; a clear error when it is missing, unreadable, of another
    kind (``fmt``) or written by a newer deeppcos than this one (``max_version``)."""
    if not path.is_file():
        raise DataFileError(f"{path}: {what} metadata not found (was it saved here?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(f"{path}: unreadable {what} metadata: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise DataFileError(f"{path}: not a deeppcos {what} (format {fmt!r} expected)")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise DataFileError(
            f"{path}: format version {version!r}; this deeppcos reads up to {max_version}; "
            "upgrade deeppcos"
        )
    return meta


def write_meta(path: Path, fmt: str, version: int, fields: dict[str, Any]) -> Path:
    """Write a saved model's metadata: its kind and format version, the deeppcos version that
    wrote it, then ``fields``; ``read_meta`` checks the first two on load."""
    from deeppcos._version import __version__

    meta = {"format": fmt, "format_version": version, "deeppcos_version": __version__, **fields}
    path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return path
