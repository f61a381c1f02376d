"""Training-time augmentation: Keras preprocessing layers mapped over the training tf.data
pipeline only (never over validation or inference data).

Every layer is a no-op when called with ``training=False``, so even a model that embedded this
stack would predict deterministically. Transforms are chosen for B-mode ultrasound: a left-right
flip and small rotations/zooms (probe angle and depth vary; up-down flips would put the probe at
the bottom, which never happens), contrast and gamma (gain and display curves differ between
scanners) and multiplicative speckle (the noise model of coherent imaging). Padding introduced
by rotation and zoom is black, like the letterbox and the sector surround.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="deeppcos")
class RandomGamma(keras.layers.Layer):
    """x -> 255·(x/255)^γ with log γ ~ U(-max_log_gamma, max_log_gamma), one γ per image.
    Inputs are in [0, 255]."""

    def __init__(self, max_log_gamma: float = 0.25, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_log_gamma = float(max_log_gamma)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or self.max_log_gamma == 0:
            return inputs
        shape = (ops.shape(inputs)[0], 1, 1, 1)
        log_gamma = keras.random.uniform(
            shape, -self.max_log_gamma, self.max_log_gamma, seed=self.seed_generator
        )
        unit = ops.clip(inputs / 255.0, 0.0, 1.0)
        return 255.0 * ops.power(unit, ops.exp(log_gamma))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_log_gamma": self.max_log_gamma, "seed": self.seed}


@keras.saving.register_keras_serializable(package="deeppcos")
class SpeckleNoise(keras.layers.Layer):
    """Multiplicative noise x -> x·(1 + σ·n), n ~ N(0, 1), σ ~ U(0, max_sigma) per image,
    clipped to [0, 255]: black (background, padding) stays black, as real speckle does."""

    def __init__(self, max_sigma: float = 0.1, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_sigma = float(max_sigma)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or self.max_sigma == 0:
            return inputs
        batch = ops.shape(inputs)[0]
        sigma = keras.random.uniform(
            (batch, 1, 1, 1), 0.0, self.max_sigma, seed=self.seed_generator
        )
        noise = keras.random.normal(ops.shape(inputs), seed=self.seed_generator)
        return ops.clip(inputs * (1.0 + sigma * noise), 0.0, 255.0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_sigma": self.max_sigma, "seed": self.seed}


def build_augmentation(strength: float = 1.0, seed: int = 0) -> keras.Sequential:
    """The augmentation stack; ``strength`` scales every range (0 = identity, 1 = default).

    At strength 1: flip left-right, rotate ±10°, zoom ±10%, shift ±10% of the width and of the
    height, shear ±0.1, contrast ±20%, gamma e^±0.25, speckle σ up to 0.1. Each layer has its own
    seed derived from ``seed``. The shift and shear are the geometric augmentations of the chest
    X-ray transfer-learning recipes (Keras' ``width_shift_range``/``height_shift_range`` and
    ``shear_range`` at 0.1); like rotation and zoom they fill with black.
    """
    if strength < 0:
        raise ValueError(f"augmentation strength must be >= 0, got {strength}")
    if strength == 0:
        return keras.Sequential([keras.layers.Identity(name="no_augmentation")], name="augment")
    s = float(strength)
    layers = [
        keras.layers.RandomFlip("horizontal", seed=seed, name="flip"),
        # RandomRotation's factor is a fraction of a full turn: 10° = 10/360.
        keras.layers.RandomRotation(
            min(10.0 * s, 45.0) / 360.0, fill_mode="constant", seed=seed + 1, name="rotate"
        ),
        keras.layers.RandomZoom(
            min(0.1 * s, 0.5), fill_mode="constant", seed=seed + 2, name="zoom"
        ),
        keras.layers.RandomTranslation(
            min(0.1 * s, 0.4),
            min(0.1 * s, 0.4),
            fill_mode="constant",
            seed=seed + 6,
            name="shift",
        ),
        keras.layers.RandomShear(
            min(0.1 * s, 0.5), min(0.1 * s, 0.5), fill_mode="constant", seed=seed + 7, name="shear"
        ),
        keras.layers.RandomContrast(
            min(0.2 * s, 0.9), value_range=(0, 255), seed=seed + 3, name="contrast"
        ),
        RandomGamma(0.25 * s, seed=seed + 4, name="gamma"),
        SpeckleNoise(min(0.1 * s, 0.5), seed=seed + 5, name="speckle"),
    ]
    return keras.Sequential(layers, name="augment")
