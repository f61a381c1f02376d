"""Safe image probing and decoding for every format a cohort may hold.

``probe_image`` checks a file before anything trusts it: it exists, is not empty, its first
bytes are an image signature that matches a format we read, its header's size is below the
decompression-bomb limit, and it decodes. Its messages never quote a file's bytes: the path may
name any file, and messages reach the console and every report. ``read_image`` returns the
pixels as they are stored (uint8 or uint16; gray as H×W, colour as H×W×3 RGB), leaving
normalisation to the image branch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from deeppcos.data.imagefile import DEFAULT_MAX_PIXELS, ImageInfo, file_sha256
from deeppcos.exceptions import ImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageInfo",
    "file_sha256",
    "probe_image",
    "read_image",
    "sniff_format",
    "to_gray_uint8",
]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}

# File signatures ("magic bytes"): a file is trusted by its content, never by its extension.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

# A BMP's info header states its own size, one of these; "BM" alone is too weak a signature
# (a text file starting "BMI 27" would pass it).
_BMP_INFO_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}


def sniff_format(head: bytes) -> str | None:
    """The image format named by a file's first bytes, or None."""
    # DICOM first: its 128-byte preamble may itself look like a TIFF header.
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            if name == "BMP" and not _is_bmp_header(head):
                return None
            return name
    return None


def _is_bmp_header(head: bytes) -> bool:
    return len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_INFO_HEADER_SIZES


def probe_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Check that ``path`` is a readable, decodable image of sane size; describe it.

    Raises ImageError with the file name and what was expected and found.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: image file not found")
    if not path.is_file():
        raise ImageError(f"{path}: expected an image file, found a directory or special file")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{path}: image file is empty (0 bytes)")
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as exc:  # unreadable (permissions, I/O error): excluded, not a crash
        raise ImageError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from exc
    kind = sniff_format(head)
    if kind is None:
        # Say what the file is not, never what it holds: a manifest can point at any file (a
        # password file, patient notes), and this message reaches the console and every report.
        raise ImageError(
            f"{path}: not an image: no known signature of a PNG, JPEG, BMP, TIFF or DICOM file "
            f"({size:,} bytes), whatever the extension says"
        )
    if kind == "DICOM":
        from deeppcos.data.dicom import probe_dicom

        return probe_dicom(path, max_pixels=max_pixels, file_bytes=size)
    width, height, mode, pages = _header_size(path, kind, max_pixels)
    if width * height > max_pixels:
        raise ImageError(
            f"{path}: image is {width}×{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (decompression-bomb guard); raise images.max_pixels in the spec "
            "if the image is genuine"
        )
    pixels = _decode(path)
    return ImageInfo(
        file_format=kind,
        width=width,
        height=height,
        channels=1 if pixels.ndim == 2 else 3,
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        color_mode=mode,
        frames=1,
        file_bytes=size,
        sha256=file_sha256(path),
        pages=pages,
    )


def _header_size(path: Path, kind: str, max_pixels: int) -> tuple[int, int, str, int]:
    """Width, height, mode and page count from the headers alone: no pixels are decoded here."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it; our own limit decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                # Only TIFF pages are counted: n_frames walks the page directories, and for
                # other formats (animated PNG, say) a frame is not a separate image.
                pages = int(getattr(img, "n_frames", 1)) if kind == "TIFF" else 1
                return img.width, img.height, _mode_name(img.mode), pages
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image is too large to open safely ({exc})") from exc
    except Exception as exc:  # Pillow raises many types for broken headers
        # Pillow's own text can quote header bytes (a PNG chunk name, a BMP header field), and
        # the file may be no image at all: name the exception type only.
        raise ImageError(
            f"{path}: {kind} header is corrupt or truncated (Pillow could not parse it: "
            f"{type(exc).__name__})"
        ) from exc


def _mode_name(mode: str) -> str:
    return {
        "L": "gray",
        "1": "binary",
        "I;16": "gray16",
        "I;16B": "gray16",
        "I;16L": "gray16",
        "I": "gray32",
        "RGB": "rgb",
        "RGBA": "rgba",
        "P": "palette",
        "LA": "gray+alpha",
        "CMYK": "cmyk",
    }.get(mode, mode.lower())


def _decode(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise ImageError(f"{path}: image data is corrupt or truncated; OpenCV could not decode it")
    return _to_gray_or_rgb(pixels, path)


def _to_gray_or_rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(pixels.dtype, np.floating):
            raise ImageError(
                f"{path}: floating-point images are not supported; expected 8 or 16 bit"
            )
        pixels = np.clip(pixels, 0, 65535).astype(np.uint16)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3:
        if pixels.shape[2] == 4:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
        elif pixels.shape[2] == 3:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        else:
            raise ImageError(f"{path}: expected 1, 3 or 4 channels, found {pixels.shape[2]}")
    return pixels


def read_image(path: Path | str, frame: object = None) -> np.ndarray:
    """Pixels as stored: uint8/uint16, H×W for gray or H×W×3 RGB.

    ``frame`` picks a DICOM frame; None or a missing value (the ``frame`` column's NA for
    single-frame images) means the first.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image file not found")
    with path.open("rb") as handle:
        head = handle.read(132)
    if sniff_format(head) == "DICOM":
        from deeppcos.data.dicom import read_dicom_frame

        return read_dicom_frame(path, _frame_index(frame))
    return _decode(path)


def _frame_index(frame: Any) -> int:
    """``int(frame)``, or 0 (the first frame) for whatever int() refuses."""
    try:
        return int(frame)
    except (TypeError, ValueError):  # None, pd.NA, NaN
        return 0


def to_gray_uint8(pixels: np.ndarray) -> np.ndarray:
    """Gray 8-bit view of any image read by ``read_image`` (for hashing and audit statistics)."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    if pixels.dtype == np.uint16:
        high = int(pixels.max()) or 1
        pixels = (pixels.astype(np.float32) * (255.0 / high)).round().astype(np.uint8)
    return pixels
