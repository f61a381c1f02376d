"""tf.data pipelines from a cohort's image table to batches for Keras.

Files are decoded and preprocessed with OpenCV (``preprocess.py``) inside ``tf.numpy_function``
under a parallel ``map``: OpenCV releases the GIL, so decoding runs on several cores beside the
model. Decoded images are cached as uint8 (exact, since every preprocessing step is 8-bit):
in memory when the estimate fits the memory budget, otherwise in a file cache on disk, so
thousands of images never sit decoded in a Python list. Augmentation is mapped over training
batches only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from deeppcos.data.cohort import Cohort
from deeppcos.exceptions import ImageError, SchemaError
from deeppcos.image.preprocess import PreprocessConfig, preprocess_uint8

AUTOTUNE = tf.data.AUTOTUNE
# At most this much decoded data is cached in memory (and never more than a quarter of the RAM
# that is free when training starts); beyond it, the cache goes to disk.
MEMORY_CACHE_LIMIT = 4 << 30
# The shuffle buffer holds at most this many bytes of images.
SHUFFLE_BUFFER_BYTES = 256 << 20


@dataclass(frozen=True)
class ImageTable:
    """The images a pipeline reads, in order, with per-image labels when training."""

    image_ids: list[str]
    patient_ids: list[str]
    paths: list[str]
    frames: list[Any]
    labels: np.ndarray | None = None  # float32 0/1
    hashes: list[str | None] | None = None  # SHA-256 of each file (probing), for caches

    def subset(self, rows: Sequence[int]) -> ImageTable:
        """The table restricted to ``rows`` (positions), in that order."""
        pick = list(rows)
        return ImageTable(
            image_ids=[self.image_ids[k] for k in pick],
            patient_ids=[self.patient_ids[k] for k in pick],
            paths=[self.paths[k] for k in pick],
            frames=[self.frames[k] for k in pick],
            labels=None if self.labels is None else self.labels[pick],
            hashes=None if self.hashes is None else [self.hashes[k] for k in pick],
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def fingerprint(self, cfg: PreprocessConfig, role: str) -> str:
        """A key for a file cache: changes whenever the images or the preprocessing do."""
        digest = hashlib.sha256(role.encode())
        digest.update(cfg.model_dump_json().encode())
        for row in zip(self.image_ids, self.paths, self.frames, strict=True):
            digest.update(json.dumps([str(v) for v in row]).encode())
        if self.labels is not None:
            digest.update(self.labels.tobytes())
        return digest.hexdigest()[:20]


# --- from cohort to image table -----------------------------------------------------------


def _known_ids(cohort: Cohort, patient_ids: Sequence[str] | None) -> list[str]:
    if patient_ids is None:
        return [str(i) for i in cohort.patients["patient_id"]]
    ids = [str(i) for i in patient_ids]
    known = set(cohort.patients["patient_id"].astype(str))
    unknown = [i for i in dict.fromkeys(ids) if i not in known]
    if unknown:
        raise SchemaError(
            f"{len(unknown)} patient id(s) not in the cohort {cohort.spec.name!r}: {unknown[:10]}"
        )
    return ids


def images_of(cohort: Cohort, patient_ids: Sequence[str] | None) -> pd.DataFrame:
    """Rows of ``cohort.images`` for these patients: grouped in the order the ids are given,
    each patient's images in table order. A repeated id contributes its images once."""
    ids = list(dict.fromkeys(_known_ids(cohort, patient_ids)))
    images = cohort.images
    if images.empty or not ids:
        return images.iloc[0:0]
    rank = {pid: k for k, pid in enumerate(ids)}
    chosen = images[images["patient_id"].astype(str).isin(rank)]
    order = chosen["patient_id"].astype(str).map(rank)
    return chosen.assign(_rank=order).sort_values("_rank", kind="stable").drop(columns="_rank")


def image_labels(cohort: Cohort, images: pd.DataFrame) -> pd.Series:
    """Per-image labels (float, NaN = unknown): the image-level ``label`` column where the
    images table has one and the value is present, else the patient's label."""
    patient_label = cohort.patients.set_index(cohort.patients["patient_id"].astype(str))
    if "label" in patient_label:
        from_patient = images["patient_id"].astype(str).map(patient_label["label"].astype(float))
    else:
        from_patient = pd.Series(np.nan, index=images.index)
    if "label" in images:
        own = pd.to_numeric(images["label"], errors="coerce").astype(float)
        return own.fillna(from_patient)
    return from_patient.astype(float)


def table_from(images: pd.DataFrame, labels: pd.Series | None = None) -> ImageTable:
    frames: list[Any] = images["frame"].tolist() if "frame" in images else [None] * len(images)
    hashes = (
        [None if pd.isna(h) else str(h) for h in images["sha256"]] if "sha256" in images else None
    )
    return ImageTable(
        image_ids=images["image_id"].astype(str).tolist(),
        patient_ids=images["patient_id"].astype(str).tolist(),
        paths=images["path"].astype(str).tolist(),
        frames=[None if pd.isna(f) else int(f) for f in frames],
        labels=None if labels is None else labels.to_numpy(dtype=np.float32),
        hashes=hashes,
    )


def labelled_table(cohort: Cohort, patient_ids: Sequence[str], role: str) -> ImageTable:
    """The images of ``patient_ids`` that have a label, for training or validation."""
    images = images_of(cohort, patient_ids)
    labels = image_labels(cohort, images)
    keep = labels.notna()
    images, labels = images[keep], labels[keep]
    bad = sorted(set(labels) - {0.0, 1.0})
    if bad:
        raise SchemaError(f"{role} image labels must be 0 or 1; found {bad[:5]}")
    return table_from(images, labels)


def check_files(table: ImageTable) -> None:
    """Fail before training starts, naming the files, if any image file has disappeared."""
    missing = [p for p in dict.fromkeys(table.paths) if not os.path.isfile(p)]
    if missing:
        raise ImageError(
            f"{len(missing)} image file(s) of the cohort are missing (moved or deleted since "
            f"loading?): {missing[:5]}"
        )


# --- datasets -----------------------------------------------------------------------------------


def _loader(table: ImageTable, cfg: PreprocessConfig) -> Callable[[Any], np.ndarray]:
    from deeppcos.data.imageio import read_image

    def load(index: Any) -> np.ndarray:
        k = int(index)
        try:
            return preprocess_uint8(read_image(table.paths[k], table.frames[k]), cfg)[0]
        except Exception as exc:  # surfaces through TensorFlow: keep the file name in front
            raise ImageError(f"{table.paths[k]}: {exc}") from exc

    return load


def decoded(table: ImageTable, cfg: PreprocessConfig, *, parallel: bool = True) -> tf.data.Dataset:
    """Preprocessed uint8 images (S×S×C), in table order, decoded on parallel threads (on
    the calling thread when ``parallel`` is false)."""
    load = _loader(table, cfg)
    shape = (cfg.image_size, cfg.image_size, cfg.channels)

    def decode(index: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(load, [index], tf.uint8, stateful=False)
        image.set_shape(shape)
        return image

    indices = tf.data.Dataset.range(len(table))
    if not parallel:
        return indices.map(decode)
    return indices.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)


def _to_float(images: tf.Tensor, *rest: tf.Tensor) -> Any:
    images = tf.cast(images, tf.float32)
    return (images, *rest) if rest else images


def _op_determinism() -> bool:
    """Whether ``tf.config.experimental.enable_op_determinism()`` is in force (TensorFlow
    exports no public getter); when the check itself is unavailable, assume it is."""
    try:
        from tensorflow.python.framework import config as tf_config
    except ImportError:  # pragma: no cover - TensorFlow moved its internals
        return True
    return bool(getattr(tf_config, "is_op_determinism_enabled", lambda: True)())


def available_memory() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a modest machine
        return 8 << 30


def cache_bytes(n_images: int, cfg: PreprocessConfig) -> int:
    return n_images * cfg.image_size * cfg.image_size * cfg.channels  # uint8


def fits_in_memory(n_bytes: int) -> bool:
    return n_bytes <= min(MEMORY_CACHE_LIMIT, available_memory() // 4)


def _file_cache(folder: Path, key: str) -> str:
    """A tf.data file-cache prefix; leftovers of an interrupted run (no index file) are removed,
    since TensorFlow refuses to write over them."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / f"deeppcos-images-{key}"
    if not Path(f"{prefix}.index").exists():
        for stale in folder.glob(f"{prefix.name}*"):
            stale.unlink()
    return str(prefix)


class CacheSpace:
    """Where file caches go: ``cache_dir`` when given (kept, and reused by later runs over the
    same images and settings), else a temporary folder removed by ``close``."""

    def __init__(self, cache_dir: str | None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None

    def folder(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="deeppcos-image-cache-")
        return Path(self._tmp.name)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def training_dataset(
    table: ImageTable,
    cfg: PreprocessConfig,
    batch_size: int,
    *,
    space: CacheSpace,
    role: str,
    shuffle: bool,
    augment: Callable[..., Any] | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """(image float32 [0, 255], label float32 (n, 1)) batches, cached after decoding."""
    assert table.labels is not None
    # Augmentation draws from Keras seed variables (stateful ops). Under op determinism, which
    # ImageBranch.fit turns on, tf.data's make_deterministic rewrite then turns every parallel
    # map of this pipeline into a sequential MapDataset and every prefetch into a 0-sized one,
    # but keeps ParallelMapDatasetV2's ``use_unbounded_threadpool`` attribute on the rewritten
    # nodes, which TensorFlow logs as an E-level "NodeDef mentions attribute" line. Build those
    # maps sequential from the start: the same pipeline at run time, without the stale attribute.
    parallel = augment is None or not _op_determinism()
    calls: dict[str, Any] = {"num_parallel_calls": AUTOTUNE} if parallel else {}
    images = decoded(table, cfg, parallel=parallel)
    labels = tf.data.Dataset.from_tensor_slices(table.labels.reshape(-1, 1))
    ds = tf.data.Dataset.zip((images, labels))
    if fits_in_memory(cache_bytes(len(table), cfg)):
        ds = ds.cache()
    else:
        ds = ds.cache(_file_cache(space.folder(), table.fingerprint(cfg, role)))
    if shuffle:
        per_image = cfg.image_size * cfg.image_size * cfg.channels
        buffer = max(64, min(len(table), SHUFFLE_BUFFER_BYTES // per_image))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(_to_float, **calls)
    if augment is not None:

        def augmented(x: tf.Tensor, y: tf.Tensor) -> tuple[Any, tf.Tensor]:
            return augment(x, training=True), y

        ds = ds.map(augmented, **calls)
    return ds.prefetch(AUTOTUNE)


def inference_dataset(table: ImageTable, cfg: PreprocessConfig, batch_size: int) -> tf.data.Dataset:
    """Image batches (float32 [0, 255]) in table order; nothing cached, nothing augmented."""
    ds = decoded(table, cfg).batch(batch_size).map(_to_float, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


# A few images (one request's, one patient's) are decoded on the calling thread: building and
# running a tf.data pipeline costs ~25 ms, more than decoding and scoring them.
IN_MEMORY_MAX_IMAGES = 64


def inference_batches(
    table: ImageTable, cfg: PreprocessConfig, batch_size: int
) -> Iterator[np.ndarray] | tf.data.Dataset:
    """:func:`inference_dataset`'s batches; for at most ``IN_MEMORY_MAX_IMAGES`` images,
    the same preprocessing done in memory (identical arrays, without tf.data's start-up)."""
    if len(table) > IN_MEMORY_MAX_IMAGES:
        return inference_dataset(table, cfg, batch_size)
    return _in_memory_batches(table, cfg, batch_size)


def _in_memory_batches(
    table: ImageTable, cfg: PreprocessConfig, batch_size: int
) -> Iterator[np.ndarray]:
    load = _loader(table, cfg)
    for start in range(0, len(table), batch_size):
        rows = range(start, min(start + batch_size, len(table)))
        yield np.stack([load(k) for k in rows]).astype(np.float32)


def unwrap_image_error(exc: BaseException) -> ImageError | None:
    """The ImageError a failed decode raised inside TensorFlow, rebuilt from its message."""
    message = exc.message if hasattr(exc, "message") else str(exc)
    marker = "ImageError: "
    if marker not in message:
        return None
    text = message.split(marker, 1)[1].strip().splitlines()[0]
    return ImageError(text)
