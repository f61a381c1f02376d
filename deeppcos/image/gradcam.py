"""Grad-CAM saliency for every backbone, drawn back onto the original image.

Grad-CAM (Selvaraju et al., 2017) weights the channels of a convolutional feature map by the
spatially averaged gradient of the class score and keeps the positive part. The score is the
*logit* of the output unit (computed from the last Dense layer when it ends in a sigmoid),
not the probability, so confident predictions still have usable gradients.

Keras 3 nested models: the backbone is a model inside the classifier, and a layer inside it is
not connected to the outer model's graph. So the outer model is run layer by layer (it must be a
chain, as every ``build_model`` model is), and the nested backbone is replaced by a two-output
model over its own graph (the chosen feature map and its usual output), all under one
``tf.GradientTape`` watching the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import keras
import numpy as np
import tensorflow as tf

from deeppcos.image.preprocess import LetterboxGeometry, load_with_geometry, to_uint8, unletterbox

__all__ = ["GradCamResult", "grad_cam", "grad_cam_file", "last_conv_layer", "overlay"]

Target = Literal["predicted", "positive", "negative"]


@dataclass(frozen=True)
class GradCamResult:
    probability: float
    heatmap: np.ndarray  # H×W at the original image's geometry, in [0, 1]
    overlay: np.ndarray  # H×W×3 RGB uint8
    heatmap_input: np.ndarray  # over the network's input (image_size²), in [0, 1]
    geometry: LetterboxGeometry
    layer_name: str


# --- locating the feature map -------------------------------------------------------------------


def _rank(layer: keras.layers.Layer) -> int:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called, or called more than once
        return 0


def last_conv_layer(model: keras.Model) -> tuple[list[keras.Model], keras.layers.Layer]:
    """(containers from outer to inner, layer) of the last layer with a 4-D output, searching
    nested models first-from-the-end: the deepest spatial feature map the output sees."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            try:
                containers, found = last_conv_layer(layer)
            except ValueError:
                continue
            return [layer, *containers], found
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if _rank(layer) == 4:
            return [], layer
    raise ValueError(f"model {model.name!r} has no layer with a 4-D (spatial) output")


def find_layer(model: keras.Model, name: str) -> tuple[list[keras.Model], keras.layers.Layer]:
    """(containers from outer to inner, layer) of the layer called ``name`` at any depth."""
    for layer in model.layers:
        if layer.name == name:
            return [], layer
        if isinstance(layer, keras.Model):
            try:
                containers, found = find_layer(layer, name)
            except ValueError:
                continue
            return [layer, *containers], found
    raise ValueError(f"no layer named {name!r} in model {model.name!r} or its nested models")


# --- running the model with the feature map exposed ---------------------------------------------


def _split_head(model: keras.Model) -> tuple[list[keras.layers.Layer], keras.layers.Dense | None]:
    """The outer layers to run, and the final sigmoid Dense whose logit we compute ourselves."""
    layers = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    last = layers[-1] if layers else None
    if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.sigmoid:
        return layers[:-1], last
    return layers, None


def _exposing(container: keras.Model, inner: list[keras.Model], layer: keras.layers.Layer) -> Any:
    """A callable x -> (feature map, container output) over ``container``'s own graph."""
    if inner:
        raise ValueError(
            f"layer {layer.name!r} sits more than one model deep (inside {inner[0].name!r}); "
            "Grad-CAM handles one level of nesting — name a layer of the backbone itself"
        )
    return keras.Model(container.input, [layer.output, container.output])


def _forward(
    model: keras.Model, containers: list[keras.Model], layer: keras.layers.Layer, x: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(feature map, score before the output activation, model output) for batch ``x``."""
    layers, head = _split_head(model)
    if not containers:  # the layer is in the outer graph: one multi-output model suffices
        source = head.input if head is not None else model.output
        exposed = keras.Model(model.input, [layer.output, source])
        features, pre = exposed(x, training=False)
    else:
        nested = _exposing(containers[0], containers[1:], layer)
        pre, features = x, None
        for current in layers:
            if current is containers[0]:
                features, pre = nested(pre, training=False)
            else:
                pre = current(pre, training=False)
        if features is None:
            raise ValueError(f"nested model {containers[0].name!r} is not on the model's path")
    if head is None:
        return features, pre, pre
    logit = tf.matmul(tf.cast(pre, tf.float32), tf.cast(head.kernel, tf.float32))
    logit = logit + tf.cast(head.bias, tf.float32) if head.use_bias else logit
    return features, logit, tf.sigmoid(logit)


def grad_cam(
    branch_or_model: Any,
    pixels_preprocessed: np.ndarray,
    layer_name: str | None = None,
    target: Target = "positive",
) -> np.ndarray:
    """Grad-CAM heatmap(s) in [0, 1] at the network input's H×W.

    ``pixels_preprocessed``: one H×W×C image or an N×H×W×C batch, as ``load_and_preprocess``
    returns them (float32, [0, 255]). ``layer_name``: the feature map to explain (default: the
    last 4-D output, inside the backbone). ``target``: whose evidence to show — ``positive``
    (default: what pushes towards label 1, e.g. PCOS, whatever the prediction; on the synthetic
    cohort it lights up the follicles), ``negative``, or ``predicted`` (the class on the side of
    0.5, which misleads when probabilities are not calibrated). An image with no evidence for
    the target gets an all-zero map.
    """
    model = getattr(branch_or_model, "model_", branch_or_model)
    x = np.asarray(pixels_preprocessed, dtype=np.float32)
    single = x.ndim == 3
    batch = tf.convert_to_tensor(x[None] if single else x)
    containers, layer = find_layer(model, layer_name) if layer_name else last_conv_layer(model)
    if _rank(layer) != 4:
        raise ValueError(f"layer {layer.name!r} has no 4-D (spatial) output to explain")
    with tf.GradientTape() as tape:
        tape.watch(batch)  # frozen backbones have no watched variables: watch the input
        features, logit, output = _forward(model, containers, layer, batch)
        logit = tf.reshape(tf.cast(logit, tf.float32), (tf.shape(batch)[0], -1))[:, 0]
        sign = _target_sign(target, tf.reshape(tf.cast(output, tf.float32), (-1,)))
        score = tf.reduce_sum(sign * logit)
    grads = tape.gradient(score, features)
    _check_model_path(model, batch, output)
    maps = _cams(tf.cast(features, tf.float32).numpy(), tf.cast(grads, tf.float32).numpy())
    size = (batch.shape[2], batch.shape[1])
    out = np.stack([cv2.resize(m, size, interpolation=cv2.INTER_LINEAR) for m in maps])
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return out[0] if single else out


def _target_sign(target: Target, probability: tf.Tensor) -> tf.Tensor:
    if target == "positive":
        return tf.ones_like(probability)
    if target == "negative":
        return -tf.ones_like(probability)
    if target == "predicted":
        return tf.where(probability >= 0.5, 1.0, -1.0)
    raise ValueError(f"target must be 'predicted', 'positive' or 'negative'; got {target!r}")


def _cams(features: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """ReLU(Σ_k α_k A_k), α_k = spatial mean of ∂score/∂A_k; each map scaled to max 1."""
    alphas = grads.mean(axis=(1, 2), keepdims=True)
    maps = np.maximum((alphas * features).sum(axis=-1), 0.0)
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, maps / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)


def _check_model_path(model: keras.Model, batch: tf.Tensor, output: tf.Tensor) -> None:
    """Running the outer layers one by one must give the model's own output; if it does not,
    the model is not a chain and the map would explain something else."""
    expected = np.asarray(model(batch, training=False), dtype=np.float32).reshape(-1)
    got = np.asarray(tf.cast(output, tf.float32)).reshape(-1)
    if expected.shape != got.shape or not np.allclose(expected, got, atol=1e-3):
        raise ValueError(
            f"model {model.name!r} is not a simple chain of layers around its backbone, so "
            "Grad-CAM cannot run it layer by layer; pass layer_name of a layer in the outer "
            "model, or use a model built by deeppcos.image.backbones.build_model"
        )


# --- drawing ----------------------------------------------------------------------------------


def overlay(original_pixels: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The heatmap (H×W in [0, 1], at the original geometry) in the JET colour map blended over
    the original image (gray or RGB, 8 or 16 bit): RGB uint8."""
    base = to_uint8(np.asarray(original_pixels))
    if base.ndim == 3 and base.shape[2] == 1:
        base = base[..., 0]
    if base.shape[:2] != heatmap.shape[:2]:
        raise ValueError(
            f"heatmap is {heatmap.shape[:2]} but the image is {base.shape[:2]}; map it back "
            "with deeppcos.image.preprocess.unletterbox first"
        )
    rgb = cv2.cvtColor(base, cv2.COLOR_GRAY2RGB) if base.ndim == 2 else base
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1)
    coloured = cv2.applyColorMap((heat * 255).round().astype(np.uint8), cv2.COLORMAP_JET)
    coloured = cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - alpha, coloured, alpha, 0.0)


def grad_cam_file(
    branch: Any,
    path: Path | str,
    frame: object = None,
    layer_name: str | None = None,
    target: Target = "positive",
) -> GradCamResult:
    """Grad-CAM of one image file through a fitted ImageBranch, at the original geometry."""
    original, pixels, geometry = load_with_geometry(path, frame, branch.preprocess_config)
    model = branch.model_
    _, layer = find_layer(model, layer_name) if layer_name else last_conv_layer(model)
    heat_input = grad_cam(branch, pixels, layer.name, target)
    heat = unletterbox(heat_input, geometry)
    probability = float(np.asarray(model(pixels[None], training=False)).reshape(-1)[0])
    return GradCamResult(
        probability=probability,
        heatmap=heat,
        overlay=overlay(original, heat),
        heatmap_input=heat_input,
        geometry=geometry,
        layer_name=layer.name,
    )
