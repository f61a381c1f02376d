"""How far PCOSGen's frame labels follow the images, and the ceiling that puts on a grouped
evaluation, written to benchmarks/results/pcosgen_labels.json.

    .venv/bin/python benchmarks/bench_pcosgen_labels.py [--montage PNG]

The frames load as ``configs/pcosgen.yaml`` loads them (the 64 byte-identical copies with
opposite labels already left out) and are grouped as its split groups them (exact and
near-duplicate images at 8 bits of the perceptual hash).

* **Twins**: every pair of frames is compared by the root-mean-square difference of their
  48 × 48 grey thumbnails (grey levels 0-255). Below 4 the two are the same picture to the eye
  (a re-encoding or the next frame of a still probe). For each band of difference: how many
  pairs, and how often their labels differ, beside how often two frames' labels differ when
  the label has nothing to do with the image (2 p (1 − p), p the unhealthy share).
* **Nearest twin**: for each frame whose nearest other frame is a twin, whether the two labels
  agree, beside the agreement expected by chance (p² + (1 − p)²).
* **Inside the long videos** (the three largest groups): the same count for twins inside each.
* **Ceiling of a model that cannot rank frames within a group**: each frame scored by its
  group's unhealthy share, computed on every frame (so optimistic); its ROC AUC is the most
  that any model which only tells the groups (the videos) apart can reach over these frames —
  over every frame, over the config's development part as the split makes it with the
  label-noise groups kept (``split.label_noise: keep``: the out-of-fold population), and over
  the frames outside the label-noise groups.
* **A memoriser inside each long video**: each frame of the three largest groups scored by the
  labels of its k nearest frames (thumbnail RMS) *of the same video* — what a model that had
  seen the rest of that very video, labels and all, could do (a grouped split allows less).
  ROC AUC within the video; about 0.5 means its labels cannot be learnt from its frames.
* **Label-noise groups**: the groups ``split.label_noise: exclude`` sets aside
  (:mod:`deeppcos.audit.label_noise`), with their figures.

``--montage`` writes the opposite-label twins side by side to look at (never into the repo:
the frames are the data set's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from deeppcos.audit.checks import duplicate_links, duplicate_patient_groups
from deeppcos.audit.label_noise import group_label_consistency
from deeppcos.audit.rules import NEAR_COPY_MIN_PAIRS
from deeppcos.config import load_config
from deeppcos.data.configured import cohort_for
from deeppcos.pipeline.training import development_split
from deeppcos.stats import weighted_auc

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "pcosgen_labels.json"
CONFIG = REPO / "configs" / "pcosgen.yaml"
THUMB = 48
TWIN_RMS = 4.0
BANDS = [(0, 2), (2, 4), (4, 8), (8, 16), (16, 32), (32, 256)]


def thumbnails(paths: list[str]) -> np.ndarray:
    rows = []
    for path in paths:
        grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if grey is None:
            raise FileNotFoundError(f"{path}: not readable")
        rows.append(cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel())
    return np.asarray(rows, dtype=np.float64)


def rms_differences(thumbs: np.ndarray) -> np.ndarray:
    """Pairwise RMS grey-level difference (n × n; the diagonal is infinite)."""
    norms = (thumbs**2).sum(axis=1)
    squared = norms[:, None] + norms[None, :] - 2.0 * thumbs @ thumbs.T
    rms = np.sqrt(np.clip(squared, 0.0, None) / thumbs.shape[1])
    np.fill_diagonal(rms, np.inf)
    return rms


def twin_bands(rms: np.ndarray, labels: np.ndarray) -> list[dict]:
    upper = np.triu_indices(len(labels), 1)
    distance = rms[upper]
    differ = labels[upper[0]] != labels[upper[1]]
    out = []
    for low, high in BANDS:
        band = (distance >= low) & (distance < high)
        out.append(
            {
                "rms_from": low,
                "rms_to": high,
                "pairs": int(band.sum()),
                "labels_differ": round(float(differ[band].mean()), 3) if band.any() else None,
            }
        )
    return out


def nearest_twins(rms: np.ndarray, labels: np.ndarray, p: float) -> dict:
    nearest = rms.argmin(axis=1)
    has_twin = rms.min(axis=1) < TWIN_RMS
    agree = labels[has_twin] == labels[nearest[has_twin]]
    return {
        "frames_with_a_twin": int(has_twin.sum()),
        "twin_label_agrees": round(float(agree.mean()), 3),
        "agreement_if_labels_ignored_the_image": round(p**2 + (1 - p) ** 2, 3),
    }


def group_ceiling(labels: np.ndarray, groups: np.ndarray) -> dict:
    share = pd.Series(labels).groupby(groups).transform("mean").to_numpy()
    sizes = pd.Series(groups).value_counts()
    return {
        "groups": len(sizes),
        "largest_groups": [int(s) for s in sizes.head(5)],
        "roc_auc_scored_by_group_share": round(weighted_auc(labels, share), 3),
        "unhealthy_share_of_largest_groups": [
            round(float(labels[groups == g].mean()), 3) for g in sizes.index[:5]
        ],
    }


def twins_in_largest_groups(rms: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> list[dict]:
    """Inside each of the three largest groups (the long videos): its twin pairs and how often
    their labels differ, beside chance inside that group (2 q (1 − q), q its unhealthy share)."""
    out = []
    for group in pd.Series(groups).value_counts().index[:3]:
        members = np.flatnonzero(groups == group)
        inside = rms[np.ix_(members, members)]
        upper = np.triu_indices(len(members), 1)
        twins = inside[upper] < TWIN_RMS
        own = labels[members]
        differ = own[upper[0]][twins] != own[upper[1]][twins]
        q = float(own.mean())
        out.append(
            {
                "frames": len(members),
                "unhealthy_share": round(q, 3),
                "twin_pairs": int(twins.sum()),
                "twin_labels_differ": round(float(differ.mean()), 3) if twins.any() else None,
                "differ_if_labels_ignored_the_image": round(2 * q * (1 - q), 3),
            }
        )
    return out


def same_video_memoriser(
    rms: np.ndarray, labels: np.ndarray, groups: np.ndarray, ks: tuple[int, ...] = (1, 5, 15)
) -> list[dict]:
    """Within-video ROC AUC of a k-nearest-frames vote restricted to the same video."""
    out = []
    for group in pd.Series(groups).value_counts().index[:3]:
        members = np.flatnonzero(groups == group)
        inside = rms[np.ix_(members, members)]  # the diagonal is infinite: never one's own
        nearest = np.argsort(inside, axis=1)
        own = labels[members]
        out.append(
            {
                "frames": len(members),
                **{
                    f"within_video_auc_k{k}": round(
                        weighted_auc(own, own[nearest[:, :k]].mean(1)), 3
                    )
                    for k in ks
                },
            }
        )
    return out


def development_ceilings(
    config: Any, cohort: Any, ids: list[str], labels: np.ndarray, groups: np.ndarray
) -> dict:
    """The group-share score's ROC AUC over the development part the config's split makes with
    the label-noise groups kept, and over the frames outside the label-noise groups."""
    kept = config.model_copy(
        update={"split": config.split.model_copy(update={"label_noise": "keep"})}
    )
    split, _ = development_split(kept, cohort)
    share = pd.Series(labels).groupby(groups).transform("mean").to_numpy()
    develop = np.isin(ids, split.development_ids)
    excluded, _ = development_split(config, cohort)
    clean = ~np.isin(ids, excluded.set_aside_ids)
    return {
        "development_frames_label_noise_kept": int(develop.sum()),
        "roc_auc_scored_by_group_share_development": round(
            weighted_auc(labels[develop], share[develop]), 3
        ),
        "frames_outside_label_noise_groups": int(clean.sum()),
        "roc_auc_scored_by_group_share_outside_label_noise": round(
            weighted_auc(labels[clean], share[clean]), 3
        ),
        "label_noise_groups": [
            {k: v for k, v in record.items() if k != "patient_ids"}
            for record in excluded.label_noise
        ],
        "groups_judged": judged_groups(config, cohort),
    }


def judged_groups(config: Any, cohort: Any) -> list[dict]:
    """Every duplicate group (at the config's bits) with enough near-copy pairs to be judged,
    with its label consistency (None: labelled one way throughout, so it cannot disagree)."""
    links = duplicate_links(cohort, near_duplicate_threshold=config.split.near_duplicate_bits)
    labels = cohort.patients.set_index(cohort.patients["patient_id"].astype(str))["label"]
    table = group_label_consistency(links.pairs, links.image_patients, links.groups, labels)
    judged = table[table["pairs"] >= NEAR_COPY_MIN_PAIRS]
    return [
        {
            "patients": int(row.patients),
            "near_copy_pairs": int(row.pairs),
            "positive_share": round(float(row.positive_share), 3),
            "labels_differ": round(float(row.labels_differ), 3),
            "label_consistency": None
            if pd.isna(row.label_consistency)
            else round(float(row.label_consistency), 3),
            "noisy": bool(row.noisy),
        }
        for row in judged.itertuples(index=False)
    ]


def montage(rms: np.ndarray, labels: np.ndarray, paths: list[str], target: Path) -> int:
    upper = np.triu_indices(len(labels), 1)
    twins = (rms[upper] < TWIN_RMS) & (labels[upper[0]] != labels[upper[1]])
    pairs = list(zip(upper[0][twins], upper[1][twins], strict=True))[:12]
    tiles = []
    for i, j in pairs:
        images = [cv2.resize(cv2.imread(paths[k]), (160, 160)) for k in (i, j)]
        for image, k in zip(images, (i, j), strict=True):
            text = "unhealthy" if labels[k] else "healthy"
            cv2.putText(image, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1)
        tiles.append(np.hstack([*images, np.zeros((160, 8, 3), np.uint8)]))
    if tiles:
        rows = [np.hstack(tiles[k : k + 3]) for k in range(0, len(tiles) - len(tiles) % 3, 3)]
        cv2.imwrite(str(target), np.vstack(rows) if rows else tiles[0])
    return len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--montage", type=Path, help="write opposite-label twins to this PNG")
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config(CONFIG)
    cohort = cohort_for(config)
    images = cohort.images.drop_duplicates("patient_id").set_index("patient_id")
    patients = cohort.patients.set_index("patient_id")
    ids = [pid for pid in patients.index if pid in images.index]
    labels = patients.loc[ids, "label"].astype(int).to_numpy()
    paths = [str(images.loc[pid, "path"]) for pid in ids]
    groups = duplicate_patient_groups(
        cohort, near_duplicate_threshold=config.split.near_duplicate_bits
    )
    p = float(labels.mean())
    rms = rms_differences(thumbnails(paths))
    group_of = groups.reindex(ids).to_numpy()
    results = {
        "frames": len(ids),
        "unhealthy_share": round(p, 3),
        "labels_differ_if_they_ignored_the_image": round(2 * p * (1 - p), 3),
        "twin_threshold_rms": TWIN_RMS,
        "pairs_by_difference": twin_bands(rms, labels),
        "nearest_twin": nearest_twins(rms, labels, p),
        "split_groups": {
            "near_duplicate_bits": config.split.near_duplicate_bits,
            **group_ceiling(labels, group_of),
            "twins_inside_the_largest_groups": twins_in_largest_groups(rms, labels, group_of),
            "same_video_memoriser": same_video_memoriser(rms, labels, group_of),
            **development_ceilings(config, cohort, ids, labels, group_of),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.montage:
        results["montage_pairs"] = montage(rms, labels, paths, args.montage)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
