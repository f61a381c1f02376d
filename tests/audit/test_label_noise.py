"""Duplicate groups whose near-copies' labels ignore the picture (deeppcos.audit.label_noise)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from deeppcos.audit.checks import audit_cohort
from deeppcos.audit.label_noise import (
    group_label_consistency,
    label_noise_records,
    noisy_groups,
)
from tests.audit.test_checks import finding, make_cohort, scan, write


def _group(name: str, labels: list[int], bits: int = 0) -> tuple[pd.DataFrame, dict, dict]:
    """One duplicate group: a patient per label, one image each, every pair ``bits`` apart."""
    patients = {f"{name}{k}": label for k, label in enumerate(labels)}
    pairs = pd.DataFrame(
        [
            {"image_a": f"i-{a}", "image_b": f"i-{b}", "distance": bits}
            for a, b in itertools.combinations(patients, 2)
        ]
    )
    return pairs, patients, {p: name for p in patients}


def _table(*groups: tuple[pd.DataFrame, dict, dict]) -> pd.DataFrame:
    pairs = pd.concat([g[0] for g in groups], ignore_index=True)
    labels = pd.Series({p: v for g in groups for p, v in g[1].items()}, dtype="Float64")
    group_of = pd.Series({p: v for g in groups for p, v in g[2].items()})
    image_patients = pd.Series({f"i-{p}": p for p in labels.index})
    return group_label_consistency(pairs, image_patients, group_of, labels)


def test_a_group_labelled_at_random_is_noise_and_a_consistent_one_is_not() -> None:
    # 10 copies of one picture, 5 labelled each way: 25 of 45 pairs disagree (chance 50%).
    table = _table(_group("video", [0, 1] * 5), _group("clean", [1] * 8))
    video = table.set_index("group").loc["video"]
    assert video["pairs"] == 45 and video["patients"] == 10
    assert video["labels_differ"] == 25 / 45 and video["differ_by_chance"] == 0.5
    assert np.isclose(video["label_consistency"], 1 - (25 / 45) / 0.5)
    assert bool(video["noisy"])
    clean = table.set_index("group").loc["clean"]
    # All one label: it cannot disagree, so its consistency is undefined, never noise.
    assert pd.isna(clean["label_consistency"]) and not bool(clean["noisy"])
    assert noisy_groups(table)["group"].tolist() == ["video"]


def test_each_noisy_group_is_one_record_with_its_patients() -> None:
    groups = (_group("video", [0, 1] * 5), _group("clean", [1] * 8))
    pairs = pd.concat([g[0] for g in groups], ignore_index=True)
    labels = pd.Series({p: v for g in groups for p, v in g[1].items()}, dtype="Float64")
    group_of = pd.Series({p: v for g in groups for p, v in g[2].items()})
    image_patients = pd.Series({f"i-{p}": p for p in labels.index})
    (record,) = label_noise_records(pairs, image_patients, group_of, labels)
    assert record["group"] == "video" and record["near_copy_pairs"] == 45
    assert record["patient_ids"] == [f"video{k}" for k in range(10)]
    assert record["label_consistency"] == round(1 - (25 / 45) / 0.5, 4)


def test_few_pairs_far_pairs_and_unlabelled_patients_are_not_judged() -> None:
    few = _group("few", [0, 1, 0, 1, 0, 1, 0, 1])  # 28 pairs: under the 30 the audit needs
    far = _group("far", [0, 1] * 5, bits=4)  # beyond the 2 bits of a near-copy
    table = _table(few, far)
    assert table["group"].tolist() == ["few"] and not table["noisy"].any()
    pairs, labels, group_of = _group("half", [0, 1] * 5)
    labels = {p: (v if k < 6 else None) for k, (p, v) in enumerate(labels.items())}
    table = _table((pairs, labels, group_of))
    assert table.loc[0, "pairs"] == 15 and table.loc[0, "patients"] == 6


def test_pairs_of_one_patient_count_for_nothing() -> None:
    pairs, labels, _ = _group("one", [0, 1] * 5)
    image_patients = pd.Series({f"i-{p}": "same-woman" for p in labels})
    table = group_label_consistency(
        pairs, image_patients, pd.Series({"same-woman": "one"}), pd.Series({"same-woman": 1.0})
    )
    assert table.empty


def test_the_audit_names_the_noisy_group(tmp_path: Path) -> None:
    """One picture re-encoded for ten patients labelled both ways (a video labelled frame by
    frame), beside ten pictures copied once with agreeing labels."""
    rows = []
    pixels = scan(900)
    for k in range(10):
        rows.append(
            {
                "image_id": f"v{k}",
                "patient_id": f"v{k}",
                "path": write(tmp_path / f"v{k}.jpg", pixels, quality=60 + 3 * k),
                "label": k % 2,
            }
        )
    for k in range(10):
        for copy in ("a", "b"):
            rows.append(
                {
                    "image_id": f"{copy}{k}",
                    "patient_id": f"{copy}{k}",
                    "path": write(tmp_path / f"{copy}{k}.png", scan(700 + k)),
                    "label": k % 2,
                }
            )
    check = finding(audit_cohort(make_cohort(rows)), "labels.near_copy_agreement")
    noisy = check.figures["noisy_groups"]
    assert len(noisy) == 1 and noisy[0]["patients"] == 10 and noisy[0]["pairs"] == 45
    assert check.severity in ("warning", "high")
    assert "split.label_noise: exclude" in check.detail
