"""What every image reader shares: the probe's record of a file (:class:`ImageInfo`), the
decompression-bomb limit and the file hash. A module of its own so that the format readers
(:mod:`deeppcos.data.imageio` for PNG/JPEG/BMP/TIFF, :mod:`deeppcos.data.dicom`) both build on it
without importing each other's module-level code."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_MAX_PIXELS", "ImageInfo", "file_sha256"]

DEFAULT_MAX_PIXELS = 60_000_000


@dataclass(frozen=True)
class ImageInfo:
    file_format: str  # JPEG, PNG, BMP, TIFF or DICOM
    width: int
    height: int
    channels: int  # 1 (gray) or 3 (colour); alpha is dropped
    bit_depth: int  # 8 or 16
    color_mode: str  # the stored mode: gray, rgb, rgba, palette, ...
    frames: int  # >1 only for multi-frame DICOM
    file_bytes: int
    sha256: str
    # Pages in a multi-page TIFF. Only page 1 is decoded (OpenCV's imdecode reads the first);
    # loaders report the rest rather than drop them silently.
    pages: int = 1



def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
