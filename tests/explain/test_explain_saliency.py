"""Image saliency at the original geometry: Grad-CAM and SHAP GradientExplainer, every backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest

from deeppcos.data.imageio import read_image
from deeppcos.exceptions import SchemaError
from deeppcos.explain.saliency import (
    blank_annotations,
    encode_png,
    patient_saliency,
    saliency_for_images,
)
from deeppcos.image.preprocess import load_and_preprocess
from deeppcos.image.specs import SPECS

LIGHT_BACKBONES = {"compact", "mobilenetv3small"}


def _framed_scan(source: str, path: Path) -> Path:
    """A scan inside a wider, taller black frame (crop and letterbox both matter), with a
    bright burned-in label in the top-left margin."""
    pixels = read_image(source)
    frame = np.zeros((90, 150), np.uint8)
    frame[10:74, 50:114] = pixels if pixels.ndim == 2 else pixels[..., 0]
    frame[2:6, 2:20] = 255  # "text" in the margin, not connected to the scan
    assert cv2.imwrite(str(path), frame)
    return path


def _rows(*paths: Path) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"img{k}" for k in range(len(paths))],
            "path": [str(p) for p in paths],
            "side": ["left", None][: len(paths)],
        }
    )


@pytest.mark.parametrize("method", ["gradcam", "gradient_shap"])
def test_maps_come_back_at_the_original_geometry(
    predictor: Any, cohort: Any, tmp_path: Path, method: str
) -> None:
    branch = predictor.branches["image"]
    path = _framed_scan(str(cohort.images["path"].iloc[0]), tmp_path / "framed.png")
    background = None
    if method == "gradient_shap":
        from deeppcos.explain.saliency import background_images

        background = background_images(branch, cohort, n=4)
    (result,) = saliency_for_images(branch, _rows(path), method, background=background)
    assert result.heatmap.shape == (90, 150) and result.original_shape == (90, 150)
    assert result.overlay.shape == (90, 150, 3) and result.overlay.dtype == np.uint8
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    top, left, bottom, right = result.geometry.crop  # the sector, inside the black frame
    assert top >= 10 and left >= 50 and bottom <= 74 and right <= 114
    outside = np.ones((90, 150), bool)
    outside[top:bottom, left:right] = False
    assert np.all(result.heatmap[outside] == 0)  # cut away by preprocessing: no evidence
    assert np.all(result.overlay[2:6, 2:20] == 0)  # burned-in margin text blanked
    pixels = load_and_preprocess(path, None, branch.preprocess_config)
    expected = branch.model_(pixels[None], training=False)
    assert result.probability == pytest.approx(float(np.asarray(expected).reshape(-1)[0]), abs=1e-6)
    if method == "gradient_shap":
        assert result.heatmap.max() > 0.5  # scaled to 1 at the input; resampling lowers it a bit
        assert result.layer is None
    else:
        assert result.layer == "block4_relu"


def test_patient_saliency_covers_each_image(predictor: Any, cohort: Any) -> None:
    branch = predictor.branches["image"]
    counts = cohort.images["patient_id"].value_counts()
    patient = str(counts.index[0])
    maps = patient_saliency(branch, cohort, patient)
    assert len(maps) == counts.iloc[0] >= 2
    assert [m.position for m in maps] == list(range(1, len(maps) + 1))
    observed = branch.predict_images(cohort, [patient])["probability"].to_numpy()
    np.testing.assert_allclose([m.probability for m in maps], observed, atol=1e-5)
    assert len(patient_saliency(branch, cohort, patient, max_images=1)) == 1
    without = set(cohort.patients["patient_id"]) - set(cohort.images["patient_id"])
    assert without and patient_saliency(branch, cohort, sorted(without)[0]) == []
    with pytest.raises(SchemaError, match="saliency method"):
        patient_saliency(branch, cohort, patient, "lime")  # type: ignore[arg-type]


def _backbone_params() -> list[Any]:
    return [
        pytest.param(name, marks=() if name in LIGHT_BACKBONES else pytest.mark.slow)
        for name in SPECS
    ]


@pytest.mark.parametrize("backbone", _backbone_params())
def test_every_backbone_with_random_weights(backbone: str, tmp_path: Path) -> None:
    from deeppcos.image import ImageBranch, ImageParams
    from deeppcos.image.backbones import build_model

    size = max(SPECS[backbone].min_size, 48)
    branch = ImageBranch(ImageParams(backbone=backbone, image_size=size, weights=None))
    branch.model_, branch.embedding_layer_name_ = build_model(backbone, size, None, 0.3, 0)
    rng = np.random.default_rng(0)
    scan = np.zeros((70, 120, 3), np.uint8)
    scan[5:65, 20:100] = rng.integers(30, 255, (60, 80, 3), dtype=np.uint8)
    path = tmp_path / "scan.png"
    assert cv2.imwrite(str(path), scan)
    rows = _rows(path)
    positive = saliency_for_images(branch, rows, "gradcam")[0]
    negative = saliency_for_images(branch, rows, "gradcam", target="negative")[0]
    for result in (positive, negative):
        assert result.heatmap.shape == (70, 120) and result.overlay.shape == (70, 120, 3)
        assert np.all(result.heatmap[:5] == 0) and np.all(result.heatmap[:, :20] == 0)
    # With random weights the evidence points one way or the other, not nowhere.
    assert max(positive.heatmap.max(), negative.heatmap.max()) > 0
    background = np.zeros((2, size, size, SPECS[backbone].channels), np.float32)
    shap_map = saliency_for_images(branch, rows, "gradient_shap", background=background, nsamples=8)
    assert shap_map[0].heatmap.shape == (70, 120)


def test_pictures() -> None:
    wide = np.zeros((100, 1000, 3), np.uint8)
    decoded = cv2.imdecode(np.frombuffer(encode_png(wide, 500), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (50, 500, 3)
    gray16 = np.full((40, 40), 30000, np.uint16)
    gray16[10:30, 10:30] = 60000
    out = blank_annotations(gray16)
    assert out.dtype == np.uint8 and out.shape == (40, 40)
