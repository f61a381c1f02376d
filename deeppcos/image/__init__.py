"""The image branch: OpenCV preprocessing, Keras backbones and weights policy, augmentation,
training with tf.data, embeddings and Grad-CAM.

Importing this package is cheap: names are loaded on first use, and TensorFlow only with the
modules that need it (``backbones``, ``augment``, ``pipeline``, ``gradcam``, and ``ImageBranch``
when it trains or predicts). ``ImageParams``, ``PreprocessConfig`` and ``BACKBONES`` never load
TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BACKBONES",
    "GradCamResult",
    "ImageBranch",
    "ImageParams",
    "LetterboxGeometry",
    "PreprocessConfig",
    "build_augmentation",
    "build_model",
    "grad_cam",
    "grad_cam_file",
    "letterbox_geometry",
    "load_and_preprocess",
    "overlay",
    "unletterbox",
]

_WHERE = {
    "BACKBONES": "deeppcos.image.specs",
    "ImageParams": "deeppcos.image.params",
    "PreprocessConfig": "deeppcos.image.preprocess",
    "LetterboxGeometry": "deeppcos.image.preprocess",
    "letterbox_geometry": "deeppcos.image.preprocess",
    "load_and_preprocess": "deeppcos.image.preprocess",
    "unletterbox": "deeppcos.image.preprocess",
    "ImageBranch": "deeppcos.image.branch",
    "build_augmentation": "deeppcos.image.augment",
    "build_model": "deeppcos.image.backbones",
    "GradCamResult": "deeppcos.image.gradcam",
    "grad_cam": "deeppcos.image.gradcam",
    "grad_cam_file": "deeppcos.image.gradcam",
    "overlay": "deeppcos.image.gradcam",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'deeppcos.image' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
