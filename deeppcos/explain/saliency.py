"""Image saliency for a patient's ultrasound images, drawn back at each original image's geometry.

Two methods:

* ``"gradcam"`` (default; :mod:`deeppcos.image.gradcam`): the last spatial feature map weighted
  by the spatially averaged gradient of the image branch's *logit*, positive part, for every
  backbone (the compact CNN and the ``keras.applications`` ones). The map has the feature map's
  resolution (1/8 of the input for ``compact``, 1/32 for the ImageNet backbones): where the
  evidence lies, not a lesion outline.
* ``"gradient_shap"``: SHAP's ``GradientExplainer`` (expected gradients) on the network input,
  against a background of other patients' preprocessed images, in probability units. Works with
  Keras 3.15 / TensorFlow 2.21 models as they are (tested for every backbone); the per-pixel
  values are summed over channels, their positive part (evidence for label 1) kept, lightly
  smoothed and scaled to [0, 1].

Both maps are computed on the network's input (the sector crop, letterboxed to a square) and
mapped back with :func:`deeppcos.image.preprocess.unletterbox`: the padding is dropped, the crop
restored, and everything the preprocessing cut away gets 0. The overlay is drawn on the original
pixels with burned-in text in the outer margins blanked (the same rule preprocessing uses), so a
report does not copy names or dates printed on a scan.
"""

from __future__ import annotations

import base64
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

import numpy as np
import pandas as pd

from deeppcos.exceptions import SchemaError

if TYPE_CHECKING:
    from deeppcos.data.cohort import Cohort
    from deeppcos.image.gradcam import Target
    from deeppcos.image.preprocess import LetterboxGeometry

__all__ = [
    "METHODS",
    "ImageSaliency",
    "LoadedImages",
    "background_images",
    "blank_annotations",
    "encode_png",
    "is_method",
    "load_images",
    "patient_saliency",
    "saliency_for_images",
    "saliency_maps",
]

Method = Literal["gradcam", "gradient_shap"]
METHODS: tuple[Method, ...] = ("gradcam", "gradient_shap")
DISPLAY_MAX_SIDE = 768  # embedded PNGs are scaled down to this longer side (aspect kept)


@dataclass
class ImageSaliency:
    """One image's saliency. ``heatmap`` (H×W, [0, 1]) and ``overlay`` (H×W×3 uint8) are at the
    original image's geometry ``original_shape`` = (H, W)."""

    image_id: str
    position: int  # 1-based, among the patient's images
    side: str | None
    view: str | None
    method: str
    probability: float  # the image branch's P(label = 1) for this image
    heatmap: np.ndarray
    overlay: np.ndarray
    original_shape: tuple[int, int]
    geometry: LetterboxGeometry
    layer: str | None = None

    @property
    def caption(self) -> str:
        where = " · ".join(str(v) for v in (self.side, self.view) if v)
        return f"Image {self.position}" + (f" ({where})" if where else "")

    def overlay_png(self, max_side: int = DISPLAY_MAX_SIDE) -> bytes:
        return encode_png(self.overlay, max_side)

    def to_dict(self, images: bool = True) -> dict[str, Any]:
        """JSON-safe summary; ``overlay_png_base64`` (display size) when ``images``. The
        ``image_id`` is left out: some loaders make it from the file's path, which may name the
        patient; ``position`` and ``caption`` say which image it is."""
        out: dict[str, Any] = {
            "position": self.position,
            "caption": self.caption,
            "side": self.side,
            "view": self.view,
            "method": self.method,
            "probability": self.probability,
            "original_shape": list(self.original_shape),
            "layer": self.layer,
            "heatmap_peak": _peak(self.heatmap),
        }
        if images:
            out["overlay_png_base64"] = base64.b64encode(self.overlay_png()).decode("ascii")
        return out


def _peak(heatmap: np.ndarray) -> list[float] | None:
    """(row, column) of the strongest evidence as fractions of the height and width."""
    if not np.any(heatmap > 0):
        return None
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return [round(row / heatmap.shape[0], 3), round(col / heatmap.shape[1], 3)]


# --- pictures -----------------------------------------------------------------------------------


def encode_png(pixels: np.ndarray, max_side: int | None = None) -> bytes:
    """PNG bytes of a gray or RGB uint8 array, scaled down (aspect kept) to ``max_side``."""
    import cv2

    image = np.asarray(pixels)
    if max_side is not None and max(image.shape[:2]) > max_side:
        scale = max_side / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise SchemaError(f"could not encode an image of shape {image.shape} as PNG")
    return buffer.tobytes()


def blank_annotations(original: np.ndarray) -> np.ndarray:
    """The original as 8-bit pixels with burned-in margin annotations set to 0 (the rule of
    ``deeppcos.image.preprocess.annotation_free_mask``)."""
    import cv2

    from deeppcos.image.preprocess import annotation_free_mask, to_uint8

    base = to_uint8(np.asarray(original))
    if base.ndim == 3 and base.shape[2] == 1:
        base = base[..., 0]
    gray = base if base.ndim == 2 else cv2.cvtColor(base, cv2.COLOR_RGB2GRAY)
    keep = annotation_free_mask(gray)
    if keep.all():
        return base
    return np.where(keep if base.ndim == 2 else keep[..., None], base, 0).astype(np.uint8)


# --- computing maps -----------------------------------------------------------------------------


def patient_images(cohort: Cohort, patient_id: str) -> pd.DataFrame:
    """The patient's rows of ``cohort.images`` (possibly none)."""
    images = cohort.images
    if images.empty:
        return images
    return images[images["patient_id"].astype(str) == str(patient_id)]


@dataclass
class LoadedImages:
    """A patient's images read once: originals, network inputs, geometry, and one direct forward
    pass (per-image probability and embedding, as ``ImageBranch`` computes them)."""

    rows: pd.DataFrame
    originals: list[np.ndarray]
    pixels: np.ndarray  # N×S×S×C float32 in [0, 255]
    geometries: list[LetterboxGeometry]
    probabilities: np.ndarray  # (N,)
    embeddings: np.ndarray  # (N, D)

    def mean_embedding(self, patient_id: str) -> pd.DataFrame:
        """The patient's embedding (mean over her images, as ``ImageBranch.transform``)."""
        columns = [f"img_emb_{k}" for k in range(self.embeddings.shape[1])]
        mean = self.embeddings.astype("float64").mean(axis=0, keepdims=True)
        return pd.DataFrame(mean, columns=columns, index=pd.Index([patient_id], name="patient_id"))


def load_images(branch: Any, rows: pd.DataFrame) -> LoadedImages:
    """Read, preprocess and run the images of ``rows`` (columns ``image_id``, ``path``;
    optional ``frame``, ``side``, ``view``) through a fitted ``ImageBranch`` in one batch."""
    from deeppcos.image.preprocess import load_with_geometry

    loaded = [
        load_with_geometry(row["path"], _frame(row), branch.preprocess_config)
        for _, row in rows.iterrows()
    ]
    pixels = np.stack([p for _, p, _ in loaded]).astype(np.float32)
    probabilities, embeddings = _forward(branch, pixels)
    return LoadedImages(
        rows=rows,
        originals=[o for o, _, _ in loaded],
        pixels=pixels,
        geometries=[g for _, _, g in loaded],
        probabilities=probabilities,
        embeddings=embeddings,
    )


def patient_saliency(
    branch: Any,
    cohort: Cohort,
    patient_id: str,
    method: Method = "gradcam",
    *,
    max_images: int | None = None,
    target: Target = "positive",
    background: np.ndarray | None = None,
    nsamples: int = 64,
    seed: int = 0,
) -> list[ImageSaliency]:
    """Saliency maps for each of the patient's images (the first ``max_images`` when given), in
    the images table's order. ``background`` (N×H×W×C preprocessed pixels) is used by
    ``gradient_shap`` only; by default 16 images of other patients of the cohort."""
    rows = patient_images(cohort, patient_id)
    if max_images is not None:
        rows = rows.iloc[:max_images]
    if rows.empty:
        return []
    if method == "gradient_shap" and background is None:
        background = background_images(branch, cohort, exclude=[patient_id], seed=seed)
    return saliency_for_images(
        branch, rows, method, target=target, background=background, nsamples=nsamples, seed=seed
    )


def saliency_for_images(
    branch: Any,
    rows: pd.DataFrame,
    method: Method = "gradcam",
    *,
    target: Target = "positive",
    background: np.ndarray | None = None,
    nsamples: int = 64,
    seed: int = 0,
) -> list[ImageSaliency]:
    """Saliency maps for the images of ``rows`` through a fitted ``ImageBranch``."""
    _check_method(method)
    images = load_images(branch, rows)
    return saliency_maps(
        branch, images, method, target=target, background=background, nsamples=nsamples, seed=seed
    )


def saliency_maps(
    branch: Any,
    images: LoadedImages,
    method: Method = "gradcam",
    *,
    max_images: int | None = None,
    target: Target = "positive",
    background: np.ndarray | None = None,
    nsamples: int = 64,
    seed: int = 0,
) -> list[ImageSaliency]:
    """Maps for the first ``max_images`` (all when None) of already loaded images."""
    from deeppcos.image.preprocess import unletterbox

    _check_method(method)
    n = len(images.rows) if max_images is None else min(max_images, len(images.rows))
    if n == 0:
        return []
    batch = images.pixels[:n]
    if method == "gradcam":
        maps, layer = _grad_cam(branch, batch, target)
    else:
        if background is None:
            raise SchemaError("gradient_shap needs background images (see background_images)")
        maps, layer = _gradient_shap(branch, batch, background, nsamples, seed), None
    out = []
    for k, (_, row) in enumerate(images.rows.iloc[:n].iterrows()):
        heat = unletterbox(maps[k], images.geometries[k])
        out.append(
            ImageSaliency(
                image_id=str(row["image_id"]),
                position=k + 1,
                side=_text(row.get("side")),
                view=_text(row.get("view")),
                method=method,
                probability=float(images.probabilities[k]),
                heatmap=heat,
                overlay=_overlay(images.originals[k], heat),
                original_shape=(int(heat.shape[0]), int(heat.shape[1])),
                geometry=images.geometries[k],
                layer=layer,
            )
        )
    return out


def is_method(value: object) -> TypeGuard[Method]:
    """Whether ``value`` names one of ``METHODS`` (narrows a caller's text to a Method)."""
    return value in METHODS


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise SchemaError(f"saliency method must be one of {list(METHODS)}; got {method!r}")


_TWO_OUTPUTS: dict[int, tuple[Any, Any]] = {}


def _forward(branch: Any, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P(label = 1), embedding) per image in one call of the model (no tf.data: for the few
    images of one patient the dataset machinery costs more than the network)."""
    import keras

    model = branch.model_
    cached = _TWO_OUTPUTS.get(id(model))
    if cached is None or cached[0]() is not model:
        embedding = model.get_layer(branch.embedding_layer_name_).output
        two = keras.Model(model.input, [model.output, embedding], name="deeppcos_explain_forward")
        _TWO_OUTPUTS.clear()  # one model at a time is the usual case; keep the cache tiny
        _TWO_OUTPUTS[id(model)] = (weakref.ref(model), two)
        cached = _TWO_OUTPUTS[id(model)]
    probability, embedding = cached[1](pixels, training=False)
    return (
        np.asarray(probability, dtype=np.float64).reshape(-1),
        np.asarray(embedding, dtype=np.float32),
    )


def _overlay(original: np.ndarray, heat: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The JET-coloured map blended in proportion to its value: where the map is 0 the
    (annotation-blanked) original shows unchanged, so "no evidence" is not painted blue."""
    import cv2

    base = blank_annotations(original)
    if base.shape[:2] != heat.shape[:2]:
        raise SchemaError(f"heatmap {heat.shape[:2]} does not match the image {base.shape[:2]}")
    rgb = cv2.cvtColor(base, cv2.COLOR_GRAY2RGB) if base.ndim == 2 else base
    level = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    coloured = cv2.applyColorMap((level * 255).round().astype(np.uint8), cv2.COLORMAP_JET)
    coloured = cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB).astype(np.float32)
    weight = (alpha * level)[..., None]
    blended = rgb.astype(np.float32) * (1.0 - weight) + coloured * weight
    return np.clip(blended.round(), 0, 255).astype(np.uint8)


def _grad_cam(branch: Any, batch: np.ndarray, target: Target) -> tuple[np.ndarray, str]:
    from deeppcos.image.gradcam import grad_cam, last_conv_layer

    _, layer = last_conv_layer(branch.model_)
    return grad_cam(branch, batch, layer.name, target), str(layer.name)


def _gradient_shap(
    branch: Any, batch: np.ndarray, background: np.ndarray, nsamples: int, seed: int
) -> np.ndarray:
    """Expected-gradients maps in [0, 1] over the network input (N×H×W)."""
    import cv2
    import shap

    with warnings.catch_warnings():
        # Keras warns that SHAP passes the single input as a list; the values are unaffected.
        warnings.filterwarnings("ignore", message=".*structure of `inputs`.*")
        explainer = shap.GradientExplainer(branch.model_, np.asarray(background, np.float32))
        values = explainer.shap_values(batch, nsamples=nsamples, rseed=seed)
    values = np.asarray(values, dtype=np.float32).reshape(batch.shape)  # drop the output axis
    evidence = np.maximum(values.sum(axis=-1), 0.0)
    sigma = max(batch.shape[1] / 48.0, 0.5)  # pixel-level values are speckled: smooth a little
    maps = []
    for single in evidence:
        smooth = cv2.GaussianBlur(single, (0, 0), sigmaX=sigma)
        peak = float(smooth.max())
        maps.append(smooth / peak if peak > 0 else np.zeros_like(smooth))
    return np.stack(maps).astype(np.float32)


def background_images(
    branch: Any,
    cohort: Cohort,
    n: int = 16,
    *,
    exclude: list[str] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``n`` preprocessed images of other patients (seeded sample), for ``gradient_shap``."""
    from deeppcos.image.preprocess import load_and_preprocess

    images = cohort.images
    if not images.empty and exclude:
        images = images[~images["patient_id"].astype(str).isin([str(e) for e in exclude])]
    if images.empty:
        raise SchemaError(
            f"the cohort {cohort.spec.name!r} has no other patients' images to use as the "
            "gradient_shap background; use method 'gradcam'"
        )
    chosen = images.sample(min(n, len(images)), random_state=seed)
    return np.stack(
        [
            load_and_preprocess(row["path"], _frame(row), branch.preprocess_config)
            for _, row in chosen.iterrows()
        ]
    )


def _frame(row: pd.Series) -> int | None:
    value = row.get("frame")
    return None if value is None or pd.isna(value) else int(value)


def _text(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None
