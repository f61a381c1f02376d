"""Augmentation: identity at inference and at strength 0, bounded when training."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from deeppcos.image.augment import RandomGamma, SpeckleNoise, build_augmentation


def _batch() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (4, 32, 32, 1)).astype(np.float32)


def test_identity_at_inference() -> None:
    x = _batch()
    augment = build_augmentation(1.0, seed=0)
    np.testing.assert_array_equal(np.asarray(augment(x, training=False)), x)


def test_strength_zero_is_identity_even_in_training() -> None:
    x = _batch()
    np.testing.assert_array_equal(np.asarray(build_augmentation(0.0, seed=0)(x, training=True)), x)


def test_training_changes_images_within_range() -> None:
    x = _batch()
    out = np.asarray(build_augmentation(1.0, seed=3)(x, training=True))
    assert out.shape == x.shape
    assert not np.allclose(out, x)
    assert out.min() >= 0.0 and out.max() <= 255.0 + 1e-3


def test_custom_layers_serialise_and_respect_training() -> None:
    x = _batch()
    for layer in (RandomGamma(0.3, seed=1), SpeckleNoise(0.2, seed=2)):
        clone = layer.__class__.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
        assert not np.allclose(np.asarray(layer(x, training=True)), x)
    black = np.zeros((2, 8, 8, 1), np.float32)
    assert np.all(np.asarray(SpeckleNoise(0.5, seed=0)(black, training=True)) == 0)


def test_negative_strength_is_rejected() -> None:
    with pytest.raises(ValueError, match="strength"):
        build_augmentation(-1.0, seed=0)


def test_stack_is_a_keras_sequential() -> None:
    stack = build_augmentation(0.5, seed=0)
    assert isinstance(stack, keras.Sequential)
    assert [layer.name for layer in stack.layers] == [
        "flip",
        "rotate",
        "zoom",
        "shift",
        "shear",
        "contrast",
        "gamma",
        "speckle",
    ]


def test_shift_and_shear_move_content_only_in_training() -> None:
    """A bright square: shifted or sheared in training (same total within the fill), untouched
    at inference; the fill is black like the letterbox."""
    x = np.zeros((8, 32, 32, 1), np.float32)
    x[:, 12:20, 12:20] = 255.0
    for name in ("shift", "shear"):
        layer = build_augmentation(2.0, seed=4).get_layer(name)
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
        moved = np.asarray(layer(x, training=True))
        assert not np.allclose(moved, x), name
        assert moved.min() >= 0.0 and moved[:, 0, 0].max() == 0.0  # corners stay black
