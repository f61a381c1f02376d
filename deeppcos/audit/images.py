"""The per-image pass (perceptual hash, pixel digest, grey statistics, padding), Hamming distances,
duplicate clusters and the patient groups they link."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from deeppcos.audit.base import PADDING_FLAT_STD, Progress
from deeppcos.data.imageio import read_image, to_gray_uint8
from deeppcos.exceptions import DeepPCOSError

# --- per-image pass --------------------------------------------------------------------------


def phash64(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a grey uint8 image (definition in the module docstring)."""
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    block = cv2.dct(small)[:8, :8].ravel()
    bits = block > np.median(block[1:])
    return int(np.packbits(bits).view(">u8")[0])


def pixel_digest(pixels: np.ndarray) -> str:
    """Hash of decoded pixels, shape and type: equal for the same image in another encoding."""
    if pixels.ndim == 3 and _channels_equal(pixels):
        pixels = pixels[..., 0]  # grey stored as RGB is the grey image
    digest = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}|".encode())
    digest.update(np.ascontiguousarray(pixels).data.cast("B"))
    return digest.hexdigest()


def _channels_equal(pixels: np.ndarray) -> bool:
    return bool(
        np.array_equal(pixels[..., 0], pixels[..., 1])
        and np.array_equal(pixels[..., 1], pixels[..., 2])
    )


def gray_statistics(gray: np.ndarray, flat_std: float = PADDING_FLAT_STD) -> tuple[float, float]:
    """Mean intensity and padding fraction of a grey uint8 image, from one set of sums.

    Padding is the fraction of the area taken by flat bars along the edges (letterboxing): rows
    and columns, counted inwards from each edge, whose grey levels have a standard deviation of
    at most ``flat_std``. OpenCV's reductions are used because they are ~10× faster than numpy's
    here and release the GIL, so the per-image pass scales over threads.
    """
    height, width = gray.shape
    squares = cv2.multiply(gray, gray, dtype=cv2.CV_32F)  # exact: 255² fits a float32
    row_sum = cv2.reduce(gray, 1, cv2.REDUCE_SUM, dtype=cv2.CV_64F).ravel()
    row_sq = cv2.reduce(squares, 1, cv2.REDUCE_SUM, dtype=cv2.CV_64F).ravel()
    col_sum = cv2.reduce(gray, 0, cv2.REDUCE_SUM, dtype=cv2.CV_64F).ravel()
    col_sq = cv2.reduce(squares, 0, cv2.REDUCE_SUM, dtype=cv2.CV_64F).ravel()
    mean = float(row_sum.sum() / (height * width))
    flat_rows = _variance(row_sum, row_sq, width) <= flat_std**2
    if flat_rows.all():
        return mean, 1.0
    flat_cols = _variance(col_sum, col_sq, height) <= flat_std**2
    top, bottom = _run_length(flat_rows), _run_length(flat_rows[::-1])
    left, right = _run_length(flat_cols), _run_length(flat_cols[::-1])
    inner = max(height - top - bottom, 0) * max(width - left - right, 0)
    return mean, 1.0 - inner / (height * width)


def padding_fraction(gray: np.ndarray, flat_std: float = PADDING_FLAT_STD) -> float:
    return gray_statistics(gray, flat_std)[1]


def _variance(sums: np.ndarray, squares: np.ndarray, count: int) -> np.ndarray:
    mean = sums / count
    return np.maximum(squares / count - mean * mean, 0.0)


def _run_length(flags: np.ndarray) -> int:
    """Number of leading True values."""
    stop = np.flatnonzero(~flags)
    return int(stop[0]) if len(stop) else len(flags)


def _image_stats(path: str, frame: int | None) -> dict[str, Any]:
    try:
        pixels = read_image(path, frame)
    except (DeepPCOSError, OSError, ValueError) as exc:
        # An unreadable file is reported, not fatal: the audit is most needed on messy data.
        return {"readable": False, "error": str(exc)}
    gray = np.ascontiguousarray(to_gray_uint8(pixels))
    mean, padding = gray_statistics(gray)
    return {
        "readable": True,
        "error": None,
        "pixel_hash": pixel_digest(pixels),
        "phash_int": phash64(gray),
        "mean_intensity": mean,
        "padding_fraction": padding,
        "decoded_width": int(pixels.shape[1]),
        "decoded_height": int(pixels.shape[0]),
        "decoded_channels": 1 if pixels.ndim == 2 else int(pixels.shape[2]),
        "decoded_bit_depth": 16 if pixels.dtype == np.uint16 else 8,
    }


def compute_image_features(images: pd.DataFrame, progress: Progress | None = None) -> pd.DataFrame:
    """Read every image once (threads: OpenCV releases the GIL) and compute all its statistics."""
    paths = images["path"].astype(str).tolist()
    frames = images["frame"].tolist() if "frame" in images else [None] * len(paths)
    frames = [None if f is None or pd.isna(f) else int(f) for f in frames]
    stats: list[dict[str, Any]] = []
    workers = min(8, os.cpu_count() or 1)  # more threads than cores only add contention
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, record in enumerate(pool.map(_image_stats, paths, frames), start=1):
            stats.append(record)
            if progress:
                progress(done, len(paths))
    table = pd.DataFrame(stats, index=images.index)
    out = pd.DataFrame(
        {
            "image_id": images["image_id"].astype(str).values,
            "patient_id": images["patient_id"].astype(str).values,
            "path": paths,
            "frame": pd.array(frames, dtype="Int64"),
        }
    )
    table = table.reset_index(drop=True)
    for column in (
        "readable",
        "error",
        "pixel_hash",
        "mean_intensity",
        "padding_fraction",
        "decoded_width",
        "decoded_height",
        "decoded_channels",
        "decoded_bit_depth",
    ):
        out[column] = table.get(column)
    hashes = table["phash_int"] if "phash_int" in table else pd.Series([None] * len(out))
    out["phash"] = [None if h is None or pd.isna(h) else f"{int(h):016x}" for h in hashes]
    width = _column_or(images, "width", out["decoded_width"])
    height = _column_or(images, "height", out["decoded_height"])
    out["width"] = pd.to_numeric(width, errors="coerce").astype("float64")
    out["height"] = pd.to_numeric(height, errors="coerce").astype("float64")
    out["aspect_ratio"] = out["width"] / out["height"]
    return out


def _column_or(images: pd.DataFrame, column: str, fallback: pd.Series) -> pd.Series:
    if column in images:
        return images[column].reset_index(drop=True)
    return fallback


def phash_array(image_features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of readable images as uint64, and their row positions."""
    rows = np.flatnonzero(image_features["phash"].notna().to_numpy())
    hashes = np.array([int(h, 16) for h in image_features["phash"].iloc[rows]], dtype=np.uint64)
    return hashes, rows


# --- Hamming distances -----------------------------------------------------------------------


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All Hamming distances between two uint64 hash vectors (popcount of XOR), as uint8."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.uint8)


def close_pairs(
    hashes: np.ndarray, max_bits: int, block: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) within ``max_bits`` and each hash's nearest-neighbour distance.

    Row blocks keep memory at ``block × n`` bytes; 4,000 hashes take well under a second.
    """
    n = len(hashes)
    nearest = np.full(n, 255, dtype=np.uint8)
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    found_d: list[np.ndarray] = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        dist = hamming_matrix(hashes[start:stop], hashes)
        rows = np.arange(start, stop)
        dist[rows - start, rows] = 255  # not one's own neighbour
        nearest[start:stop] = dist.min(axis=1) if n > 1 else 255
        i, j = np.nonzero(dist <= max_bits)
        i = i + start
        keep = i < j
        found_i.append(i[keep])
        found_j.append(j[keep])
        found_d.append(dist[i[keep] - start, j[keep]])
    return _cat(found_i), _cat(found_j), _cat(found_d).astype(np.uint8), nearest


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes given undirected edges (i, j)."""
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


# --- duplicate clusters and patient groups ---------------------------------------------------


def build_clusters(
    features: pd.DataFrame, max_bits: int
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Exact and near clusters per image, the close pairs, and nearest-neighbour distances."""
    n = len(features)
    unreadable = "unreadable:" + features["image_id"]
    frame_text = features["frame"].astype("string").fillna("")
    sha = features["sha256"] if "sha256" in features else pd.Series([None] * n)
    # Frames of one DICOM file share its bytes: the byte key is (file hash, frame).
    byte_key = (sha.astype("string") + "#" + frame_text).fillna(unreadable)
    pixel_key = features["pixel_hash"].astype("string").fillna(unreadable)
    hashes, rows = phash_array(features)
    i, j, dist, nearest_readable = close_pairs(hashes, max_bits)
    near = components(n, rows[i], rows[j])
    nearest = np.full(n, np.nan)
    nearest[rows] = np.where(nearest_readable == 255, np.nan, nearest_readable)
    clusters = pd.DataFrame(
        {
            "image_id": features["image_id"].values,
            "byte_cluster": pd.factorize(byte_key)[0],
            "exact_cluster": pd.factorize(pixel_key)[0],
            "near_cluster": pd.factorize(near)[0],
        }
    )
    ids = features["image_id"].to_numpy()
    pixel = pixel_key.to_numpy()
    pairs = pd.DataFrame(
        {
            "image_a": ids[rows[i]],
            "image_b": ids[rows[j]],
            "distance": dist.astype(int),
            "exact": pixel[rows[i]] == pixel[rows[j]],
        }
    )
    return clusters, pairs, nearest


def group_patients(
    patient_ids: Iterable[str], images: pd.DataFrame, cluster: pd.Series
) -> pd.Series:
    """Patient -> group id; patients linked through any shared duplicate cluster share a group."""
    ids = pd.Index(pd.unique(pd.Series([*patient_ids, *images["patient_id"].astype(str)])))
    node = ids.get_indexer(images["patient_id"].astype(str))
    cluster_codes = pd.factorize(cluster.to_numpy())[0]
    # Link every image's patient to the patient of its cluster's first image (a star per
    # cluster): enough edges for connected components, linear in the number of images.
    first = pd.Series(node).groupby(cluster_codes).transform("first").to_numpy()
    labels = components(len(ids), node, first)
    groups = pd.Series(pd.factorize(labels)[0], index=ids, name="duplicate_group")
    groups.index.name = "patient_id"
    return groups
