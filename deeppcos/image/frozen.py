"""Frozen pretrained embeddings: every image embedded once, cached on disk, a logistic head per
fold (``image.mode: frozen``).

Why: a pretrained backbone's pooled features do not depend on the training patients, so they
need computing once per image, not once per fold, trial or run. Cross-validation then costs a
logistic regression per fold, intermediate fusion gets one coordinate space for every fold,
and image tuning becomes affordable on a CPU.

**The cache** (:class:`EmbeddingCache`): one ``.npy`` vector per image under
``<root>/embeddings/<key>/<sha[:2]>/<sha>[-f<frame>].npy``. The key (:class:`EmbeddingKey`)
covers everything that changes a vector: the backbone, its width, the SHA-256 of its weights
file, the preprocessing (size, channels, crop, letterbox, …), the test-time augmentation and
the deeppcos and Keras versions that compute it;
the image is named by the SHA-256 of its file (found when the cohort is loaded), so a copied or
renamed file is a cache hit and an edited one a miss. Writes go to a temporary file renamed
into place, so concurrent workers never leave a half-written vector. ``key.json`` in each
folder says what the key stands for. The root is ``image.embedding_cache``, else
``$DEEPPCOS_CACHE``, else ``$XDG_CACHE_HOME/deeppcos`` (``~/.cache/deeppcos``).

**Extraction** runs in chunks of ``chunk_size`` images with a progress callback; with
:func:`embed_cohort_distributed` each chunk is one Dask task and every worker builds the
backbone once (:func:`_worker_embedder`). The vectors are the same either way: the same
weights, the same preprocessing, inference only.

**Test-time augmentation** (``tta``): the mean embedding over 1, 2 (+ a left-right flip) or 4
(+ a 90% centre crop of each) views of the preprocessed image.

**The head**: L2 logistic regression (``head_c``) on standardised per-image embeddings, with
balanced class weights when ``class_weight`` is on, as the network branches weigh their loss.
Its standardisation is folded into the classification model's last layer (``p_image``), so the
saved Keras model is an ordinary image → probability network (Grad-CAM, saving and loading
work as for the other modes) whose output is exactly the head's.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

    from deeppcos.image.pipeline import ImageTable
    from deeppcos.image.preprocess import PreprocessConfig

__all__ = [
    "EmbeddingCache",
    "EmbeddingKey",
    "cache_root",
    "embed_table",
    "fit_head",
]

CACHE_ENV = "DEEPPCOS_CACHE"
Progress = Callable[[int, int], None]


def cache_root(configured: str | None = None) -> Path:
    """Where embedding caches live (see the module notes)."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deeppcos"


@dataclass(frozen=True)
class EmbeddingKey:
    """Everything that changes an image's embedding, apart from the image itself."""

    backbone: str
    width: float
    weights_sha256: str
    preprocess: str  # PreprocessConfig as JSON (size, channels, crop, letterbox, …)
    tta: int
    pooling: str = ""  # ImageParams.pooling_key: "" is global average pooling
    # The code that computes a vector: another deeppcos (its preprocessing) or Keras (its
    # layers) is another key, so an upgrade never reads vectors made the old way.
    deeppcos_version: str = ""
    keras_version: str = ""

    def digest(self) -> str:
        fields = asdict(self)
        if not fields["pooling"]:  # keys made before pooling was an option stay valid
            del fields["pooling"]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EmbeddingCache:
    """One folder of vectors for one :class:`EmbeddingKey` (see the module notes)."""

    def __init__(self, root: Path, key: EmbeddingKey, *, writable: bool = True) -> None:
        self.key = key
        self.folder = Path(root) / "embeddings" / key.digest()
        self.writable = writable

    def _path(self, image: str) -> Path:
        return self.folder / image[:2] / f"{image}.npy"

    def load(self, images: Sequence[str | None]) -> list[np.ndarray | None]:
        """The cached vector of each image (None when absent or the image has no hash)."""
        out: list[np.ndarray | None] = []
        for image in images:
            path = None if image is None else self._path(image)
            out.append(np.load(path) if path is not None and path.is_file() else None)
        return out

    def store(self, images: Sequence[str | None], vectors: np.ndarray) -> None:
        """Write each vector atomically (a temporary file renamed into place). A read-only cache
        writes nothing; a folder that cannot be written is a warning, not a failure: the
        vectors were computed and are returned all the same."""
        if not self.writable:
            return
        try:
            self._write(images, vectors)
        except OSError as exc:
            self.writable = False
            warnings.warn(
                f"embedding cache {self.folder} cannot be written ({exc}); continuing without "
                "caching",
                RuntimeWarning,
                stacklevel=2,
            )

    def _write(self, images: Sequence[str | None], vectors: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "key.json"
        if not meta.is_file():
            _atomic_write(meta, json.dumps(self.key.to_dict(), indent=1).encode())
        for image, vector in zip(images, vectors, strict=True):
            if image is None:
                continue
            path = self._path(image)
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
                np.save(f, np.asarray(vector, dtype=np.float32))
            os.replace(f.name, path)

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.npy")) if self.folder.is_dir() else 0


def _atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)


def image_keys(table: ImageTable) -> list[str | None]:
    """Each image's cache name: the SHA-256 of its file (and the frame, for multi-frame
    files); None where loading recorded no hash (such images are embedded, never cached)."""
    if table.hashes is None:
        return [None] * len(table)
    return [
        None if h is None else (h if f is None else f"{h}-f{f}")
        for h, f in zip(table.hashes, table.frames, strict=True)
    ]


# --- extraction ---------------------------------------------------------------------------------


def embed_table(
    table: ImageTable,
    embedder: keras.Model,
    cfg: PreprocessConfig,
    *,
    batch_size: int,
    tta: int = 1,
    cache: EmbeddingCache | None = None,
    chunk_size: int = 256,
    progress: Progress | None = None,
    run: Callable[[Any], Any] | None = None,
) -> np.ndarray:
    """(n, d) float32 embeddings of the table's images, in order: cached ones read, the rest
    computed chunk by chunk (and cached). ``progress(done, total)`` counts images. ``run``:
    the compiled embedder from :func:`view_mean` (built here when not given; a caller that
    embeds often keeps one, since each new one is traced again)."""
    keys = image_keys(table)
    found = cache.load(keys) if cache is not None else [None] * len(table)
    missing = [k for k, vector in enumerate(found) if vector is None]
    total, done = len(table), len(table) - len(missing)
    if progress:
        progress(done, total)
    run = run or view_mean(embedder, tta)
    for start in range(0, len(missing), chunk_size):
        rows = missing[start : start + chunk_size]
        vectors = embed_chunk(table.subset(rows), run, cfg, batch_size)
        if cache is not None:
            cache.store([keys[k] for k in rows], vectors)
        for k, vector in zip(rows, vectors, strict=True):
            found[k] = vector
        done += len(rows)
        if progress:
            progress(done, total)
    if not found:
        return np.zeros((0, int(embedder.outputs[0].shape[-1])), np.float32)
    return np.stack([np.asarray(v, np.float32) for v in found])


def embed_chunk(
    table: ImageTable, run: Callable[[Any], Any], cfg: PreprocessConfig, batch_size: int
) -> np.ndarray:
    """Embeddings of a few images through ``run`` (a compiled view-mean embedder)."""
    from deeppcos.image import pipeline

    outputs = [
        np.asarray(run(batch)) for batch in pipeline.inference_batches(table, cfg, batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32)


def view_mean(embedder: keras.Model, tta: int) -> Callable[[Any], Any]:
    """A compiled function: the mean embedding over ``tta`` views of a batch."""
    import tensorflow as tf

    if tta not in (1, 2, 4):
        raise ValueError(f"tta must be 1, 2 or 4 views; got {tta}")

    @tf.function(reduce_retracing=True)
    def run(batch: Any) -> Any:
        views = [batch]
        if tta >= 2:
            views.append(tf.image.flip_left_right(batch))
        if tta == 4:
            size = tf.shape(batch)[1:3]
            crops = [tf.image.resize(tf.image.central_crop(v, 0.9), size) for v in views]
            views += crops
        return tf.add_n([embedder(v, training=False) for v in views]) / float(len(views))

    return run


# --- the head -----------------------------------------------------------------------------------


def fit_head(
    x: np.ndarray, y: np.ndarray, c: float, balanced: bool, seed: int = 0
) -> tuple[np.ndarray, float]:
    """(weights (d,), bias) of an L2 logistic regression on standardised embeddings, folded back
    to the raw embedding scale: ``sigmoid(x @ weights + bias)`` is its probability."""
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature stays 0, not ÷ 0
    model = LogisticRegression(
        C=c, class_weight="balanced" if balanced else None, max_iter=5000, random_state=seed
    )
    model.fit((x - mean) / scale, y.astype(int))
    weights = model.coef_[0] / scale
    bias = float(model.intercept_[0] - np.sum(model.coef_[0] * mean / scale))
    return weights.astype(np.float64), bias


def head_probability(x: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    """What the model's last layer computes from embeddings, in float64."""
    z = np.asarray(x, dtype=np.float64) @ np.asarray(weights, dtype=np.float64) + bias
    return np.exp(-np.logaddexp(0.0, -z))


# --- distributed extraction ---------------------------------------------------------------------


@lru_cache(maxsize=2)
def _worker_embedder(
    backbone: str,
    width: float,
    weights: str,
    image_size: int,
    tta: int,
    pool_grid: int = 1,
    pool_layers: tuple[str, ...] = (),
) -> Callable[[Any], Any]:
    """A worker's embedder, built once per process (a Dask worker's model cache)."""
    import keras

    from deeppcos.image.backbones import build_model

    model, embedding = build_model(
        backbone, image_size, weights, width=width, pool_grid=pool_grid, pool_layers=pool_layers
    )
    embedder = keras.Model(model.input, model.get_layer(embedding).output)
    return view_mean(embedder, tta)


def _embed_task(
    model: dict[str, Any], table: ImageTable, cfg_json: str, batch_size: int
) -> np.ndarray:
    from deeppcos.image.preprocess import PreprocessConfig

    run = _worker_embedder(**model)
    return embed_chunk(table, run, PreprocessConfig.model_validate_json(cfg_json), batch_size)


def embed_distributed(
    table: ImageTable,
    model: dict[str, Any],
    cfg: PreprocessConfig,
    cache: EmbeddingCache,
    *,
    batch_size: int,
    chunk_size: int,
    client: Any,
    progress: Progress | None = None,
) -> int:
    """Fill ``cache`` with the table's uncached images, one Dask task per chunk. ``model``:
    ``backbone``, ``width``, ``weights`` (a file path every worker can read), ``image_size``
    and ``tta``. Returns how many images were embedded."""
    keys = image_keys(table)
    missing = [k for k, v in enumerate(cache.load(keys)) if v is None and keys[k] is not None]
    total, done = len(table), len(table) - len(missing)
    if progress:
        progress(done, total)
    chunks = [missing[s : s + chunk_size] for s in range(0, len(missing), chunk_size)]
    futures = [
        client.submit(
            _embed_task, model, table.subset(rows), cfg.model_dump_json(), batch_size, pure=False
        )
        for rows in chunks
    ]
    for rows, future in zip(chunks, futures, strict=True):
        cache.store([keys[k] for k in rows], future.result())
        done += len(rows)
        if progress:
            progress(done, total)
    return len(missing)
