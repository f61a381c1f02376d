"""Preprocessing: letterbox geometry and its inverse, bit depths, colour, crop, annotations."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from deeppcos.image.preprocess import (
    PreprocessConfig,
    annotation_free_mask,
    content_box,
    letterbox_geometry,
    load_and_preprocess,
    load_with_geometry,
    preprocess_uint8,
    resize_to_square,
    to_uint8,
    unletterbox,
)

PLAIN = {"crop_sector": False, "remove_text_margins": False, "clahe": False}


def _write(path: Path, pixels: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), pixels)
    return path


def test_letterbox_keeps_aspect_with_centred_padding(tmp_path: Path) -> None:
    # 100 wide × 50 high -> 64 × 32 content, 16 padding rows above and below.
    image = np.full((50, 100), 180, np.uint8)
    path = _write(tmp_path / "wide.png", image)
    cfg = PreprocessConfig(image_size=64, **PLAIN)
    out = load_and_preprocess(path, None, cfg)
    assert out.shape == (64, 64, 1) and out.dtype == np.float32
    assert np.all(out[:16] == 0) and np.all(out[48:] == 0)
    assert np.all(out[16:48] == 180)
    geometry = letterbox_geometry(path, None, cfg)
    assert geometry.offset == (16, 0) and geometry.resized == (32, 64)
    assert geometry.scale_x == pytest.approx(geometry.scale_y) == pytest.approx(0.64)


def test_stretch_without_letterbox() -> None:
    out, geometry = resize_to_square(np.full((50, 100), 99, np.uint8), 64, letterbox=False)
    assert out.shape == (64, 64) and np.all(out == 99)
    assert geometry.offset == (0, 0) and geometry.scale_x != geometry.scale_y


def test_unletterbox_round_trips_geometry() -> None:
    rng = np.random.default_rng(0)
    original = np.zeros((90, 140), np.uint8)
    original[10:80, 20:130] = cv2.GaussianBlur(
        rng.integers(40, 255, (70, 110)).astype(np.uint8), (0, 0), 1.5
    )
    cfg = PreprocessConfig(image_size=64, remove_text_margins=False, clahe=False)
    out, geometry = preprocess_uint8(original, cfg)
    assert geometry.original_shape == (90, 140)
    assert geometry.crop == (10, 20, 80, 130)
    back = unletterbox(out[..., 0].astype(np.float32), geometry)
    assert back.shape == original.shape
    assert np.all(back[:10] == 0) and np.all(back[:, :20] == 0)  # cropped-away border
    inner = (slice(14, 76), slice(24, 126))  # away from edges blurred by resampling twice
    error = np.abs(back[inner] - original[inner].astype(np.float32))
    assert error.mean() < 0.25 * original[inner].std()  # resampled twice: close, not exact
    # A heatmap at the network's final resolution (not the input size) maps back too.
    small = unletterbox(np.ones((8, 8), np.float32), geometry)
    assert small.shape == (90, 140) and small[40, 70] == pytest.approx(1.0)


def test_16_bit_images_are_scaled_robustly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(1000, 3000, (40, 60)).astype(np.uint16)
    pixels[0, 0] = 65535  # one hot pixel must not darken the whole image
    path = _write(tmp_path / "deep.png", pixels)
    eight = to_uint8(pixels)
    assert eight.dtype == np.uint8 and eight.max() == 255 and eight.min() == 0
    assert 100 < eight.mean() < 155  # the bulk spreads over the range, not squashed near 0
    out = load_and_preprocess(path, None, PreprocessConfig(image_size=32, **PLAIN))
    assert out.shape == (32, 32, 1) and 100 < out[out > 0].mean() < 155
    assert to_uint8(np.full((4, 4), 500, np.uint16)).dtype == np.uint8  # flat: no division by 0


def test_rgb_and_gray_channel_handling(tmp_path: Path) -> None:
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 200  # stored BGR by OpenCV: blue 200
    path = _write(tmp_path / "colour.png", rgb)
    as_rgb = load_and_preprocess(path, None, PreprocessConfig(image_size=32, channels=3, **PLAIN))
    assert as_rgb.shape == (32, 32, 3)
    assert as_rgb[..., 2].mean() == pytest.approx(200) and as_rgb[..., 0].max() == 0
    as_gray = load_and_preprocess(path, None, PreprocessConfig(image_size=32, channels=1, **PLAIN))
    assert as_gray.shape == (32, 32, 1) and 0 < as_gray.mean() < 200
    gray = _write(tmp_path / "gray.png", np.full((40, 40), 77, np.uint8))
    three = load_and_preprocess(gray, None, PreprocessConfig(image_size=32, channels=3, **PLAIN))
    assert np.all(three == 77)


def test_clahe_on_colour_keeps_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = _write(tmp_path / "c.png", rng.integers(0, 255, (50, 70, 3)).astype(np.uint8))
    cfg = PreprocessConfig(image_size=40, channels=3, crop_sector=False)
    assert load_and_preprocess(path, None, cfg).shape == (40, 40, 3)


def _sector_with_text() -> np.ndarray:
    image = np.zeros((120, 160), np.uint8)
    cv2.ellipse(image, (80, 10), (100, 100), 0, 50, 130, 150, thickness=-1)  # a fan
    cv2.putText(image, "ID 42", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
    cv2.rectangle(image, (150, 100), (156, 117), 255, thickness=-1)  # a depth-scale bar
    return image


def test_annotations_in_margins_are_blanked() -> None:
    image = _sector_with_text()
    keep = annotation_free_mask(image)
    assert not keep[2:14, 2:40][image[2:14, 2:40] > 200].any()  # the text is gone
    assert not keep[100:118, 150:157].any()  # the bar is gone
    assert keep[image == 150].all()  # the sector is untouched
    cfg = PreprocessConfig(image_size=64, clahe=False)
    _, geometry = preprocess_uint8(image, cfg)
    _, left, _, right = geometry.crop
    assert left >= 15 and right <= 146  # the crop hugs the sector, not the annotations
    kept = PreprocessConfig(image_size=64, clahe=False, remove_text_margins=False)
    assert preprocess_uint8(image, kept)[1].crop[1] < 5  # without removal the text widens it


def test_flat_bands_and_replicated_padding_are_cropped() -> None:
    rng = np.random.default_rng(3)
    scan = rng.integers(30, 220, (60, 80)).astype(np.uint8)
    framed = np.full((80, 120), 250, np.uint8)  # a white export band all round
    framed[12:72, 20:100] = scan
    framed[12:72, :20] = scan[:, :1]  # edge-replicated padding on the left
    assert content_box(framed) == (12, 20, 72, 100)


def test_content_box_of_black_image_is_whole_frame() -> None:
    assert content_box(np.zeros((10, 20), np.uint8)) == (0, 0, 10, 20)


def test_load_with_geometry_returns_original(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.png", _sector_with_text())
    original, pixels, geometry = load_with_geometry(path, None, PreprocessConfig(image_size=48))
    assert original.shape == (120, 160) and pixels.shape == (48, 48, 1)
    assert geometry.original_shape == (120, 160)
    assert set(geometry.to_dict()) >= {"crop", "offset", "scale_x"}


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        PreprocessConfig(crop=True)  # type: ignore[call-arg]
