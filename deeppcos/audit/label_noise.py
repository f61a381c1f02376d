"""Duplicate groups whose near-copies' labels ignore the picture.

Inside one group of linked patients (the split's duplicate groups), two near-copies — images at
most ``NEAR_COPY_BITS`` apart in the perceptual hash, of different patients — show the same
thing, so a label that describes the image should agree between them. The group's *label
consistency* is 1 − (share of its near-copy pairs labelled differently) / (the share two of its
patients' labels differ by chance, 2 q (1 − q), q its positive share): 1 when near-copies always
agree, about 0 when their labels have nothing to do with the image. A group with at least
``NEAR_COPY_MIN_PAIRS`` such pairs and a consistency under ``LABEL_CONSISTENCY_HIGH`` (the
audit's own thresholds, in :mod:`deeppcos.audit.rules`) is *label noise*: no image model can
rank its patients, and a grouped evaluation that holds it measures the noise.

PCOSGen's three long uterus videos (1,571 of 3,136 frames, each labelled healthy and
unhealthy frame by frame) are such groups, at consistency −0.03 to 0.06; the other groups of
that set with enough pairs never disagree. ``split.label_noise: exclude`` sets noisy groups aside
(neither trained on nor evaluated; listed in the run's load report and ``split.json``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deeppcos.audit.rules import LABEL_CONSISTENCY_HIGH, NEAR_COPY_BITS, NEAR_COPY_MIN_PAIRS

__all__ = [
    "CONSISTENCY_COLUMNS",
    "group_label_consistency",
    "label_noise_records",
    "noisy_groups",
]

CONSISTENCY_COLUMNS = [
    "group",
    "patients",
    "positive_share",
    "pairs",
    "labels_differ",
    "differ_by_chance",
    "label_consistency",
    "noisy",
]


def group_label_consistency(
    pairs: pd.DataFrame,
    image_patients: pd.Series,
    patient_groups: pd.Series,
    labels: pd.Series,
) -> pd.DataFrame:
    """Each duplicate group's near-copy label consistency (see the module notes), one row per
    group that holds at least one usable pair, largest first.

    ``pairs``: the audit's close pairs (``image_a``, ``image_b``, ``distance`` in bits);
    ``image_patients``: image_id → patient_id; ``patient_groups``: patient_id → group;
    ``labels``: patient_id → 0/1 (missing labels are left out)."""
    close = pairs[pairs["distance"] <= NEAR_COPY_BITS]
    patient_a = image_patients.reindex(close["image_a"]).to_numpy()
    patient_b = image_patients.reindex(close["image_b"]).to_numpy()
    known = labels.dropna().astype(float)
    label_a = known.reindex(patient_a).to_numpy()
    label_b = known.reindex(patient_b).to_numpy()
    group_a = patient_groups.reindex(patient_a).to_numpy()
    group_b = patient_groups.reindex(patient_b).to_numpy()
    usable = (
        (patient_a != patient_b)
        & ~np.isnan(label_a)
        & ~np.isnan(label_b)
        & pd.notna(group_a)
        & (group_a == group_b)
    )
    if not usable.any():
        return pd.DataFrame(columns=CONSISTENCY_COLUMNS)
    per_pair = pd.DataFrame(
        {"group": group_a[usable], "differ": label_a[usable] != label_b[usable]}
    )
    table = per_pair.groupby("group")["differ"].agg(pairs="size", labels_differ="mean")
    members = known.groupby(patient_groups.reindex(known.index).to_numpy())
    table["patients"] = members.size().reindex(table.index)
    table["positive_share"] = members.mean().reindex(table.index)
    q = table["positive_share"]
    table["differ_by_chance"] = 2 * q * (1 - q)
    # A group labelled all one way cannot disagree: its consistency is undefined, not noise.
    chance = table["differ_by_chance"].where(table["differ_by_chance"] > 0)
    table["label_consistency"] = 1 - table["labels_differ"] / chance
    table["noisy"] = (table["pairs"] >= NEAR_COPY_MIN_PAIRS) & (
        table["label_consistency"] < LABEL_CONSISTENCY_HIGH
    )
    table = table.rename_axis("group").reset_index()
    return table.sort_values(["patients", "group"], ascending=[False, True], kind="stable")[
        CONSISTENCY_COLUMNS
    ].reset_index(drop=True)


def noisy_groups(consistency: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`group_label_consistency` judged label noise."""
    return consistency[consistency["noisy"].astype(bool)].reset_index(drop=True)


def label_noise_records(
    pairs: pd.DataFrame,
    image_patients: pd.Series,
    patient_groups: pd.Series,
    labels: pd.Series,
) -> list[dict[str, Any]]:
    """One JSON record per noisy group (arguments as :func:`group_label_consistency`): its
    figures and its patients, as ``split.json`` keeps them."""
    table = noisy_groups(group_label_consistency(pairs, image_patients, patient_groups, labels))
    members = patient_groups.groupby(patient_groups.to_numpy()).groups
    return [
        {
            "group": int(row.group) if isinstance(row.group, int | np.integer) else str(row.group),
            "patients": int(row.patients),
            "positive_share": round(float(row.positive_share), 4),
            "near_copy_pairs": int(row.pairs),
            "labels_differ": round(float(row.labels_differ), 4),
            "differ_by_chance": round(float(row.differ_by_chance), 4),
            "label_consistency": round(float(row.label_consistency), 4),
            "patient_ids": sorted(str(p) for p in members[row.group]),
        }
        for row in table.itertuples(index=False)
    ]
