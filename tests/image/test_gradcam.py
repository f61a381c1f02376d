"""Grad-CAM: at the original geometry, informative, through nested and flat models."""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from deeppcos.data import Cohort
from deeppcos.data.imageio import read_image
from deeppcos.image import ImageBranch, grad_cam, grad_cam_file, overlay
from deeppcos.image.backbones import build_model
from deeppcos.image.gradcam import last_conv_layer
from deeppcos.image.preprocess import load_and_preprocess


def _wide_copy(source: str, folder: Path) -> Path:
    """A synthetic scan placed in a wider, taller black frame: letterbox and crop both matter."""
    pixels = read_image(source)
    frame = np.zeros((80, 120), np.uint8)
    frame[8:72, 30:94] = pixels
    path = folder / "wide.png"
    assert cv2.imwrite(str(path), frame)
    return path


def test_heatmap_at_original_geometry(fitted: ImageBranch, cohort: Cohort, tmp_path: Path) -> None:
    path = _wide_copy(str(cohort.images["path"].iloc[0]), tmp_path)
    result = grad_cam_file(fitted, path)
    assert result.heatmap.shape == (80, 120)
    assert result.heatmap_input.shape == (48, 48)
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    assert result.heatmap.std() > 0.01  # not constant
    assert np.all(result.heatmap[:8] == 0) and np.all(result.heatmap[:, :30] == 0)  # cropped
    assert result.overlay.shape == (80, 120, 3) and result.overlay.dtype == np.uint8
    assert result.layer_name == "block4_relu"
    # The probability beside the map is the image model's own for that image.
    first = cohort.images.iloc[0]
    own = grad_cam_file(fitted, str(first["path"])).probability
    scored = fitted.predict_images(cohort, [str(first["patient_id"])]).set_index("image_id")
    assert own == pytest.approx(scored.loc[first["image_id"], "probability"], abs=1e-5)


def test_batch_and_targets(fitted: ImageBranch, cohort: Cohort) -> None:
    cfg = fitted.preprocess_config
    batch = np.stack([load_and_preprocess(p, None, cfg) for p in cohort.images["path"][:3]])
    maps = grad_cam(fitted, batch)
    assert maps.shape == (3, 48, 48) and maps.dtype == np.float32
    positive = grad_cam(fitted.model_, batch[0], target="positive")
    negative = grad_cam(fitted.model_, batch[0], target="negative")
    assert positive.shape == negative.shape == (48, 48)
    assert not np.allclose(positive, negative)
    with pytest.raises(ValueError, match="target"):
        grad_cam(fitted, batch[0], target="both")  # type: ignore[arg-type]


def test_nested_pretrained_style_backbone() -> None:
    model, _ = build_model("mobilenetv3small", 64, None, 0.3, 0)
    containers, layer = last_conv_layer(model)
    assert [c.name for c in containers] == ["MobileNetV3Small"] and len(layer.output.shape) == 4
    image = np.random.default_rng(0).uniform(0, 255, (64, 64, 3)).astype(np.float32)
    heat = grad_cam(model, image)
    assert heat.shape == (64, 64) and heat.min() >= 0.0 and heat.max() <= 1.0
    named = grad_cam(model, image, layer_name="expanded_conv_10_add")
    assert named.shape == (64, 64)


def test_flat_model_and_bad_layer() -> None:
    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    image = np.random.default_rng(1).uniform(0, 255, (32, 32, 1)).astype(np.float32)
    assert grad_cam(model, image).shape == (32, 32)
    with pytest.raises(ValueError, match="no layer named"):
        grad_cam(model, image, layer_name="nope")


def test_overlay_checks_geometry() -> None:
    gray16 = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)) * 50
    heat = np.zeros((20, 30), np.float32)
    heat[5:10, 5:10] = 1.0
    out = overlay(gray16, heat)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out[7, 7, 0] > out[15, 25, 0] or out[7, 7, 2] != out[15, 25, 2]
    with pytest.raises(ValueError, match="unletterbox"):
        overlay(gray16, np.zeros((10, 10), np.float32))
