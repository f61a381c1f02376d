"""Cross-cohort contamination: images of one cohort that are copies of images in another.

An "external" validation set that shares images with the development data measures memory,
not generalisation; public ultrasound sets are assembled from the same web sources and videos
(PCOSGen's frames also occur, re-encoded, in the Kaggle ultrasound set). :func:`cross_audit`
reads every image of both cohorts once (:func:`deeppcos.audit.checks.compute_image_features`)
and pairs them at three strengths:

- ``same_file``: byte-identical files (the SHA-256 the loader recorded);
- ``same_pixels``: identical decoded pixels in different files (re-encoded, renamed);
- ``near``: perceptual hashes within ``near_bits`` of 64 (re-compressed, resized, a video's
  neighbouring frame) — the within-cohort audit's threshold by default.

Each pair carries both images' labels (the image's own, else its patient's), so the report says
how often a copy keeps its label and how often it flips it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.audit.base import DEFAULT_NEAR_DUP_BITS, Progress
from deeppcos.audit.checks import _image_labels
from deeppcos.audit.images import compute_image_features, hamming_matrix, phash_array
from deeppcos.data.cohort import Cohort

__all__ = ["CrossAudit", "cross_audit"]

KINDS = ("same_file", "same_pixels", "near")


@dataclass
class CrossAudit:
    """The pairs found between cohort ``a`` and cohort ``b`` and what they add up to."""

    name_a: str
    name_b: str
    images_a: int
    images_b: int
    near_bits: int
    pairs: pd.DataFrame  # one row per (image of a, image of b) pair; see _PAIR_COLUMNS

    def summary(self) -> dict[str, Any]:
        pairs = self.pairs
        by_kind = {
            kind: {
                "pairs": int((pairs["kind"] == kind).sum()),
                **_label_counts(pairs[pairs["kind"] == kind]),
            }
            for kind in KINDS
        }
        return {
            "cohort_a": self.name_a,
            "cohort_b": self.name_b,
            "images_a": self.images_a,
            "images_b": self.images_b,
            "near_bits": self.near_bits,
            "pairs": len(pairs),
            "by_kind": by_kind,
            "labels": _label_counts(pairs),
            "images_of_a_with_a_copy_in_b": int(pairs["a_image_id"].nunique()),
            "images_of_b_with_a_copy_in_a": int(pairs["b_image_id"].nunique()),
            "patients_of_a_with_a_copy_in_b": int(pairs["a_patient_id"].nunique()),
            "patients_of_b_with_a_copy_in_a": int(pairs["b_patient_id"].nunique()),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "pairs": self.pairs.to_dict("records")}


_PAIR_COLUMNS = [
    "kind",
    "distance",
    "labels",
    "a_image_id",
    "a_patient_id",
    "a_path",
    "a_label",
    "b_image_id",
    "b_patient_id",
    "b_path",
    "b_label",
]


def cross_audit(
    a: Cohort,
    b: Cohort,
    near_bits: int = DEFAULT_NEAR_DUP_BITS,
    progress: Progress | None = None,
    block: int = 512,
) -> CrossAudit:
    """Every image of ``a`` with a copy in ``b`` (see the module notes). ``progress(done,
    total)`` counts the images read, both cohorts together."""
    if not 0 <= near_bits <= 32:
        raise ValueError(f"near_bits must be between 0 and 32 of 64; got {near_bits}")
    total = len(a.images) + len(b.images)
    features_a = compute_image_features(a.images, _offset(progress, 0, total))
    features_b = compute_image_features(b.images, _offset(progress, len(a.images), total))
    hashes_a, rows_a = phash_array(features_a)
    hashes_b, rows_b = phash_array(features_b)
    i, j, distance = _close_across(hashes_a, hashes_b, near_bits, block)
    left = _side(a, features_a, rows_a[i], "a")
    right = _side(b, features_b, rows_b[j], "b")
    pairs = pd.concat([left, right], axis=1)
    pairs["distance"] = distance.astype(int)
    pairs["kind"] = _kinds(a, b, features_a, features_b, rows_a[i], rows_b[j])
    pairs["labels"] = _agreement(pairs["a_label"], pairs["b_label"])
    pairs = pairs[_PAIR_COLUMNS].sort_values(["distance", "a_image_id", "b_image_id"])
    return CrossAudit(
        name_a=a.spec.name,
        name_b=b.spec.name,
        images_a=len(a.images),
        images_b=len(b.images),
        near_bits=near_bits,
        pairs=pairs.reset_index(drop=True),
    )


def _close_across(
    a: np.ndarray, b: np.ndarray, max_bits: int, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (into ``a`` and ``b``) within ``max_bits``, in row blocks of ``a`` so memory
    stays at ``block × len(b)`` bytes."""
    found_i, found_j, found_d = [], [], []
    for start in range(0, len(a), block):
        dist = hamming_matrix(a[start : start + block], b)
        i, j = np.nonzero(dist <= max_bits)
        found_i.append(i + start)
        found_j.append(j)
        found_d.append(dist[i, j])
    if not found_i:
        empty = np.zeros(0, dtype=int)
        return empty, empty, empty
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def _side(cohort: Cohort, features: pd.DataFrame, rows: np.ndarray, prefix: str) -> pd.DataFrame:
    labels = _image_labels(cohort, cohort.images.reset_index(drop=True))
    picked = features.iloc[rows]
    return pd.DataFrame(
        {
            f"{prefix}_image_id": picked["image_id"].to_numpy(),
            f"{prefix}_patient_id": picked["patient_id"].to_numpy(),
            f"{prefix}_path": picked["path"].to_numpy(),
            f"{prefix}_label": pd.array(labels.iloc[rows].to_numpy(), dtype="Int8")
            if len(labels)
            else pd.array([pd.NA] * len(rows), dtype="Int8"),
        }
    )


def _kinds(
    a: Cohort,
    b: Cohort,
    features_a: pd.DataFrame,
    features_b: pd.DataFrame,
    rows_a: np.ndarray,
    rows_b: np.ndarray,
) -> np.ndarray:
    file_a = _file_hashes(a, rows_a)
    file_b = _file_hashes(b, rows_b)
    same_file = (file_a == file_b) & (file_a != "")
    pixels_a = features_a["pixel_hash"].iloc[rows_a].astype(str).to_numpy()
    pixels_b = features_b["pixel_hash"].iloc[rows_b].astype(str).to_numpy()
    same_pixels = pixels_a == pixels_b
    return np.where(same_file, "same_file", np.where(same_pixels, "same_pixels", "near"))


def _file_hashes(cohort: Cohort, rows: np.ndarray) -> np.ndarray:
    images = cohort.images.reset_index(drop=True)
    if "sha256" not in images:
        return np.full(len(rows), "", dtype=object)
    frames = images["frame"].astype("string").fillna("") if "frame" in images else ""
    keys = images["sha256"].astype("string").fillna("") + "/" + frames
    return keys.iloc[rows].to_numpy(dtype=object)


def _agreement(left: pd.Series, right: pd.Series) -> np.ndarray:
    known = left.notna() & right.notna()
    same = known & (left.fillna(-1) == right.fillna(-2))
    return np.where(~known, "unknown", np.where(same, "agree", "disagree"))


def _label_counts(pairs: pd.DataFrame) -> dict[str, int]:
    counts = pairs["labels"].value_counts()
    return {f"labels_{k}": int(counts.get(k, 0)) for k in ("agree", "disagree", "unknown")}


def _offset(progress: Progress | None, done: int, total: int) -> Progress | None:
    if progress is None:
        return None
    return lambda current, _: progress(done + current, total)
