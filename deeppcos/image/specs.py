"""What deeppcos knows about each backbone, as plain data (no TensorFlow import).

Kept apart from ``backbones.py`` so that parameter validation (``ImageParams``) and the command
line can name and check backbones without loading Keras.

Fine-tuning rule ("top blocks")
-------------------------------
A backbone's layers, in Keras' topological order, are grouped into *blocks*:

- ``prefix`` rule: a layer whose name matches the family's regular expression belongs to the
  block that the match's first group names (``block6a_expand_conv`` -> ``block6a``); layers with
  auto-generated names (``activation_17``, ``re_lu_3``) belong to the block of the layer before.
- ``end`` rule (InceptionV3, whose inner layers all have auto-generated names): a layer matching
  the expression *closes* a block (``mixed0`` … ``mixed10``); every layer up to it is in it.

Phase 2 unfreezes the last ``max(1, ceil(unfreeze_fraction × number of blocks))`` blocks.
BatchNormalization layers stay frozen (and so in inference mode) in every phase: their running
statistics come from ImageNet and small medical batches would wreck them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImagenetWeights:
    """The no-top ImageNet weights file Keras downloads for a backbone. ``md5`` is None where
    Keras itself publishes no checksum (MobileNet v1); the file is then checked by loading it."""

    file_name: str
    url: str
    md5: str | None


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    constructor: str  # attribute of keras.applications; "" for the in-house compact CNN
    channels: int  # input channels the backbone expects
    min_size: int  # smallest input side in pixels the architecture accepts
    normalization: str  # BackboneNormalization mode applied inside the model (see backbones)
    block_rule: str  # "prefix" or "end" (see module docstring)
    block_pattern: str
    imagenet: ImagenetWeights | None
    description: str
    # Width multipliers (Keras' ``alpha``) the ImageNet files exist for; empty for backbones
    # without one. A file name and URL with "{alpha}" take the width as Keras spells it ("2_5").
    widths: tuple[float, ...] = ()


_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications"

SPECS: dict[str, BackboneSpec] = {
    "compact": BackboneSpec(
        name="compact",
        constructor="",
        channels=1,
        min_size=16,
        normalization="unit",  # x / 255
        block_rule="prefix",
        block_pattern=r"^(block\d+)_",
        imagenet=None,
        description="4 conv blocks (16-32-64-128) with BatchNorm and ReLU, ~98k parameters; "
        "trained from scratch, quick on CPU and small cohorts",
    ),
    "mobilenet": BackboneSpec(
        name="mobilenet",
        constructor="MobileNet",
        channels=3,
        min_size=32,
        normalization="tf",  # mobilenet.preprocess_input: to [-1, 1]
        block_rule="prefix",
        # conv1 (the stem), then one block per depthwise-separable unit 1..13: conv_pad_k,
        # conv_dw_k and conv_pw_k with their BatchNorm and ReLU.
        block_pattern=r"^(?:conv_(?:dw|pw|pad)_)?(conv1|\d+)(?:_|$)",
        # The 224-px file for every input size: convolution weights do not depend on it, and
        # Keras has files for 128-224 px only.
        imagenet=ImagenetWeights(
            "mobilenet_{alpha}_224_tf_no_top.h5",
            f"{_KERAS_APPS}/mobilenet/mobilenet_{{alpha}}_224_tf_no_top.h5",
            None,
        ),
        description="MobileNet v1 with width multiplier `width` (0.25-1.0; 0.22M-3.2M "
        "parameters); at width 0.25 about 50% ImageNet top-1, the smallest ImageNet backbone",
        widths=(0.25, 0.5, 0.75, 1.0),
    ),
    "mobilenetv3small": BackboneSpec(
        name="mobilenetv3small",
        constructor="MobileNetV3Small",
        channels=3,
        min_size=32,
        normalization="none",  # the Keras model rescales to [-1, 1] itself
        block_rule="prefix",
        block_pattern=r"^(expanded_conv(?:_\d+)?|conv_1|conv)(?:_|$)",
        imagenet=ImagenetWeights(
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            f"{_KERAS_APPS}/mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            "d3e8ec802a04aa4fc771ee12a9a9b836",
        ),
        description="MobileNetV3-Small, 0.9M parameters: the quickest ImageNet backbone",
    ),
    "efficientnetb0": BackboneSpec(
        name="efficientnetb0",
        constructor="EfficientNetB0",
        channels=3,
        min_size=32,
        normalization="none",  # the Keras model rescales and normalises itself
        block_rule="prefix",
        block_pattern=r"^(stem|block\d+[a-z]|top)_",
        imagenet=ImagenetWeights(
            "efficientnetb0_notop.h5",
            "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
            "50bc09e76180e00e4465e1a485ddc09d",
        ),
        description="EfficientNet-B0, 4.0M parameters",
    ),
    "densenet121": BackboneSpec(
        name="densenet121",
        constructor="DenseNet121",
        channels=3,
        min_size=32,
        normalization="torch",  # densenet.preprocess_input: /255, ImageNet mean and std
        block_rule="prefix",
        block_pattern=r"^(conv\d_block\d+|conv\d|pool\d|bn$|relu$)",
        imagenet=ImagenetWeights(
            "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
            f"{_KERAS_APPS}/densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "30ee3e1110167f948a6b9946edeeb738",
        ),
        description="DenseNet-121, 7.0M parameters (CheXNet's backbone)",
    ),
    "inceptionv3": BackboneSpec(
        name="inceptionv3",
        constructor="InceptionV3",
        channels=3,
        min_size=75,
        normalization="tf",  # inception_v3.preprocess_input: to [-1, 1]
        block_rule="end",
        block_pattern=r"^mixed\d+$",
        imagenet=ImagenetWeights(
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            f"{_KERAS_APPS}/inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "bcbd6486424b2319ff4ef7d526e38f63",
        ),
        description="Inception-v3, 21.8M parameters; needs inputs of at least 75 px",
    ),
    "resnet50": BackboneSpec(
        name="resnet50",
        constructor="ResNet50",
        channels=3,
        min_size=32,
        normalization="caffe",  # resnet50.preprocess_input: RGB->BGR, ImageNet mean subtracted
        block_rule="prefix",
        block_pattern=r"^(conv\d_block\d+|conv1|pool1)_",
        imagenet=ImagenetWeights(
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            f"{_KERAS_APPS}/resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "4d473c1dd8becc155b73f8504c6f6626",
        ),
        description="ResNet-50, 23.6M parameters",
    ),
}

BACKBONES: frozenset[str] = frozenset(SPECS)
WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".keras")


def imagenet_weights(spec: BackboneSpec, width: float = 1.0) -> ImagenetWeights | None:
    """The ImageNet file of a backbone at a width (``None`` when it has none)."""
    if spec.imagenet is None:
        return None
    if not spec.widths:
        return spec.imagenet
    if width not in spec.widths:
        raise ValueError(
            f"backbone {spec.name!r} has ImageNet weights for widths {list(spec.widths)}; "
            f"got width {width}"
        )
    alpha = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}[width]  # as Keras names them
    weights = spec.imagenet
    return ImagenetWeights(
        weights.file_name.format(alpha=alpha), weights.url.format(alpha=alpha), weights.md5
    )


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of a backbone by name; ValueError naming the choices otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
