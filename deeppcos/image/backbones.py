"""Backbones, the weights policy and the classification model around them.

Every model is ``input [0, 255] -> BackboneNormalization -> backbone (nested keras.Model,
include_top=False) -> GlobalAveragePooling2D "embedding" -> Dropout -> Dense(1, sigmoid)
"p_image"``. Each backbone family's input normalisation lives in the model, so a saved model
takes the preprocessed pixels as they come out of ``preprocess.py``.

Pooling (``pool_grid``, ``pool_layers``): global average pooling forgets *where* in the image a
feature is, which is what a chest X-ray's cardiomegaly is about (the heart's width against the
thorax's). With a grid above 1 or extra layers the nested backbone ends in
:class:`SpatialGridPooling` (each chosen feature map averaged over grid × grid cells, all
concatenated: a one-level spatial pyramid, He et al. 2014) and the outer "embedding" layer is
an identity; the outer model stays a chain, so Grad-CAM and fine-tuning work unchanged. On the
NIH chest X-ray sample (frozen MobileNet 0.25 at 224 px, patient-grouped 5-fold): global
pooling 0.79, a 4 × 4 grid of the last map 0.85, with ``conv_pw_11_relu`` beside it 0.86
(``benchmarks/bench_image_modes.py``).

Weights policy (``weights``):

- ``None``: random initialisation (the only choice for ``compact``);
- ``"imagenet"``: the no-top ImageNet file from the Keras cache (``$KERAS_HOME/models`` or
  ``~/.keras/models``), downloaded when absent; where it is absent and cannot be downloaded
  (offline), a ``ConfigError`` says which file to place in which folder. MobileNet v1 takes its
  width (``alpha``) from ``width`` and always loads the 224-px file of that width (convolution
  weights do not depend on the input size);
- a path to a local ``.h5``, ``.weights.h5`` or ``.keras`` file holding the backbone's weights
  (no top), loaded into the backbone after it is built. A file that does not fit — another
  backbone or width, not HDF5, or a Keras 2 file named ``.weights.h5`` (Keras 3 reads that suffix
  with its own format) — is a ``ConfigError`` that says which. For EfficientNetB0 prefer placing
  the ImageNet file in the cache: Keras adds a rescaling step only when it loads "imagenet"
  itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from deeppcos.exceptions import ConfigError
from deeppcos.image.specs import (
    BACKBONES,
    SPECS,
    WEIGHT_SUFFIXES,
    BackboneSpec,
    ImagenetWeights,
    imagenet_weights,
)

__all__ = [
    "BACKBONES",
    "SPECS",
    "BackboneNormalization",
    "SpatialGridPooling",
    "backbone_blocks",
    "backbone_of",
    "build_model",
    "ensure_imagenet_weights",
    "gpu_available",
    "keras_cache_dir",
    "unfreeze_top_blocks",
]

EMBEDDING_LAYER = "embedding"
OUTPUT_LAYER = "p_image"

# ImageNet statistics used by the "torch" and "caffe" preprocess_input modes.
_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="deeppcos")
class BackboneNormalization(keras.layers.Layer):
    """A backbone family's input normalisation, from pixels in [0, 255]. Modes mirror
    ``keras.applications.<family>.preprocess_input``: ``none`` (the backbone normalises itself),
    ``unit`` (x/255), ``tf`` (to [-1, 1]), ``torch`` (x/255, ImageNet mean/std), ``caffe``
    (RGB to BGR, ImageNet mean subtracted)."""

    MODES = ("none", "unit", "tf", "torch", "caffe")

    def __init__(self, mode: str = "none", **kwargs: Any):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"normalisation mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "none":
            return x
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN_RGB, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD_RGB, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        return ops.flip(x, axis=-1) - mean

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="deeppcos")
class SpatialGridPooling(keras.layers.Layer):
    """Each input feature map (N, H, W, C) averaged over ``grid`` × ``grid`` cells of near-equal
    size, row by row, then everything concatenated: (N, Σ C × grid²). ``grid`` 1 is global
    average pooling. Cell edges are fixed when the layer is built (the maps' sizes are static
    for a given input size)."""

    def __init__(self, grid: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        if int(grid) < 1:
            raise ValueError(f"grid must be at least 1 cell per side; got {grid}")
        self.grid = int(grid)

    def call(self, inputs: Any) -> Any:
        maps = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        pooled = []
        for features in maps:
            rows = grid_edges(int(features.shape[1]), self.grid)
            cols = grid_edges(int(features.shape[2]), self.grid)
            for top, bottom in itertools.pairwise(rows):
                for left, right in itertools.pairwise(cols):
                    pooled.append(ops.mean(features[:, top:bottom, left:right, :], axis=(1, 2)))
        return ops.concatenate(pooled, axis=-1) if len(pooled) > 1 else pooled[0]

    def compute_output_shape(self, input_shape: Any) -> Any:
        shapes = input_shape if isinstance(input_shape, list) else [input_shape]
        return (shapes[0][0], sum(int(s[-1]) for s in shapes) * self.grid**2)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "grid": self.grid}


def grid_edges(size: int, grid: int) -> list[int]:
    """``grid`` + 1 cell edges over ``size`` pixels, every cell at least one pixel wide."""
    if grid > size:
        raise ConfigError(
            f"pool_grid {grid} needs feature maps at least {grid} cells wide; this input size "
            f"gives {size} (raise image_size or lower pool_grid)"
        )
    return [int(v) for v in np.linspace(0, size, grid + 1).round()]


def _pooled_backbone(base: keras.Model, grid: int, layers: tuple[str, ...]) -> keras.Model:
    """The backbone ending in :class:`SpatialGridPooling` over ``layers`` and its last map."""
    maps = []
    for name in layers:
        try:
            layer = base.get_layer(name)
        except ValueError:
            spatial = [la.name for la in base.layers if _is_spatial(la)][-8:]
            raise ConfigError(
                f"pool_layers: the backbone {base.name!r} has no layer {name!r}; its last "
                f"spatial layers are {spatial}"
            ) from None
        if not _is_spatial(layer):
            raise ConfigError(f"pool_layers: layer {name!r} has no spatial (4-D) output")
        maps.append(layer.output)
    maps.append(base.output)
    vector = SpatialGridPooling(grid, name="grid_pooling")(maps if len(maps) > 1 else maps[0])
    return keras.Model(base.input, vector, name=base.name)


def _is_spatial(layer: keras.layers.Layer) -> bool:
    try:
        return len(layer.output.shape) == 4
    except (AttributeError, ValueError):
        return False


# --- environment --------------------------------------------------------------------------------


def gpu_available() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def accelerators() -> list[str]:
    """The logical accelerator devices training may spread over (GPUs)."""
    import tensorflow as tf

    return [device.name for device in tf.config.list_logical_devices("GPU")]


def training_strategy() -> Any:
    """``tf.distribute.MirroredStrategy`` over the accelerators when there are two or more
    (each batch split between them, gradients summed), else None (the default strategy)."""
    import tensorflow as tf

    devices = accelerators()
    if len(devices) < 2:
        return None
    return tf.distribute.MirroredStrategy(devices)


@contextlib.contextmanager
def dtype_policy(name: str | None) -> Iterator[None]:
    """Build layers under a dtype policy, then restore the global one (Keras applications read
    the global policy at construction and take no dtype argument)."""
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def keras_cache_dir() -> Path:
    """The folder where Keras caches downloaded weights (``<keras home>/models``), resolved as
    ``keras.utils.get_file`` does: ``$KERAS_HOME`` (read when Keras was imported) or
    ``~/.keras``, and ``/tmp/.keras`` where that is not writable."""
    try:
        from keras.src.backend.config import keras_home

        home = Path(keras_home()).expanduser()
    except ImportError:  # a Keras without the private accessor: same rule, read now
        home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
    if not os.access(home, os.W_OK):
        home = Path("/tmp/.keras")
    return home / "models"


# --- weights ------------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(weights: ImagenetWeights, cache_root: Path) -> Path:
    """Fetch into the Keras cache (separate so tests can block it without touching Keras)."""
    return Path(
        keras.utils.get_file(
            weights.file_name,
            weights.url,
            cache_subdir="models",
            file_hash=weights.md5,
            cache_dir=str(cache_root),
        )
    )


def _offline_help(spec: BackboneSpec, weights: ImagenetWeights, folder: Path) -> str:
    return (
        f"Either place the file {weights.file_name!r} (from {weights.url}) in the folder "
        f"{str(folder)!r} (the Keras cache; set KERAS_HOME to use another), or set weights to "
        f"the path of a local copy (weights: /path/to/{weights.file_name}), or train "
        f"{spec.name!r} from random initialisation with weights: null."
    )


def ensure_imagenet_weights(spec: BackboneSpec, width: float = 1.0) -> Path:
    """The path of the backbone's ImageNet file in the Keras cache, downloading it if absent.

    Raises ConfigError (no traceback needed) when the file is absent and cannot be fetched,
    or is present but incomplete.
    """
    if spec.imagenet is None:
        raise ConfigError(
            f"backbone {spec.name!r} has no ImageNet weights; use weights: null (train from "
            "scratch) or an ImageNet backbone such as 'mobilenet' or 'efficientnetb0'"
        )
    try:
        weights = imagenet_weights(spec, width)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    assert weights is not None
    folder = keras_cache_dir()
    path = folder / weights.file_name
    if path.is_file():
        if weights.md5 is None or _md5(path) == weights.md5:
            return path
        raise ConfigError(
            f"the ImageNet weights file {str(path)!r} is incomplete or corrupt (MD5 "
            f"{_md5(path)}, expected {weights.md5}); delete it. "
            + _offline_help(spec, weights, folder)
        )
    try:
        return _download(weights, folder.parent)
    except Exception as exc:  # get_file raises bare Exception on network failure
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"ImageNet weights for backbone {spec.name!r} are not in the Keras cache and could "
            f"not be downloaded ({reason}). " + _offline_help(spec, weights, folder)
        ) from None


def weights_sha256(path: Path) -> str:
    """The SHA-256 of a weights file: what a cache of embeddings is keyed by."""
    from deeppcos.data.imageio import file_sha256

    return file_sha256(path)


def resolve_weights(backbone: str, weights: str | None, width: float = 1.0) -> Path | None:
    """The file a backbone's weights come from (None for random initialisation): the ImageNet
    file in the Keras cache (fetched when absent) or the local file named."""
    if weights is None:
        return None
    if weights == "imagenet":
        return ensure_imagenet_weights(_spec(backbone), width)
    return _check_local_weights(weights)


def _check_local_weights(weights: str) -> Path:
    path = Path(weights).expanduser()
    if not str(path).endswith(WEIGHT_SUFFIXES):
        raise ConfigError(
            f"weights must be 'imagenet', null or a path ending in {list(WEIGHT_SUFFIXES)}; "
            f"got {weights!r}"
        )
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} not found")
    return path


def _load_local_weights(backbone: keras.Model, path: Path, spec: BackboneSpec) -> None:
    layout = _weights_layout(path)
    if layout == "not hdf5" and path.suffix != ".keras":
        raise ConfigError(
            f"{str(path)!r} is not an HDF5 weights file (its first bytes are not HDF5's "
            "signature); give the backbone's no-top weights as .h5 (Keras 2) or .weights.h5 "
            "(Keras 3)"
        )
    if layout == "keras2" and path.name.endswith(".weights.h5"):
        raise ConfigError(
            f"{str(path)!r} holds Keras 2 weights (a 'layer_names' list) under a .weights.h5 "
            "name, which Keras 3 reads with its own format and cannot load; rename it to end in "
            f"'.h5' only (e.g. {path.name.removesuffix('.weights.h5')}.h5)"
        )
    try:
        backbone.load_weights(str(path))
    except Exception as exc:  # Keras raises ValueError, OSError, KeyError… for mismatches
        found = _first_kernel_shape(path) if layout == "keras2" else None
        hint = ""
        if found is not None:
            own = _own_first_kernel_shape(backbone)
            hint = (
                f" Its first convolution has shape {found}, the backbone's {own}: a different "
                "backbone or width (MobileNet's width multiplier sets the number of filters)."
            )
        raise ConfigError(
            f"could not load {str(path)!r} into backbone {spec.name!r}: {exc}.{hint} The file "
            f"must hold weights of the {spec.name} backbone without its classification top"
        ) from None


def _weights_layout(path: Path) -> str:
    """The file's layout: "keras2" (a ``layer_names`` attribute), "keras3" (``layers``/``vars``
    groups), "not hdf5" or "unknown"."""
    import h5py

    with path.open("rb") as handle:
        if handle.read(8) != b"\x89HDF\r\n\x1a\n":
            return "not hdf5"
    try:
        with h5py.File(path, "r") as handle:
            if "layer_names" in handle.attrs:
                return "keras2"
            if "layers" in handle or "vars" in handle:
                return "keras3"
    except OSError as exc:  # a truncated download, a damaged file
        raise ConfigError(
            f"{str(path)!r} is an HDF5 file that cannot be read ({exc}); download or copy it again"
        ) from None
    return "unknown"


def _first_kernel_shape(path: Path) -> tuple[int, ...] | None:
    """The shape of the first 4-D kernel in a Keras 2 weights file (the stem convolution)."""
    import h5py

    with h5py.File(path, "r") as handle:
        for raw in handle.attrs["layer_names"]:
            group = handle[raw.decode() if isinstance(raw, bytes) else raw]
            for name in group.attrs.get("weight_names", []):
                data = group[name.decode() if isinstance(name, bytes) else name]
                if len(data.shape) == 4:
                    return tuple(int(d) for d in data.shape)
    return None


def _own_first_kernel_shape(backbone: keras.Model) -> tuple[int, ...] | None:
    for weight in backbone.weights:
        if len(weight.shape) == 4:
            return tuple(int(d) for d in weight.shape)
    return None


# --- backbones ----------------------------------------------------------------------------------


def _compact(input_shape: tuple[int, int, int], seed: int) -> keras.Model:
    """A small CNN for small cohorts and CPUs: four 3×3 conv blocks (16-32-64-128 filters) with
    BatchNorm and ReLU, 2×2 max-pooling after the first three; ~98k parameters. The last block
    keeps 1/8 of the input resolution, which is also what Grad-CAM sees.

    BatchNorm momentum is 0.9, not Keras' 0.99: a small cohort gives ~10 steps an epoch, and
    running statistics that take hundreds of steps to settle made validation scores swing
    from epoch to epoch (early stopping then chased noise)."""
    inputs = keras.Input(input_shape, name="compact_input")
    x = inputs
    for i, filters in enumerate((16, 32, 64, 128), start=1):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(seed=seed + i),
            name=f"block{i}_conv",
        )(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = keras.layers.Activation("relu", name=f"block{i}_relu")(x)
        if i < 4:
            x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    return keras.Model(inputs, x, name="compact")


def _application(
    spec: BackboneSpec, input_shape: tuple[int, int, int], imagenet: bool, width: float = 1.0
) -> keras.Model:
    constructor = getattr(keras.applications, spec.constructor)
    extra = {"alpha": width} if spec.widths else {}
    return constructor(
        include_top=False,
        weights="imagenet" if imagenet else None,
        input_shape=input_shape,
        **extra,
    )


def check_input_size(spec: BackboneSpec, image_size: int) -> None:
    if image_size < spec.min_size:
        raise ConfigError(
            f"backbone {spec.name!r} needs inputs of at least {spec.min_size}×{spec.min_size} "
            f"pixels; got image_size {image_size}. Raise image_size or pick another backbone"
        )


def _spec(backbone: str) -> BackboneSpec:
    if backbone not in SPECS:
        raise ConfigError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    return SPECS[backbone]


def build_backbone(
    backbone: str, image_size: int, weights: str | None, seed: int = 0, width: float = 1.0
) -> keras.Model:
    """The backbone alone (include_top=False), weights loaded per the policy above."""
    spec = _spec(backbone)
    check_input_size(spec, image_size)
    shape = (image_size, image_size, spec.channels)
    if weights == "imagenet" and not spec.widths:
        ensure_imagenet_weights(spec)  # ConfigError with instructions when offline
        return _application(spec, shape, imagenet=True)
    # MobileNet's ImageNet file is read here, whatever the input size (see the module notes).
    source = resolve_weights(backbone, weights, width)
    keras.utils.set_random_seed(seed)  # application constructors take no seed
    if spec.name == "compact":
        model = _compact(shape, seed)
    else:
        model = _application(spec, shape, False, width)
    if source is not None:
        _load_local_weights(model, source, spec)
    return model


def build_model(
    backbone: str,
    image_size: int,
    weights: str | None = None,
    dropout: float = 0.3,
    seed: int = 0,
    *,
    width: float = 1.0,
    mixed_precision: bool = False,
    pool_grid: int = 1,
    pool_layers: tuple[str, ...] | list[str] = (),
) -> tuple[keras.Model, str]:
    """(classification model, name of the embedding layer) for one backbone.

    With a pretrained backbone (``weights`` not None) BatchNormalization layers are frozen for
    good (see ``specs``); a randomly initialised one keeps them trainable. ``mixed_precision``
    builds under "mixed_float16" (for GPUs) with the output layer in float32. ``pool_grid`` and
    ``pool_layers``: the embedding's pooling (see the module notes).
    """
    grid_pooled = pool_grid > 1 or bool(pool_layers)
    spec = _spec(backbone)
    check_input_size(spec, image_size)
    with dtype_policy("mixed_float16" if mixed_precision else None):
        base = build_backbone(backbone, image_size, weights, seed, width)
        if weights is not None:
            for layer in base.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        if grid_pooled:
            base = _pooled_backbone(base, pool_grid, tuple(pool_layers))
        inputs = keras.Input((image_size, image_size, spec.channels), name="image")
        x = BackboneNormalization(spec.normalization, name="normalize")(inputs)
        x = base(x)
        embedding = (
            keras.layers.Identity(name=EMBEDDING_LAYER)(x)  # pooled inside the backbone
            if grid_pooled
            else keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(x)
        )
        x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(embedding)
        outputs = keras.layers.Dense(
            1,
            activation="sigmoid",
            dtype="float32",  # a float16 sigmoid saturates; the loss wants float32
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name=OUTPUT_LAYER,
        )(x)
        # Built under the policy, so compile() wraps the optimizer in loss scaling.
        model = keras.Model(inputs, outputs, name=f"deeppcos_image_{spec.name}")
    return model, EMBEDDING_LAYER


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested backbone model inside a model built by ``build_model``."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(
            f"expected one nested backbone in model {model.name!r}, found {len(nested)}"
        )
    return nested[0]


# --- fine-tuning ----------------------------------------------------------------------------


def backbone_blocks(base: keras.Model, backbone: str) -> list[tuple[str, list[str]]]:
    """The backbone's layers grouped into ordered blocks (rules in ``deeppcos.image.specs``):
    [(block name, [layer names])]."""
    spec = _spec(backbone)
    pattern = re.compile(spec.block_pattern)
    layers = [la for la in base.layers if not isinstance(la, keras.layers.InputLayer)]
    blocks: list[tuple[str, list[str]]] = []
    if spec.block_rule == "end":
        current: list[str] = []
        for layer in layers:
            current.append(layer.name)
            if pattern.match(layer.name):
                blocks.append((layer.name, current))
                current = []
        if current:  # layers after the last marker join the last block
            if blocks:
                blocks[-1][1].extend(current)
            else:
                blocks.append(("all", current))
        return blocks
    for layer in layers:
        match = pattern.match(layer.name)
        key = match.group(1) if match else (blocks[-1][0] if blocks else "stem")
        if not blocks or blocks[-1][0] != key:
            blocks.append((key, []))
        blocks[-1][1].append(layer.name)
    return blocks


def unfreeze_top_blocks(model: keras.Model, backbone: str, fraction: float) -> list[str]:
    """Freeze the backbone, then unfreeze its last ``max(1, ceil(fraction × blocks))`` blocks
    (BatchNormalization excepted); return the unfrozen block names. ``fraction`` 0 unfreezes
    nothing."""
    base = backbone_of(model)
    base.trainable = True  # nested trainable flags only take effect under a trainable parent
    for layer in base.layers:
        layer.trainable = False
    if fraction <= 0:
        return []
    blocks = backbone_blocks(base, backbone)
    count = max(1, math.ceil(fraction * len(blocks)))
    chosen = blocks[-count:]
    for _, names in chosen:
        for name in names:
            layer = base.get_layer(name)
            if not isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
    return [name for name, _ in chosen]


def freeze_backbone(model: keras.Model) -> None:
    backbone_of(model).trainable = False


def count_params(model: keras.Model, trainable: bool | None = None) -> int:
    weights = (
        model.weights
        if trainable is None
        else (model.trainable_weights if trainable else model.non_trainable_weights)
    )
    return int(sum(np.prod(w.shape) for w in weights))
