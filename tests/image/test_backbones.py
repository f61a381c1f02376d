"""Backbones: every one builds and embeds; normalisation matches Keras; the weights policy."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from pydantic import ValidationError

from deeppcos.exceptions import ConfigError
from deeppcos.image import backbones
from deeppcos.image.backbones import (
    BackboneNormalization,
    backbone_blocks,
    backbone_of,
    build_model,
    unfreeze_top_blocks,
)
from deeppcos.image.params import ImageParams
from deeppcos.image.specs import SPECS

# (backbone, smallest valid size, embedding width). At these sizes even the big backbones
# build and run in about 2 s each on 2 cores, so all of them stay in the fast suite.
CASES = [
    ("compact", 16, 128),
    ("mobilenetv3small", 32, 576),
    ("efficientnetb0", 32, 1280),
    ("densenet121", 32, 1024),
    ("inceptionv3", 75, 2048),
    ("resnet50", 32, 2048),
]


@pytest.mark.parametrize(("name", "size", "width"), CASES)
def test_every_backbone_builds_and_embeds(name: str, size: int, width: int) -> None:
    model, embedding = build_model(name, size, weights=None, dropout=0.3, seed=0)
    channels = SPECS[name].channels
    assert model.input_shape == (None, size, size, channels)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, channels)).astype(np.float32)
    probability = np.asarray(model(x, training=False))
    assert probability.shape == (2, 1) and np.all((probability >= 0) & (probability <= 1))
    embedder = keras.Model(model.input, model.get_layer(embedding).output)
    assert embedder(x).shape == (2, width)
    blocks = backbone_blocks(backbone_of(model), name)
    assert len(blocks) >= 4
    unfrozen = unfreeze_top_blocks(model, name, 0.2)
    assert unfrozen == [b for b, _ in blocks][-len(unfrozen) :]
    assert 0 < len(model.trainable_weights) < len(model.weights)


def test_compact_is_small() -> None:
    model, _ = build_model("compact", 64, None, 0.3, 0)
    assert 80_000 < model.count_params() < 120_000


def test_top_blocks_rule_for_mobilenet() -> None:
    model, _ = build_model("mobilenetv3small", 32, None, 0.3, 0)
    names = [b for b, _ in backbone_blocks(backbone_of(model), "mobilenetv3small")]
    assert names[:2] == ["stem", "conv"] and names[-1] == "conv_1"
    assert unfreeze_top_blocks(model, "mobilenetv3small", 0.2) == [
        "expanded_conv_9",
        "expanded_conv_10",
        "conv_1",
    ]
    base = backbone_of(model)
    for layer in base.layers:  # BatchNorm stays frozen even in unfrozen blocks
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
    assert base.get_layer("conv_1").trainable and not base.get_layer("conv").trainable
    assert unfreeze_top_blocks(model, "mobilenetv3small", 0.0) == []


@pytest.mark.parametrize(
    ("mode", "family"),
    [("tf", "inception_v3"), ("torch", "densenet"), ("caffe", "resnet50")],
)
def test_normalisation_matches_keras_preprocess_input(mode: str, family: str) -> None:
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = getattr(keras.applications, family).preprocess_input(x.copy())
    got = np.asarray(BackboneNormalization(mode)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


# --- weights policy ---------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Keras cache and a download that fails as it does without network."""
    cache = tmp_path / "keras" / "models"
    monkeypatch.setattr(backbones, "keras_cache_dir", lambda: cache)

    def no_network(*args: object, **kwargs: object) -> Path:
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/...: None -- "
            "[Errno -2] Name or service not known"
        )

    monkeypatch.setattr(backbones, "_download", no_network)
    return cache


def test_imagenet_unreachable_says_what_to_do(offline: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        build_model("efficientnetb0", 64, weights="imagenet")
    message = str(caught.value)
    assert "'efficientnetb0_notop.h5'" in message
    assert repr(str(offline)) in message
    assert "weights: null" in message and "Name or service not known" in message
    assert "Traceback" not in message


def test_corrupt_cached_imagenet_file(offline: Path) -> None:
    offline.mkdir(parents=True)
    (offline / SPECS["mobilenetv3small"].imagenet.file_name).write_bytes(b"partial")  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="incomplete or corrupt"):
        build_model("mobilenetv3small", 32, weights="imagenet")


def test_compact_has_no_imagenet_weights() -> None:
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        build_model("compact", 32, weights="imagenet")
    with pytest.raises(ValidationError, match="no ImageNet weights"):
        ImageParams(backbone="compact", weights="imagenet")


def test_minimum_input_size_is_checked() -> None:
    with pytest.raises(ConfigError, match="at least 75"):
        build_model("inceptionv3", 64)
    with pytest.raises(ValidationError, match="image_size >= 75"):
        ImageParams(backbone="inceptionv3", image_size=64)


def test_unknown_backbone_and_weights_forms() -> None:
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_model("vgg16", 64)
    with pytest.raises(ValidationError, match="unknown backbone"):
        ImageParams(backbone="vgg16")
    with pytest.raises(ValidationError, match="weights must be"):
        ImageParams(weights="weights.bin")
    with pytest.raises(ConfigError, match="not found"):
        build_model("compact", 32, weights="/nonexistent/compact.weights.h5")


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_local_weights_file_is_loaded(tmp_path: Path) -> None:
    source, _ = build_model("compact", 32, None, 0.3, seed=1)
    path = tmp_path / "compact.weights.h5"
    backbone_of(source).save_weights(path)
    model, _ = build_model("compact", 32, str(path), 0.3, seed=2)
    for a, b in zip(backbone_of(source).weights, backbone_of(model).weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    wrong = tmp_path / "mobile.weights.h5"
    backbone_of(build_model("mobilenetv3small", 32)[0]).save_weights(wrong)
    with pytest.raises(ConfigError, match="could not load"):
        build_model("compact", 32, str(wrong))


def test_mixed_precision_model_keeps_a_float32_output() -> None:
    """The GPU path, checked on CPU: float16 compute, float32 output, global policy restored."""
    before = keras.config.dtype_policy().name
    model, _ = build_model("compact", 32, None, 0.3, 0, mixed_precision=True)
    assert keras.config.dtype_policy().name == before
    assert model.dtype_policy.name == "mixed_float16"
    assert model.get_layer("p_image").dtype_policy.name == "float32"
    x = np.full((1, 32, 32, 1), 128.0, np.float32)
    assert np.asarray(model(x)).dtype == np.float32
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
