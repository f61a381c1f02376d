"""Image preprocessing with OpenCV and numpy (no TensorFlow): what every image goes through before
the network, in training and inference alike.

Steps, in order (each one can be switched off in ``PreprocessConfig``):

1. decode with ``deeppcos.data.imageio.read_image`` (8 or 16 bit, gray or RGB, DICOM frames);
   16-bit images are scaled to 8 bit between their 0.5th and 99.5th percentiles, so one hot
   pixel or an unused high range does not leave the image nearly black;
2. gray or colour to the backbone's channel count (1 for ``compact``, 3 for ImageNet backbones):
   colour is averaged to gray for one channel; gray stays single-channel through every step
   and is repeated to three only at the end (4× cheaper than processing three copies);
3. ``remove_text_margins``: burned-in annotations are blanked (see ``remove_annotations``);
4. ``crop_sector``: crop to the bounding box of the content (the ultrasound sector): black
   surrounds, flat white or gray bands and edge-replicated padding are cut away, since their
   size varies by scanner and export and can predict the label (the Kaggle ultrasound set's
   white bands and smeared margins do);
5. ``clahe``: contrast-limited adaptive histogram equalisation (clip 2.0, 8×8 tiles) on the
   luminance, which evens out gain and depth attenuation between scanners;
6. ``letterbox``: resize to ``image_size`` keeping the aspect ratio and pad with zeros, centred
   (without it the image is stretched to a square, and aspect ratio becomes a shortcut).

The output is float32 H×W×C in [0, 255]; each backbone's own input normalisation happens inside
the Keras model (``backbones.BackboneNormalization``), so inference code cannot forget it.
``LetterboxGeometry`` records the crop and the letterbox so a map computed on the network's
input (Grad-CAM) can be drawn back onto the original image with ``unletterbox``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deeppcos.data.imageio import read_image

# A pixel darker than this (8-bit) is background: ultrasound sectors sit on black, but JPEG
# noise and faint vignetting leave the "black" a few levels above zero.
CONTENT_THRESHOLD = 12
# Annotations are bright: text, calipers and depth scales are drawn near white.
ANNOTATION_THRESHOLD = 200
# A row or column this flat (8-bit standard deviation) is a border band, not image content.
UNIFORM_STD = 3.0
# Neighbouring lines closer than this (mean absolute 8-bit difference) are copies: padding.
# Edge-replicated JPEG padding measures 0-0.4 on the Kaggle ultrasound set, real content >= 1.
REPLICA_DIFF = 0.5
# Outer band, as a fraction of each side, in which disconnected bright marks count as annotation.
MARGIN_FRACTION = 0.15


class PreprocessConfig(BaseModel):
    """How images are prepared for the network. ``image_size`` and ``channels`` are set from the
    image branch's own ``image_size`` and backbone when used through ``ImageParams``."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(128, ge=16, le=1024)
    channels: Literal[1, 3] = 1
    crop_sector: bool = True
    remove_text_margins: bool = True
    clahe: bool = True
    clahe_clip: float = Field(2.0, gt=0)
    clahe_tiles: int = Field(8, ge=1, le=64)
    letterbox: bool = True


@dataclass(frozen=True)
class LetterboxGeometry:
    """Where the network's input came from in the original image.

    ``crop`` is (top, left, bottom, right) in original pixels (exclusive end); the crop was
    resized by ``scale_y``/``scale_x`` (equal when letterboxed) to ``resized`` = (h, w) and placed
    at ``offset`` = (top, left) in a ``size``×``size`` canvas.
    """

    original_shape: tuple[int, int]
    crop: tuple[int, int, int, int]
    scale_y: float
    scale_x: float
    offset: tuple[int, int]
    resized: tuple[int, int]
    size: int

    def to_dict(self) -> dict[str, object]:
        return {
            "original_shape": list(self.original_shape),
            "crop": list(self.crop),
            "scale_y": self.scale_y,
            "scale_x": self.scale_x,
            "offset": list(self.offset),
            "resized": list(self.resized),
            "size": self.size,
        }


# --- public entry points ----------------------------------------------------------------------


def load_and_preprocess(path: Path | str, frame: object, cfg: PreprocessConfig) -> np.ndarray:
    """Read one image (``frame`` picks a DICOM frame; None/NA for the first) and preprocess it:
    float32 ``image_size``×``image_size``×``channels`` in [0, 255]."""
    return preprocess_uint8(read_image(path, frame), cfg)[0].astype(np.float32)


def letterbox_geometry(path: Path | str, frame: object, cfg: PreprocessConfig) -> LetterboxGeometry:
    """The crop and letterbox that ``load_and_preprocess`` applies to this image."""
    return preprocess_uint8(read_image(path, frame), cfg)[1]


def load_with_geometry(
    path: Path | str, frame: object, cfg: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray, LetterboxGeometry]:
    """(original pixels as stored, preprocessed float32 input, geometry) with one decode."""
    pixels = read_image(path, frame)
    out, geometry = preprocess_uint8(pixels, cfg)
    return pixels, out.astype(np.float32), geometry


def preprocess_uint8(
    pixels: np.ndarray, cfg: PreprocessConfig
) -> tuple[np.ndarray, LetterboxGeometry]:
    """The whole chain on decoded pixels; uint8 output (every step is 8-bit, so this is exact and
    a quarter of the memory of float32 when tf.data caches it)."""
    image = to_uint8(pixels)
    if cfg.channels == 1:
        image = to_channels(image, 1)
    # Gray sources stay single-channel until the very end: every step is 2-4× cheaper on one
    # channel than on three (CLAHE on colour needs a round trip through Lab).
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if cfg.remove_text_margins:
        keep = annotation_free_mask(gray)
        if not keep.all():
            image = np.where(keep if image.ndim == 2 else keep[..., None], image, 0)
            gray = np.where(keep, gray, 0).astype(np.uint8)
    crop = content_box(gray) if cfg.crop_sector else (0, 0, *gray.shape[:2])
    top, left, bottom, right = crop
    image = np.ascontiguousarray(image[top:bottom, left:right], dtype=np.uint8)
    if cfg.clahe:
        image = apply_clahe(image, cfg.clahe_clip, cfg.clahe_tiles)
    out, geometry = resize_to_square(image, cfg.image_size, cfg.letterbox)
    geometry = LetterboxGeometry(
        original_shape=(int(pixels.shape[0]), int(pixels.shape[1])),
        crop=crop,
        scale_y=geometry.scale_y,
        scale_x=geometry.scale_x,
        offset=geometry.offset,
        resized=geometry.resized,
        size=geometry.size,
    )
    if cfg.channels == 3 and out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)
    if out.ndim == 2:
        out = out[..., None]
    return np.ascontiguousarray(out), geometry


# --- the steps --------------------------------------------------------------------------------


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit pixels; 16-bit ones are scaled between their 0.5th and 99.5th percentiles."""
    if pixels.dtype == np.uint8:
        return pixels
    values = pixels.astype(np.float32)
    low, high = np.percentile(values, [0.5, 99.5])
    if high <= low:  # a flat image: keep its level rather than divide by zero
        high = low + 1.0
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """H×W for one channel, H×W×3 RGB for three."""
    if channels == 1:
        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)


def annotation_free_mask(gray: np.ndarray) -> np.ndarray:
    """True where pixels are kept; False on burned-in annotations.

    The rule, deliberately simple: the largest connected region of non-black content is the
    image proper (the sector). Any *other* connected bright mark (≥ ``ANNOTATION_THRESHOLD``)
    that lies entirely within the outer ``MARGIN_FRACTION`` band of the frame — text, depth
    scales, logos, caliper legends in the black surround — is annotation. Marks that reach
    into the centre are kept, since they may be anatomy; annotations drawn *over* the sector
    cannot be told from tissue this way and are left alone.
    """
    height, width = gray.shape
    band_y, band_x = MARGIN_FRACTION * height, MARGIN_FRACTION * width
    by, bx = max(1, int(band_y)), max(1, int(band_x))
    bright = gray >= ANNOTATION_THRESHOLD
    # Shortcut (most images): no bright pixel in any margin band, so nothing can be removed.
    if not (
        bright[:by].any() or bright[-by:].any() or bright[:, :bx].any() or bright[:, -bx:].any()
    ):
        return np.ones(gray.shape, dtype=bool)
    content = (gray > CONTENT_THRESHOLD).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(content, connectivity=8)
    if n <= 2:  # background plus at most one region: nothing to remove
        return np.ones(gray.shape, dtype=bool)
    main = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    remove = np.zeros(n, dtype=bool)
    for k in range(1, n):
        if k == main:
            continue
        x, y, w, h = stats[k, :4]
        in_band = y + h <= band_y or y >= height - band_y or x + w <= band_x or x >= width - band_x
        remove[k] = in_band
    # A removable region goes entirely (its dim anti-aliased edge too) if any of it is bright.
    has_bright = np.bincount(labels[bright], minlength=n) > 0
    remove &= has_bright
    return ~remove[labels]


def content_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the image content; the whole frame if none is found.

    A row or column is content when at least 0.5% of it (and at least two pixels) is brighter
    than ``CONTENT_THRESHOLD``, it is not uniform (standard deviation ≥ ``UNIFORM_STD``) and
    it is not a copy of both its neighbours: black surrounds, flat white or gray bands and
    edge-replicated padding (which some exports add, and which can predict the label) fall
    outside the box; isolated specks do not widen it.
    """
    top, left, bottom, right = 0, 0, int(gray.shape[0]), int(gray.shape[1])
    # Rows, then columns within the kept rows, then rows again: a white band down one side
    # is only uniform once the black rows above and below it are cut.
    for axis in (1, 0, 1):
        span = _content_span(gray[top:bottom, left:right], axis)
        if span is None:
            return (0, 0, int(gray.shape[0]), int(gray.shape[1]))
        if axis == 1:
            top, bottom = top + span[0], top + span[1]
        else:
            left, right = left + span[0], left + span[1]
    return (top, left, bottom, right)


def _content_span(gray: np.ndarray, axis: int) -> tuple[int, int] | None:
    """[first, last + 1) of the rows (axis=1) or columns (axis=0) holding content, or None."""
    length = gray.shape[axis]
    enough = (gray > CONTENT_THRESHOLD).sum(axis=axis) >= max(2, 0.005 * length)
    found = np.flatnonzero(enough & (gray.std(axis=axis) >= UNIFORM_STD))
    if len(found) == 0:
        return None
    lines = gray if axis == 1 else gray.T  # one line per row of ``lines``
    first, last = int(found[0]), int(found[-1])
    # Edge-replicated padding: walk inwards while a line copies its inner neighbour; the real
    # edge line copies only its outer neighbour, so the walk stops on it.
    while first < last and _copies(lines[first], lines[first + 1]):
        first += 1
    while last > first and _copies(lines[last], lines[last - 1]):
        last -= 1
    return first, last + 1


def _copies(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two lines are copies: mean absolute difference below ``REPLICA_DIFF`` over the
    pixels that are content in either (so mostly black lines are not called copies)."""
    either = int(np.count_nonzero((a > CONTENT_THRESHOLD) | (b > CONTENT_THRESHOLD)))
    diff = int(np.abs(a.astype(np.int16) - b.astype(np.int16)).sum())
    return diff < REPLICA_DIFF * max(either, 1)


def apply_clahe(image: np.ndarray, clip: float = 2.0, tiles: int = 8) -> np.ndarray:
    """CLAHE on gray images, or on the L channel of colour ones (hue is left alone)."""
    clahe = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles))
    if image.ndim == 2:
        return clahe.apply(image)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def resize_to_square(
    image: np.ndarray, size: int, letterbox: bool = True
) -> tuple[np.ndarray, LetterboxGeometry]:
    """``size``×``size``: letterboxed (aspect kept, zero padding centred) or stretched."""
    height, width = image.shape[:2]
    if letterbox:
        scale = min(size / height, size / width)
        new_h = max(1, min(size, round(height * scale)))
        new_w = max(1, min(size, round(width * scale)))
    else:
        new_h = new_w = size
    # INTER_AREA averages when shrinking (no aliasing of speckle); linear when enlarging.
    shrinking = new_h < height or new_w < width
    resized = cv2.resize(
        image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas = np.zeros((size, size, *image.shape[2:]), dtype=image.dtype)
    canvas[top : top + new_h, left : left + new_w] = resized
    geometry = LetterboxGeometry(
        original_shape=(height, width),
        crop=(0, 0, height, width),
        scale_y=new_h / height,
        scale_x=new_w / width,
        offset=(top, left),
        resized=(new_h, new_w),
        size=size,
    )
    return canvas, geometry


def unletterbox(heatmap: np.ndarray, geometry: LetterboxGeometry) -> np.ndarray:
    """A map over the network's input (any square size; it is first resized to
    ``geometry.size``) drawn back at the original image's H×W: padding dropped, the crop
    restored, zeros where the image was cropped away."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape[:2] != (geometry.size, geometry.size):
        heatmap = cv2.resize(
            heatmap, (geometry.size, geometry.size), interpolation=cv2.INTER_LINEAR
        )
    top, left = geometry.offset
    new_h, new_w = geometry.resized
    inner = heatmap[top : top + new_h, left : left + new_w]
    c_top, c_left, c_bottom, c_right = geometry.crop
    restored = cv2.resize(
        inner, (c_right - c_left, c_bottom - c_top), interpolation=cv2.INTER_LINEAR
    )
    out = np.zeros(geometry.original_shape, dtype=np.float32)
    out[c_top:c_bottom, c_left:c_right] = restored
    return out
