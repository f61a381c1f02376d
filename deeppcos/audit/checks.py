"""The leakage and shortcut audit: what in a cohort lets a model look good without learning the
disease.

``audit_cohort(cohort)`` reads every image once and runs six checks; each yields findings with a
severity (``ok`` < ``info`` < ``warning`` < ``high``), a plain-language verdict and its figures.

1. **Exact duplicates** (``exact.bytes``, ``exact.pixels``): identical files (SHA-256 of the
   bytes, per DICOM frame) and identical decoded pixels (the same image saved in another format;
   a grey image stored as RGB counts as the grey image). Clusters are counted, and those that span
   different patients, different labels (contradictory labels) or different split parts (train/test
   leakage).
2. **Near-duplicates** (``near.phash``): a 64-bit DCT perceptual hash; two images are
   near-duplicates when their hashes differ in at most ``near_duplicate_threshold`` bits. Clusters
   are the connected components of that relation (so they include the exact duplicates) and are
   counted like exact ones.
3. **Split straddling** (``split.straddle``): duplicate clusters whose images sit in different
   parts of a split (the ``assignments`` given, else the top folder of image-folder cohorts such
   as ``train/`` and ``test/``), and patients assigned to more than one part.
4. **Image shortcut probes** (``shortcut.*``): how well one trivial property of the file predicts
   the label: width, height, aspect ratio, file size, format, colour mode, channels, bit depth,
   mean intensity, padding fraction, every extra acquisition column of the images table, and all
   of them together.
5. **Tabular leakage** (``tabular.*``): how well each feature column alone predicts the label;
   constant and mostly-missing columns; ultrasound-derived columns (a model that sees them is
   partly reading the scan), with the all-column AUC with and without them.
6. **Label and group sanity** (``labels.*``): class balance, missing labels, and label rates per
   ``group`` (a site whose patients are all positive is a shortcut).

How predictiveness is measured
------------------------------
Cross-validated ROC AUC with 5 patient-grouped, label-stratified folds (``StratifiedGroupKFold``;
the groups are ``patient_groups``, so duplicates of one image never sit on both sides). Out-of-
fold scores are pooled into one AUC, reported *as is*: an AUC below 0.5 is not flipped, because
flipping would let noise look like signal. The 95% interval is a BCa bootstrap over patient
groups (200 resamples, drawn by ``deeppcos.stats`` like every interval of the toolkit). Models
are shallow on purpose: one numeric property, ``HistGradientBoostingClassifier(max_depth=3,
max_iter=100)`` (missing values handled natively);
one categorical property, logistic regression on its one-hot encoding; several, the same boosting
on numbers plus one-hot columns.

Verdicts
--------
Image properties and groups: AUC ≥ 0.75 ``high`` (a shortcut: this property alone predicts the
label), 0.65–0.75 ``warning``, below 0.65 ``ok``. Tabular columns: AUC ≥ 0.90 ``high`` (nearly
encodes the label: is it derived from the diagnosis?), 0.75–0.90 ``warning`` (a strong single
predictor: check it is a cause, not a consequence, of the diagnosis). Constant properties are
skipped with an ``info`` finding.

The perceptual hash and its threshold
-------------------------------------
Grey 8-bit image → 32×32 with ``INTER_AREA`` → ``cv2.dct`` → the top-left 8×8 block (64
coefficients, DC included) → bit = coefficient > median of the 63 AC coefficients. The DC term
(the mean brightness) is left out of the median because it dwarfs the others; its bit is then
always 1 and never contributes to a distance. With a median threshold exactly 31 of the 63 AC
bits are set, so distances between two hashes are always even.

``DEFAULT_NEAR_DUP_BITS = 2`` was chosen on the real data sets (``../shared/data``):

- Resizing (×0.75, ×0.5, ×0.25, to 224², ×2 up), JPEG re-encoding (quality 50–95), a colour tint
  and +20 brightness move the hash by ≤ 2 bits for 98.5–100% of 800 images of each set, and never
  by more than 4.
- Chest X-rays of *different* patients (1,860 images, 1.73 M pairs; no true duplicates) reach
  distance 4 (6 pairs, seen side by side: different people or a later visit), 6 (86 more pairs)
  and 8 (633 more); at 8 the near-duplicate clusters chain into one of 424 images. At ≤ 2 there
  are none.
- The PCOS ultrasound set is built from augmented copies of few scans; pairs at 2–12 bits, seen
  side by side, are the same scan shifted, zoomed or stretched. At 2 bits 3,848 of its 3,849
  images already sit in a duplicate cluster.

So 2 bits keeps every reported pair a true copy of the same scan (re-encoded, resized, retinted)
even on a modality as uniform as chest X-ray; 4 bits would catch the remaining ~1% of heavily
downsized copies but starts to match different patients' chest films. Shifted or cropped copies
(augmentations; a 2% crop moves the hash 4–12 bits) are beyond any safe 64-bit-hash threshold:
raise ``near_duplicate_threshold`` for a set known to be augmented and look at the example pairs
in the HTML report.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from deeppcos.audit.rules import (
    SEVERITY_ORDER,
    SHORTCUT_HIGH,
    SHORTCUT_WARNING,
    TABULAR_HIGH,
    TABULAR_WARNING,
    Severity,
    json_safe,
)
from deeppcos.data.cohort import Cohort
from deeppcos.data.imageio import read_image, to_gray_uint8
from deeppcos.exceptions import DeepPCOSError
from deeppcos.knowledge.catalog import ultrasound_features
from deeppcos.stats import bootstrap_auc_ci, group_codes, weighted_auc

Progress = Callable[[int, int], None]

DEFAULT_NEAR_DUP_BITS = 2  # evidence in the module docstring
MOSTLY_MISSING = 0.5
N_FOLDS = 5
N_BOOTSTRAP = 200
# A border row or column is padding when its grey levels vary by at most this (standard
# deviation): letterbox bars, black, white or any flat fill, survive JPEG noise at this level.
PADDING_FLAT_STD = 4.0
# Columns of the images table that are identifiers, the label itself or what the audit computes;
# every other column is an acquisition property and gets a shortcut probe.
_NOT_ACQUISITION = {
    "image_id",
    "patient_id",
    "path",
    "frame",
    "frames",
    "label",
    "folder",  # image-folder cohorts: the class folder *is* the label
    "sha256",
    "width",
    "height",
    "channels",
    "bit_depth",
    "file_bytes",
    "file_format",
    "color_mode",
}


# --- results ---------------------------------------------------------------------------------


@dataclass
class Finding:
    check: str
    severity: Severity
    title: str
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass
class AuditResult:
    findings: list[Finding]
    image_features: pd.DataFrame
    duplicate_clusters: pd.DataFrame
    patient_groups: pd.Series
    probes: pd.DataFrame = field(default_factory=pd.DataFrame)
    duplicate_pairs: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def worst_severity(self) -> Severity:
        if not self.findings:
            return "ok"
        return max((f.severity for f in self.findings), key=SEVERITY_ORDER.__getitem__)

    def by_check(self, prefix: str) -> list[Finding]:
        """Findings whose check id is ``prefix`` or starts with ``prefix.``."""
        return [f for f in self.findings if f.check == prefix or f.check.startswith(prefix + ".")]

    def to_dict(self) -> dict[str, Any]:
        clusters = self.duplicate_clusters
        in_cluster = (
            clusters[clusters["near_cluster"].duplicated(keep=False)] if len(clusters) else clusters
        )
        groups = self.patient_groups
        shared = groups[groups.duplicated(keep=False)] if len(groups) else groups
        return json_safe(
            {
                "settings": self.settings,
                "worst_severity": self.worst_severity,
                "counts": {s: sum(f.severity == s for f in self.findings) for s in SEVERITY_ORDER},
                "findings": [f.to_dict() for f in self.findings],
                "probes": self.probes.to_dict(orient="records"),
                # Only images and patients that share a cluster: singletons carry no news.
                "duplicate_clusters": in_cluster.to_dict(orient="records"),
                "patient_groups": {str(k): int(v) for k, v in shared.items()},
            }
        )

    def to_json(self, path: Path | str) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
        return path

    def to_html(self, path: Path | str) -> Path:
        from deeppcos.audit.report import render_html

        path = Path(path)
        path.write_text(render_html(self), encoding="utf-8")
        return path

    def print_rich(self, console: Any = None) -> None:
        from deeppcos.audit.report import print_findings

        print_findings(self, console)


def worse(a: Severity, b: Severity) -> Severity:
    return a if SEVERITY_ORDER[a] >= SEVERITY_ORDER[b] else b


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


# --- AUC with grouped cross-validation --------------------------------------------------------


def grouped_folds(
    y: np.ndarray, groups: np.ndarray, seed: int, n_folds: int = N_FOLDS
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Label-stratified folds that keep each group whole; fewer folds if groups are few."""
    from sklearn.model_selection import StratifiedGroupKFold

    frame = pd.DataFrame({"y": y, "g": groups})
    with_pos = frame.loc[frame["y"] == 1, "g"].nunique()
    with_neg = frame.loc[frame["y"] == 0, "g"].nunique()
    k = min(n_folds, with_pos, with_neg)
    if k < 2:
        return []
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" on tiny cohorts
        return list(splitter.split(np.zeros(len(y)), y, groups))


ModelKind = Literal["numeric", "categorical", "mixed"]


def _make_model(kind: ModelKind, seed: int, n_train: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    if kind == "categorical":
        return make_pipeline(
            OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=1000)
        )
    # Shallow on purpose: a probe asks whether a trivial rule exists, not for the best model.
    # The default leaf size (20) forbids any split below 40 training rows; scale it down so
    # small pilot cohorts can still show a shortcut, and keep 20 for real-sized ones.
    return HistGradientBoostingClassifier(
        max_depth=3,
        max_iter=100,
        min_samples_leaf=min(20, max(3, n_train // 10)),
        early_stopping=False,
        random_state=seed,
    )


def out_of_fold_scores(
    x: np.ndarray,
    y: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    kind: ModelKind,
    seed: int,
) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    scores = np.full(len(y), np.nan)
    with threadpool_limits(1):  # one thread per model: the audit runs beside other work
        for train, test in folds:
            if len(np.unique(y[train])) < 2:
                scores[test] = float(np.mean(y[train]))
                continue
            model = _make_model(kind, seed, len(train))
            model.fit(x[train], y[train])
            scores[test] = model.predict_proba(x[test])[:, 1]
    return scores


@dataclass
class ProbeResult:
    auc: float
    ci_low: float
    ci_high: float
    n: int
    n_groups: int
    folds: int


def probe_auc(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    kind: ModelKind,
    seed: int,
) -> ProbeResult:
    scores = out_of_fold_scores(x, y, folds, kind, seed)
    auc = weighted_auc(y, scores)
    low, high = bootstrap_auc_ci(y, scores, groups, np.random.default_rng(seed))
    return ProbeResult(auc, low, high, len(y), group_codes(groups)[1], len(folds))


def severity_for_auc(auc: float, high: float, warning: float) -> Severity:
    if math.isnan(auc):
        return "info"
    return "high" if auc >= high else "warning" if auc >= warning else "ok"


def fmt_auc(probe: ProbeResult) -> str:
    if math.isnan(probe.auc):
        return "AUC not computable"
    return f"AUC {probe.auc:.2f} (95% CI {probe.ci_low:.2f}–{probe.ci_high:.2f})"


def probe_figures(probe: ProbeResult) -> dict[str, Any]:
    return {
        "auc": round(probe.auc, 4) if not math.isnan(probe.auc) else None,
        "ci_low": round(probe.ci_low, 4) if not math.isnan(probe.ci_low) else None,
        "ci_high": round(probe.ci_high, 4) if not math.isnan(probe.ci_high) else None,
        "n": probe.n,
        "groups": probe.n_groups,
        "folds": probe.folds,
    }


# --- the audit -------------------------------------------------------------------------------


@dataclass
class _Context:
    """What every check needs: per-image table with labels, parts and clusters."""

    cohort: Cohort
    frame: pd.DataFrame  # per image: features, clusters, label, part, group
    groups: pd.Series
    part_source: str | None
    seed: int
    threshold: int


def duplicate_patient_groups(
    cohort: Cohort,
    *,
    near_duplicate_threshold: int = DEFAULT_NEAR_DUP_BITS,
    progress: Progress | None = None,
) -> pd.Series:
    """Only the duplicate clustering of the audit: patient_id -> group id, for the splitter.

    Patients linked by an exact or near-duplicate image share a group; a cohort without images
    gives one group per patient.
    """
    patient_ids = cohort.patients["patient_id"].astype(str)
    images = cohort.images.reset_index(drop=True)
    if images.empty:
        return pd.Series(range(len(patient_ids)), index=pd.Index(patient_ids, name="patient_id"))
    features = compute_image_features(images, progress)
    clusters, _, _ = build_clusters(features, near_duplicate_threshold)
    return group_patients(patient_ids, features, clusters["near_cluster"])


def audit_cohort(
    cohort: Cohort,
    *,
    near_duplicate_threshold: int = DEFAULT_NEAR_DUP_BITS,
    assignments: pd.Series | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> AuditResult:
    """Run every leakage and shortcut check on ``cohort`` (see the module docstring)."""
    started = time.perf_counter()
    images = cohort.images.reset_index(drop=True)
    if len(images):
        features = compute_image_features(images, progress)
        if "sha256" in images:
            features["sha256"] = images["sha256"].astype("string").values
        clusters, pairs, nearest = build_clusters(features, near_duplicate_threshold)
        features["nn_distance"] = nearest
    else:
        features = pd.DataFrame(columns=["image_id", "patient_id", "phash"])
        clusters = pd.DataFrame(
            columns=["image_id", "byte_cluster", "exact_cluster", "near_cluster"]
        )
        pairs = pd.DataFrame(columns=["image_a", "image_b", "distance", "exact"])
    groups = group_patients(
        cohort.patients["patient_id"].astype(str), features, clusters["near_cluster"]
    )
    parts, part_source = _image_parts(images, assignments)
    frame = _per_image_frame(cohort, images, features, clusters, groups, parts)
    ctx = _Context(cohort, frame, groups, part_source, seed, near_duplicate_threshold)
    findings: list[Finding] = []
    probes: list[dict[str, Any]] = []
    findings += _check_readable(ctx)
    findings += _check_exact(ctx)
    findings += _check_near(ctx, pairs)
    findings += _check_split(ctx, assignments)
    findings += _check_image_shortcuts(ctx, probes)
    findings += _check_tabular(ctx, probes)
    findings += _check_labels(ctx, probes)
    settings = {
        "cohort": cohort.spec.name,
        "label_name": cohort.spec.label_name,
        "near_duplicate_threshold": near_duplicate_threshold,
        "seed": seed,
        "folds": N_FOLDS,
        "bootstrap": N_BOOTSTRAP,
        "part_source": part_source,
        "images": len(images),
        "patients": len(cohort.patients),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    return AuditResult(
        findings=findings,
        image_features=frame.drop(columns=["pixel_hash"], errors="ignore"),
        duplicate_clusters=clusters,
        patient_groups=groups,
        probes=pd.DataFrame(probes),
        duplicate_pairs=pairs,
        settings=settings,
    )


def _image_parts(
    images: pd.DataFrame, assignments: pd.Series | None
) -> tuple[pd.Series, str | None]:
    """Split part of each image: from ``assignments`` (patient -> part), else the top folder."""
    if assignments is not None:
        first = assignments[~assignments.index.duplicated(keep="first")]
        first.index = first.index.astype(str)
        parts = (
            images["patient_id"].astype(str).map(first) if len(images) else pd.Series(dtype=object)
        )
        return parts.astype("string"), "assignments"
    if len(images) and "folder" in images:
        folder = images["folder"].astype("string")
        # Only "split/class" paths name a split; a bare class folder ("infected") does not.
        nested = folder.str.contains("/", regex=False).fillna(False)
        if nested.any():
            return folder.str.split("/").str[0].where(nested), "folder"
    return pd.Series(pd.NA, index=images.index, dtype="string"), None


def _per_image_frame(
    cohort: Cohort,
    images: pd.DataFrame,
    features: pd.DataFrame,
    clusters: pd.DataFrame,
    groups: pd.Series,
    parts: pd.Series,
) -> pd.DataFrame:
    frame = features.copy()
    for column in ("byte_cluster", "exact_cluster", "near_cluster"):
        frame[column] = clusters[column].values if len(clusters) else []
    frame["label"] = _image_labels(cohort, images)
    frame["part"] = parts.values if len(parts) else pd.Series(dtype="string")
    frame["group"] = frame["patient_id"].map(groups).values if len(frame) else []
    return frame


def _image_labels(cohort: Cohort, images: pd.DataFrame) -> pd.Series:
    """Image-level label where the images table has one, else the patient's label."""
    if not len(images):
        return pd.Series(dtype="Int8")
    patient_label = cohort.patients.set_index(cohort.patients["patient_id"].astype(str))
    by_patient = (
        images["patient_id"].astype(str).map(patient_label["label"])
        if "label" in patient_label
        else pd.Series(pd.NA, index=images.index)
    )
    if "label" in images:
        return (
            images["label"].astype("Int8").fillna(by_patient.astype("Int8")).reset_index(drop=True)
        )
    return by_patient.astype("Int8").reset_index(drop=True)


# --- checks: readability ---------------------------------------------------------------------


def _check_readable(ctx: _Context) -> list[Finding]:
    frame = ctx.frame
    if not len(frame):
        return [
            Finding(
                "images.none",
                "info",
                "No images",
                "The cohort has no images; only the tabular and label checks ran.",
            )
        ]
    bad = frame[~frame["readable"].astype(bool)]
    if not len(bad):
        return []
    return [
        Finding(
            "images.unreadable",
            "warning",
            f"{len(bad)} image(s) could not be decoded",
            "These images were left out of the duplicate checks and have no pixel statistics. "
            "Fix or remove the files; the first errors are listed in the figures.",
            {"unreadable": len(bad), "examples": bad["error"].head(5).tolist()},
        )
    ]


# --- checks 1 and 2: duplicates ---------------------------------------------------------------


def cluster_spans(frame: pd.DataFrame, column: str) -> dict[str, Any]:
    """How many multi-image clusters there are and how many cross patients, labels, parts."""
    multi = frame[frame[column].duplicated(keep=False)]
    if not len(multi):
        return {
            "clusters": 0,
            "images_involved": 0,
            "redundant_copies": 0,
            "spanning_patients": 0,
            "spanning_labels": 0,
            "spanning_parts": 0,
            "largest_cluster": 1 if len(frame) else 0,
        }
    grouped = multi.groupby(column)
    sizes = grouped.size()
    span_labels = grouped["label"].nunique(dropna=True) > 1
    span_parts = grouped["part"].nunique(dropna=True) > 1
    figures: dict[str, Any] = {
        "clusters": len(sizes),
        "images_involved": int(sizes.sum()),
        "redundant_copies": int(sizes.sum() - len(sizes)),
        "spanning_patients": int((grouped["patient_id"].nunique() > 1).sum()),
        "spanning_labels": int(span_labels.sum()),
        "images_in_label_conflicts": int(sizes[span_labels].sum()),
        "spanning_parts": int(span_parts.sum()),
        "largest_cluster": int(sizes.max()),
    }
    if span_parts.any():
        figures["images_with_copy_in_other_part"] = _copies_across_parts(frame, column)
    return figures


def _copies_across_parts(frame: pd.DataFrame, column: str) -> dict[str, dict[str, int]]:
    """Per part: images whose cluster also has an image in another part."""
    known = frame[frame["part"].notna()]
    parts_per_cluster = known.groupby(column)["part"].nunique()
    crossing = known[column].map(parts_per_cluster) > 1
    out = {}
    for part, rows in known.groupby("part"):
        out[str(part)] = {
            "images": len(rows),
            "with_copy_elsewhere": int(crossing[rows.index].sum()),
        }
    return out


def _duplicate_severity(figures: dict[str, Any]) -> Severity:
    if figures["clusters"] == 0:
        return "ok"
    if figures["spanning_labels"] or figures["spanning_parts"]:
        return "high"
    return "warning" if figures["spanning_patients"] else "info"


def _duplicate_detail(kind: str, figures: dict[str, Any]) -> str:
    if figures["clusters"] == 0:
        return f"No {kind} found."
    text = [
        f"{figures['clusters']} cluster(s) of {kind} hold {figures['images_involved']} images "
        f"({figures['redundant_copies']} redundant copies; largest cluster "
        f"{figures['largest_cluster']})."
    ]
    if figures["spanning_parts"]:
        crossing = figures.get("images_with_copy_in_other_part", {})
        listed = ", ".join(
            f"{c['with_copy_elsewhere']} of {c['images']} {p} images" for p, c in crossing.items()
        )
        text.append(
            f"{figures['spanning_parts']} cluster(s) span split parts ({listed} have a copy in "
            "another part): train/test leakage, any score on this split is inflated. Re-split "
            "with `patient_groups` so each cluster stays in one part."
        )
    if figures["spanning_labels"]:
        text.append(
            f"{figures['spanning_labels']} cluster(s) ({figures['images_in_label_conflicts']} "
            "images) carry both labels: the same image is labelled both ways. Resolve or drop "
            "them before training."
        )
    if figures["spanning_patients"]:
        text.append(
            f"{figures['spanning_patients']} cluster(s) span different patient ids: either one "
            "person under several ids or copied images. `patient_groups` links them so a "
            "splitter keeps them together."
        )
    if not (
        figures["spanning_parts"] or figures["spanning_labels"] or figures["spanning_patients"]
    ):
        text.append(
            "All copies belong to the same patient and label; they double-weight those "
            "images but do not leak."
        )
    return " ".join(text)


def _check_exact(ctx: _Context) -> list[Finding]:
    if not len(ctx.frame):
        return []
    findings = []
    for check, column, kind in (
        ("exact.bytes", "byte_cluster", "byte-identical files"),
        ("exact.pixels", "exact_cluster", "pixel-identical images (any encoding)"),
    ):
        figures = cluster_spans(ctx.frame, column)
        severity = _duplicate_severity(figures)
        title = (
            f"{figures['images_involved']} images in {figures['clusters']} clusters of {kind}"
            if figures["clusters"]
            else f"No {kind}"
        )
        findings.append(Finding(check, severity, title, _duplicate_detail(kind, figures), figures))
    return findings


def _check_near(ctx: _Context, pairs: pd.DataFrame) -> list[Finding]:
    frame = ctx.frame
    if not len(frame):
        return []
    figures = cluster_spans(frame, "near_cluster")
    beyond = frame["near_cluster"].duplicated(keep=False) & ~frame["exact_cluster"].duplicated(
        keep=False
    )
    nearest = frame["nn_distance"].dropna().astype(int)
    figures.update(
        {
            "threshold_bits": ctx.threshold,
            "pairs": len(pairs),
            "non_identical_pairs": int((~pairs["exact"].astype(bool)).sum()) if len(pairs) else 0,
            "images_only_near": int(beyond.sum()),
            # Evidence for the threshold: how close each image's nearest other image is.
            "nearest_neighbour_bits": {
                str(k): int(v)
                for k, v in nearest.clip(upper=17).value_counts().sort_index().items()
            },
        }
    )
    kind = f"near-duplicates (perceptual hash within {ctx.threshold} bits)"
    severity = _duplicate_severity(figures)
    title = (
        f"{figures['images_involved']} images in {figures['clusters']} near-duplicate clusters"
        if figures["clusters"]
        else "No near-duplicates"
    )
    detail = _duplicate_detail(kind, figures)
    if figures["clusters"]:
        detail += (
            f" {figures['images_only_near']} images are near but not exact copies "
            "(resized, re-encoded, retinted): the HTML report shows example pairs."
        )
    return [Finding("near.phash", severity, title, detail, figures)]


# --- check 3: split straddling ----------------------------------------------------------------


def _check_split(ctx: _Context, assignments: pd.Series | None) -> list[Finding]:
    frame = ctx.frame
    if ctx.part_source is None:
        return [
            Finding(
                "split.straddle",
                "info",
                "No split to check",
                "No assignments were given and the images have no split folders; pass "
                "assignments=<patient_id -> part> to check a split for leakage.",
            )
        ]
    several = _patients_in_several_parts(frame, assignments)
    spans: dict[str, Any] = (
        cluster_spans(frame, "near_cluster") if len(frame) else {"spanning_parts": 0}
    )
    images_per_part = frame["part"].value_counts().to_dict() if len(frame) else {}
    figures: dict[str, Any] = {
        "source": ctx.part_source,
        "images_per_part": {str(k): int(v) for k, v in images_per_part.items()},
        "patients_in_several_parts": len(several),
        "example_patients": several[:10],
        "clusters_spanning_parts": spans["spanning_parts"],
        "images_with_copy_in_other_part": spans.get("images_with_copy_in_other_part", {}),
    }
    if assignments is not None:
        patients_per_part = assignments[~assignments.index.duplicated()].value_counts()
        figures["patients_per_part"] = {str(k): int(v) for k, v in patients_per_part.items()}
    problems = []
    if several:
        problems.append(
            f"{len(several)} patient(s) sit in more than one part (e.g. {', '.join(several[:3])})."
        )
    if spans["spanning_parts"]:
        crossing = spans["images_with_copy_in_other_part"]
        listed = ", ".join(
            f"{c['with_copy_elsewhere']}/{c['images']} in {p}" for p, c in crossing.items()
        )
        problems.append(
            f"{spans['spanning_parts']} duplicate cluster(s) span parts ({listed} "
            "have an exact or near copy in another part)."
        )
    if not problems:
        return [
            Finding(
                "split.straddle",
                "ok",
                "No patient or duplicate straddles the split",
                f"Split from {ctx.part_source}: every patient and every duplicate cluster "
                "sits in one part.",
                figures,
            )
        ]
    detail = " ".join(problems) + (
        " Scores measured on this split are inflated by memorised copies. Re-split with "
        "deeppcos's grouped splitter (groups = AuditResult.patient_groups), or drop the copies."
    )
    return [Finding("split.straddle", "high", "The split leaks across parts", detail, figures)]


def _patients_in_several_parts(frame: pd.DataFrame, assignments: pd.Series | None) -> list[str]:
    if assignments is not None:
        per_patient = assignments.groupby(assignments.index.astype(str)).nunique()
    elif len(frame):
        per_patient = frame.groupby("patient_id")["part"].nunique()
    else:
        return []
    return sorted(per_patient[per_patient > 1].index.astype(str))


# --- check 4: image shortcut probes -----------------------------------------------------------

_IMAGE_NUMERIC = (
    "width",
    "height",
    "aspect_ratio",
    "file_bytes",
    "channels",
    "bit_depth",
    "mean_intensity",
    "padding_fraction",
)
_IMAGE_CATEGORICAL = ("file_format", "color_mode")


def _shortcut_table(ctx: _Context) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """Per image: the trivial properties; names of numeric, categorical and acquisition ones."""
    images = ctx.cohort.images.reset_index(drop=True)
    frame = ctx.frame
    table = pd.DataFrame(index=frame.index)
    numeric, categorical = [], []
    for column in _IMAGE_NUMERIC:
        source = frame if column in frame else images
        if column in source:
            table[column] = pd.to_numeric(source[column], errors="coerce").astype("float64").values
            numeric.append(column)
    if "channels" not in table:
        table["channels"] = frame["decoded_channels"].astype("float64").values
        numeric.append("channels")
    for column in _IMAGE_CATEGORICAL:
        if column in images:
            table[column] = images[column].astype("string").fillna("missing").values
            categorical.append(column)
    acquisition = []
    for column in images.columns:
        if column in _NOT_ACQUISITION or column in table:
            continue
        values = images[column]
        as_number = pd.to_numeric(values, errors="coerce")
        # Numbers stay numbers (age, follow-up); anything with text is a category (view).
        if (
            values.notna().any()
            and as_number[values.notna()].notna().all()
            and values.dtype != bool
        ):
            table[column] = as_number.astype("float64").values
            numeric.append(column)
        else:
            table[column] = values.astype("string").fillna("missing").values
            categorical.append(column)
        acquisition.append(column)
    return table, numeric, categorical, acquisition


_PROPERTY_NAMES = {
    "width": "Image width",
    "height": "Image height",
    "aspect_ratio": "Aspect ratio",
    "file_bytes": "File size",
    "channels": "Number of channels",
    "bit_depth": "Bit depth",
    "mean_intensity": "Mean intensity",
    "padding_fraction": "Padding (letterbox) fraction",
    "file_format": "File format",
    "color_mode": "Colour mode",
}


def _check_image_shortcuts(ctx: _Context, probes: list[dict[str, Any]]) -> list[Finding]:
    frame = ctx.frame
    if not len(frame):
        return []
    labelled = frame["label"].notna().to_numpy()
    if not labelled.any():
        return [
            Finding(
                "shortcut.skipped",
                "info",
                "No labels: shortcut probes skipped",
                "No image has a label, so nothing can be predicted.",
            )
        ]
    table, numeric, categorical, acquisition = _shortcut_table(ctx)
    table = table[labelled].reset_index(drop=True)
    y = frame.loc[labelled, "label"].astype(int).to_numpy()
    groups = frame.loc[labelled, "group"].to_numpy()
    folds = grouped_folds(y, groups, ctx.seed)
    if not folds:
        return [
            Finding(
                "shortcut.skipped",
                "info",
                "Too few patients for shortcut probes",
                "Each class needs labelled images from at least two patient groups.",
            )
        ]
    findings = []
    for column in [*numeric, *categorical]:
        findings.append(
            _probe_one(
                ctx,
                table,
                column,
                column in categorical,
                y,
                groups,
                folds,
                probes,
                column in acquisition,
            )
        )
    image_props = [c for c in table.columns if c not in acquisition]
    findings += _probe_together(
        ctx,
        table,
        image_props,
        categorical,
        y,
        groups,
        folds,
        probes,
        "shortcut.all_image_properties",
        "All trivial image properties",
    )
    if acquisition:
        findings += _probe_together(
            ctx,
            table,
            list(table.columns),
            categorical,
            y,
            groups,
            folds,
            probes,
            "shortcut.all_properties",
            "All image and acquisition properties",
        )
    return findings


def _probe_one(
    ctx: _Context,
    table: pd.DataFrame,
    column: str,
    is_categorical: bool,
    y: np.ndarray,
    groups: np.ndarray,
    folds: list,
    probes: list[dict[str, Any]],
    acquisition: bool,
) -> Finding:
    name = _PROPERTY_NAMES.get(column, f"Acquisition column {column!r}")
    check = f"shortcut.{column}"
    values = table[column]
    if values.nunique(dropna=False) <= 1:
        only = values.iloc[0] if len(values) else None
        probes.append(
            {
                "kind": "image",
                "property": column,
                "auc": None,
                "severity": "info",
                "note": "constant",
            }
        )
        return Finding(
            check,
            "info",
            f"{name} is constant",
            f"Every image has the same {column} ({only}); it cannot be a shortcut here.",
            {"value": json_safe(only)},
        )
    x = values.to_numpy(dtype=object if is_categorical else np.float64).reshape(-1, 1)
    probe = probe_auc(x, y, groups, folds, "categorical" if is_categorical else "numeric", ctx.seed)
    severity = severity_for_auc(probe.auc, SHORTCUT_HIGH, SHORTCUT_WARNING)
    figures = probe_figures(probe) | _class_summary(values, y, is_categorical)
    probes.append(
        {
            "kind": "acquisition" if acquisition else "image",
            "property": column,
            **probe_figures(probe),
            "severity": severity,
        }
    )
    return Finding(
        check,
        severity,
        f"{name}: {fmt_auc(probe)}",
        _shortcut_detail(name, probe, severity),
        figures,
    )


def _class_summary(values: pd.Series, y: np.ndarray, is_categorical: bool) -> dict[str, Any]:
    """What the property looks like per class, so a reader sees *how* it separates them."""
    out: dict[str, Any] = {}
    for label in (0, 1):
        part = values[y == label]
        if is_categorical:
            out[f"class{label}_top"] = {
                str(k): int(v) for k, v in part.value_counts().head(4).items()
            }
        else:
            out[f"class{label}_median"] = (
                None if part.isna().all() else round(float(part.median()), 4)
            )
    return out


def _shortcut_detail(
    name: str, probe: ProbeResult, severity: Severity, verb: str = "alone predicts"
) -> str:
    base = (
        f"{name} {verb} the label with cross-validated {fmt_auc(probe)} over "
        f"{probe.n} images in {probe.n_groups} patient groups."
    )
    if severity == "high":
        what = "this property alone" if verb == "alone predicts" else "these trivial properties"
        return base + (
            f" Shortcut: {what} predict(s) the label, so a model can score well without looking "
            "at the anatomy. Normalise it away (resize, crop padding, convert to one format) or "
            "collect data where it does not differ between classes, and report results beside "
            "this finding."
        )
    if severity == "warning":
        return base + (
            " A partial shortcut: check that the classes come from the same "
            "source and acquisition, and normalise the property in preprocessing."
        )
    if severity == "info":
        return base
    return base + " No shortcut at the audit's thresholds."


def _probe_together(
    ctx: _Context,
    table: pd.DataFrame,
    columns: list[str],
    categorical: list[str],
    y: np.ndarray,
    groups: np.ndarray,
    folds: list,
    probes: list[dict[str, Any]],
    check: str,
    name: str,
) -> list[Finding]:
    varying = [c for c in columns if table[c].nunique(dropna=False) > 1]
    if len(varying) < 2:
        return []
    x = _mixed_matrix(table[varying], [c for c in varying if c in categorical])
    probe = probe_auc(x, y, groups, folds, "mixed", ctx.seed)
    severity = severity_for_auc(probe.auc, SHORTCUT_HIGH, SHORTCUT_WARNING)
    probes.append(
        {
            "kind": "combined",
            "property": check.split(".", 1)[1],
            **probe_figures(probe),
            "severity": severity,
        }
    )
    figures = probe_figures(probe) | {"properties": varying}
    return [
        Finding(
            check,
            severity,
            f"{name} together: {fmt_auc(probe)}",
            _shortcut_detail(f"{name} ({', '.join(varying)})", probe, severity, "together predict"),
            figures,
        )
    ]


def _mixed_matrix(table: pd.DataFrame, categorical: list[str]) -> np.ndarray:
    """Numbers as they are plus one-hot columns (the category vocabulary carries no label)."""
    numeric = table.drop(columns=categorical).astype("float64")
    dummies = (
        pd.get_dummies(table[categorical].astype(str), dtype="float64") if categorical else None
    )
    combined = numeric if dummies is None else pd.concat([numeric, dummies], axis=1)
    return combined.to_numpy(dtype=np.float64)


# --- check 5: tabular leakage -----------------------------------------------------------------


def _check_tabular(ctx: _Context, probes: list[dict[str, Any]]) -> list[Finding]:
    columns = list(ctx.cohort.feature_columns)
    if not columns:
        return []
    patients = ctx.cohort.patients.reset_index(drop=True)
    labels = patients["label"] if "label" in patients else pd.Series(pd.NA, index=patients.index)
    labelled = labels.notna().to_numpy()
    y = labels[labelled].astype(int).to_numpy()
    groups = patients.loc[labelled, "patient_id"].astype(str).map(ctx.groups).to_numpy()
    folds = grouped_folds(y, groups, ctx.seed) if labelled.any() else []
    ultrasound = set(ultrasound_features())
    findings, aucs = [], {}
    categorical = set(ctx.cohort.categorical_columns)
    for column in columns:
        values = (
            patients[column].astype(object)
            if column in categorical
            else pd.to_numeric(patients[column], errors="coerce").astype("float64")
        )
        finding, auc = _tabular_column(
            ctx, column, values, labelled, y, groups, folds, column in ultrasound, probes
        )
        aucs[column] = auc
        if finding is not None:
            findings.append(finding)
    findings += _tabular_summary(
        ctx, patients, columns, labelled, y, groups, folds, aucs, ultrasound, probes
    )
    return findings


def _tabular_column(
    ctx: _Context,
    column: str,
    values: pd.Series,
    labelled: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    folds: list,
    is_ultrasound: bool,
    probes: list[dict[str, Any]],
) -> tuple[Finding | None, float | None]:
    missing = float(values.isna().mean())
    figures: dict[str, Any] = {
        "missing_fraction": round(missing, 4),
        "ultrasound_derived": is_ultrasound,
    }
    notes: list[str] = []
    severity: Severity = "ok"
    if values.nunique() <= 1:
        probes.append(
            {
                "kind": "tabular",
                "property": column,
                "auc": None,
                "severity": "info",
                "note": "constant",
            }
        )
        return Finding(
            f"tabular.{column}",
            "info",
            f"{column} is constant",
            f"Column {column!r} has a single value (or none): it carries no information; drop it.",
            figures,
        ), None
    auc = None
    if folds:
        categorical = values.dtype == object
        x = values[labelled]
        if categorical:  # a probe on the categories themselves; missing is one of them
            x = x.where(x.notna(), "(missing)")
        kind: ModelKind = "categorical" if categorical else "numeric"
        probe = probe_auc(x.to_numpy().reshape(-1, 1), y, groups, folds, kind, ctx.seed)
        auc = probe.auc
        severity = severity_for_auc(probe.auc, TABULAR_HIGH, TABULAR_WARNING)
        figures |= probe_figures(probe)
        probes.append(
            {
                "kind": "tabular",
                "property": column,
                **probe_figures(probe),
                "severity": severity,
                "ultrasound_derived": is_ultrasound,
            }
        )
        if severity == "high":
            notes.append(
                f"Alone it predicts the label with {fmt_auc(probe)}: it nearly encodes "
                "the label. Is it derived from the diagnosis (recorded after it, or part "
                "of its definition)? If so, leave it out of the model."
            )
        elif severity == "warning":
            notes.append(
                f"Alone it predicts the label with {fmt_auc(probe)}: a strong single "
                "predictor. Check it is a cause, not a consequence, of the diagnosis."
            )
    if missing > MOSTLY_MISSING:
        severity = worse(severity, "warning")
        notes.append(
            f"{missing:.0%} of its values are missing; imputation will dominate it, "
            "and whether it was measured may itself follow the diagnosis."
        )
    if is_ultrasound:
        severity = worse(severity, "info")
        notes.append(
            "It is read off the ultrasound scan: a model that sees it is partly reading "
            "the scan, so an image+table model double-counts the scan and a table-only "
            "model is not image-free. Evaluate with and without it."
        )
    if not notes:
        return None, auc
    title = f"{column}: " + ("; ".join(_tabular_tags(severity, missing, is_ultrasound, auc)))
    return Finding(f"tabular.{column}", severity, title, " ".join(notes), figures), auc


def _tabular_tags(
    severity: Severity, missing: float, is_ultrasound: bool, auc: float | None
) -> list[str]:
    tags = []
    if auc is not None and auc >= TABULAR_WARNING:
        tags.append(f"single-column AUC {auc:.2f}")
    if missing > MOSTLY_MISSING:
        tags.append(f"{missing:.0%} missing")
    if is_ultrasound:
        tags.append("ultrasound-derived")
    return tags or [severity]


def _tabular_summary(
    ctx: _Context,
    patients: pd.DataFrame,
    columns: list[str],
    labelled: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    folds: list,
    aucs: dict[str, float | None],
    ultrasound: set[str],
    probes: list[dict[str, Any]],
) -> list[Finding]:
    ranked = sorted(
        ((c, a) for c, a in aucs.items() if a is not None and not math.isnan(a)),
        key=lambda item: -item[1],
    )
    figures: dict[str, Any] = {"single_column_auc": {c: round(a, 4) for c, a in ranked}}
    if not folds:
        return [
            Finding(
                "tabular.summary",
                "info",
                "Tabular probes skipped",
                "Each class needs labelled patients from at least two groups.",
                figures,
            )
        ]
    present = [c for c in columns if c in ultrasound]
    # Categories as their codes here: the trees of the joint probe split them like any value.
    matrix = (
        patients.loc[labelled, columns]
        .apply(lambda c: c.cat.codes.where(c.notna()) if c.dtype == "category" else c)
        .apply(pd.to_numeric, errors="coerce")
        .astype("float64")
    )
    everything = probe_auc(matrix.to_numpy(), y, groups, folds, "mixed", ctx.seed)
    figures["all_columns"] = probe_figures(everything)
    text = [f"All {len(columns)} feature columns together: {fmt_auc(everything)}."]
    if ranked:
        top = ", ".join(f"{c} {a:.2f}" for c, a in ranked[:5])
        text.append(f"Strongest single columns: {top}.")
    findings = [
        Finding(
            "tabular.summary",
            "info",
            f"Tabular features together: {fmt_auc(everything)}",
            " ".join(text),
            figures,
        )
    ]
    without = [c for c in columns if c not in ultrasound]
    if present and without:
        reduced = probe_auc(matrix[without].to_numpy(), y, groups, folds, "mixed", ctx.seed)
        probes.append(
            {
                "kind": "tabular",
                "property": "all_without_ultrasound",
                **probe_figures(reduced),
                "severity": "info",
            }
        )
        drop = everything.auc - reduced.auc
        severity: Severity = "warning" if drop >= 0.05 else "info"
        findings.append(
            Finding(
                "tabular.ultrasound_with_without",
                severity,
                f"Ultrasound-derived columns add {drop:+.2f} AUC",
                f"With the {len(present)} ultrasound-derived column(s) ({', '.join(present)}): "
                f"{fmt_auc(everything)}; without them: {fmt_auc(reduced)}. "
                + (
                    "Much of the table's signal is read off the scan: report the table-only model "
                    "without these columns, and do not count them as independent of the image."
                    if severity == "warning"
                    else "They add little beyond the other columns."
                ),
                {
                    "with": probe_figures(everything),
                    "without": probe_figures(reduced),
                    "ultrasound_columns": present,
                },
            )
        )
    return findings


# --- check 6: labels and groups ---------------------------------------------------------------


def _check_labels(ctx: _Context, probes: list[dict[str, Any]]) -> list[Finding]:
    patients = ctx.cohort.patients.reset_index(drop=True)
    if "label" not in patients:
        return [
            Finding(
                "labels.balance",
                "info",
                "No label column",
                "The cohort has no labels: only duplicate checks apply.",
            )
        ]
    findings = [_label_balance(ctx, patients), _label_missing(ctx, patients)]
    conflicts = _conflicting_copies(ctx)
    if conflicts is not None:
        findings.append(conflicts)
    if "group" in patients and patients["group"].notna().any():
        findings.append(_label_groups(ctx, patients, probes))
    return findings


def _conflicting_copies(ctx: _Context) -> Finding | None:
    """Byte-identical files labelled both ways, as loading found them (``conflicting_copy``
    entries of the load report): they are gone from the cohort when the spec excludes them, so
    only the report still knows."""
    entries = [e for e in ctx.cohort.report if e.action == "conflicting_copy"]
    if not entries:
        return None
    excluded = sum(e.level == "excluded" for e in entries)
    kept = len(entries) - excluded
    title = f"{len(entries)} images are byte-identical copies of others with the opposite label"
    detail = (
        f"{len(entries)} image files are exact copies of another file of this cohort that "
        "carries the opposite label: label noise that no model can fit. "
        + (
            f"{excluded} were left out at load (images.conflicting_copies: exclude). "
            if excluded
            else ""
        )
        + (f"{kept} were kept as labelled (images.conflicting_copies: keep). " if kept else "")
        + "The load report lists each copy."
    )
    # High even when they were left out: files labelled both ways say the labelling itself is
    # unreliable here (their near copies may disagree too), which a reader must weigh.
    return Finding(
        "labels.conflicting_copies",
        "high",
        title,
        detail,
        figures={
            "images": len(entries),
            "excluded": excluded,
            "kept": kept,
            "examples": [e.found for e in entries[:10]],
        },
    )


def _label_balance(ctx: _Context, patients: pd.DataFrame) -> Finding:
    labels = patients["label"].dropna().astype(int)
    positives, total = int(labels.sum()), len(labels)
    figures: dict[str, Any] = {
        "patients_labelled": total,
        "positive": positives,
        "negative": total - positives,
    }
    frame = ctx.frame
    if len(frame) and frame["label"].notna().any():
        image_labels = frame["label"].dropna().astype(int)
        figures["images_positive"] = int(image_labels.sum())
        figures["images_negative"] = int(len(image_labels) - image_labels.sum())
        if frame["part"].notna().any():
            rate = (
                frame.dropna(subset=["label", "part"])
                .groupby("part")["label"]
                .agg(["size", "mean"])
            )
            figures["positive_rate_by_part"] = {
                str(p): round(float(r["mean"]), 4) for p, r in rate.iterrows()
            }
    if total == 0:
        return Finding(
            "labels.balance",
            "high",
            "No labelled patients",
            "No patient has a label: nothing can be trained or evaluated.",
            figures,
        )
    share = positives / total
    figures["positive_fraction"] = round(share, 4)
    minority = min(share, 1 - share)
    if minority == 0:
        severity: Severity = "high"
        detail = f"All {total} labelled patients are in one class: a classifier cannot be trained."
    elif minority < 0.1:
        severity = "warning"
        detail = (
            f"Only {minority:.1%} of labelled patients are in the minority class: accuracy "
            "is misleading; use stratified splits and report PR-AUC and sensitivity."
        )
    else:
        severity = "ok"
        detail = (
            f"{positives} positive and {total - positives} negative labelled patients "
            f"({share:.0%} positive)."
        )
    return Finding(
        "labels.balance",
        severity,
        f"Class balance: {share:.0%} positive of {total}",
        detail,
        figures,
    )


def _label_missing(ctx: _Context, patients: pd.DataFrame) -> Finding:
    missing = int(patients["label"].isna().sum())
    frame = ctx.frame
    missing_images = int(frame["label"].isna().sum()) if len(frame) else 0
    figures = {"patients_without_label": missing, "images_without_label": missing_images}
    conflicts = _image_patient_label_conflicts(ctx, patients)
    if conflicts is not None:
        figures["images_disagreeing_with_patient_label"] = conflicts
    if missing == 0 and missing_images == 0 and not conflicts:
        return Finding(
            "labels.missing",
            "ok",
            "Every patient and image has a label",
            "No missing labels.",
            figures,
        )
    parts = []
    if missing:
        parts.append(
            f"{missing} patient(s) have no label: they can be scored, not trained on or evaluated."
        )
    if missing_images:
        parts.append(f"{missing_images} image(s) have no label.")
    if conflicts:
        parts.append(
            f"{conflicts} image(s) carry an image-level label that disagrees with their "
            "patient's label; decide which one the model should learn."
        )
    severity: Severity = "warning" if conflicts else "info"
    return Finding(
        "labels.missing", severity, "Missing or conflicting labels", " ".join(parts), figures
    )


def _image_patient_label_conflicts(ctx: _Context, patients: pd.DataFrame) -> int | None:
    images = ctx.cohort.images
    if "label" not in images or not len(images):
        return None
    by_patient = (
        images["patient_id"]
        .astype(str)
        .map(patients.set_index(patients["patient_id"].astype(str))["label"])
    )
    both = images["label"].notna() & by_patient.notna()
    return int((images.loc[both, "label"].astype(int) != by_patient[both].astype(int)).sum())


def _label_groups(ctx: _Context, patients: pd.DataFrame, probes: list[dict[str, Any]]) -> Finding:
    labelled = patients[patients["label"].notna()]
    group = labelled["group"].astype("string").fillna("missing")
    rates = labelled.assign(group=group).groupby("group")["label"].agg(["size", "mean"])
    figures: dict[str, Any] = {
        "groups": {
            str(g): {"patients": int(r["size"]), "positive_rate": round(float(r["mean"]), 4)}
            for g, r in rates.iterrows()
        }
    }
    pure = rates[(rates["size"] >= 5) & rates["mean"].isin([0.0, 1.0])]
    figures["single_class_groups"] = [str(g) for g in pure.index]
    y = labelled["label"].astype(int).to_numpy()
    groups = labelled["patient_id"].astype(str).map(ctx.groups).to_numpy()
    folds = grouped_folds(y, groups, ctx.seed)
    severity: Severity = "ok"
    text = []
    if folds and rates.shape[0] > 1:
        x = group.to_numpy(dtype=object).reshape(-1, 1)
        probe = probe_auc(x, y, groups, folds, "categorical", ctx.seed)
        severity = severity_for_auc(probe.auc, SHORTCUT_HIGH, SHORTCUT_WARNING)
        figures |= probe_figures(probe)
        probes.append(
            {"kind": "group", "property": "group", **probe_figures(probe), "severity": severity}
        )
        text.append(f"The group alone predicts the label with {fmt_auc(probe)}.")
    if len(pure):
        severity = worse(severity, "warning")
        text.append(
            f"{len(pure)} group(s) with ≥5 patients are all one class "
            f"({', '.join(figures['single_class_groups'][:5])}): a model can learn the "
            "site instead of the disease; evaluate per group and hold out whole groups."
        )
    if severity == "ok":
        text.append("Label rates do not separate the groups at the audit's thresholds.")
    return Finding("labels.group", severity, "Label rate by group", " ".join(text), figures)
