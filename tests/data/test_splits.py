"""Patient-grouped, stratified splits with a locked test part."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deeppcos.data import CohortSplit, check_split, make_splits
from deeppcos.exceptions import SplitError


def _patients(n: int = 200, positive: float = 0.3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "patient_id": [f"p{i:03d}" for i in range(n)],
            "label": pd.array(rng.random(n) < positive, dtype="Int8"),
        }
    )


def test_same_seed_same_split_other_seed_other_split() -> None:
    patients = _patients()
    first = make_splits(patients, seed=3)
    assert first.assignments.equals(make_splits(patients, seed=3).assignments)
    assert not first.assignments.equals(make_splits(patients, seed=4).assignments)


def test_parts_are_disjoint_stratified_and_cover_everyone() -> None:
    patients = _patients(300)
    split = make_splits(patients, n_folds=5, test_fraction=0.2, seed=0)
    parts = split.assignments
    assert sorted(parts.index) == sorted(patients["patient_id"])
    assert set(parts) == {"test", "fold0", "fold1", "fold2", "fold3", "fold4"}
    assert 0.15 <= (parts == "test").mean() <= 0.25
    rate = patients.set_index("patient_id")["label"].astype(float).groupby(parts).mean()
    overall = patients["label"].astype(float).mean()
    assert (rate - overall).abs().max() < 0.06
    for train, val in split.folds():
        assert not set(train) & set(val)
        assert not set(train + val) & set(split.test_ids)
        assert sorted(train + val) == split.development_ids


def test_groups_never_straddle_parts() -> None:
    patients = _patients(200)
    # Patients linked in tens, as duplicate images would link them.
    groups = pd.Series([f"g{i // 10}" for i in range(200)], index=patients["patient_id"])
    split = make_splits(patients, seed=1, groups=groups)
    per_group = split.assignments.groupby(groups.reindex(split.assignments.index)).nunique()
    assert (per_group == 1).all()


def test_check_split_catches_a_straddling_group() -> None:
    patients = _patients(100)
    split = make_splits(patients, seed=0)
    ids = split.assignments.index
    a, b = ids[split.assignments == "test"][0], ids[split.assignments == "fold0"][0]
    groups = pd.Series({pid: pid for pid in ids})
    groups[b] = a  # link a test patient with a training patient after the fact
    with pytest.raises(SplitError, match=r"straddle parts"):
        check_split(split, groups)


def test_unlabelled_patients_are_set_apart() -> None:
    patients = _patients(100)
    patients.loc[:4, "label"] = pd.NA
    split = make_splits(patients, seed=0)
    assert (split.assignments == "unlabelled").sum() == 5
    assert not set(split.assignments.index[:5]) & set(split.development_ids + split.test_ids)


def test_too_few_groups_is_a_clear_error() -> None:
    patients = _patients(12, positive=0.2, seed=1)
    with pytest.raises(SplitError, match="independent groups in the smaller class"):
        make_splits(patients, n_folds=5)


def test_round_trip(tmp_path) -> None:
    split = make_splits(_patients(), seed=2)
    split.save(tmp_path / "split.json")
    loaded = CohortSplit.load(tmp_path / "split.json")
    assert loaded.assignments.to_dict() == split.assignments.to_dict()
    assert (loaded.n_folds, loaded.seed, loaded.test_fraction) == (5, 2, 0.2)


# --- groups set aside as label noise -----------------------------------------------------------


def test_patients_set_aside_are_neither_developed_nor_tested() -> None:
    patients = _patients()
    groups = pd.Series({f"p{i:03d}": f"g{i // 2}" for i in range(200)})
    aside = ["p000", "p001", "p010", "p011"]  # groups g0 and g5, whole
    split = make_splits(patients, seed=0, groups=groups, set_aside=aside)
    assert split.set_aside_ids == aside
    assert not set(aside) & set(split.development_ids + split.test_ids)
    assert (split.assignments.reindex(aside) == "label_noise").all()
    for train, valid in split.folds():
        assert not set(aside) & set(train + valid)
    # Nothing set aside: the very split made without the option.
    plain = make_splits(patients, seed=0, groups=groups)
    assert plain.assignments.equals(
        make_splits(patients, seed=0, groups=groups, set_aside=[]).assignments
    )


def test_setting_aside_part_of_a_group_or_an_unknown_patient_is_refused() -> None:
    patients = _patients()
    groups = pd.Series({f"p{i:03d}": f"g{i // 2}" for i in range(200)})
    with pytest.raises(SplitError, match=r"only partly set aside.*'g0'"):
        make_splits(patients, groups=groups, set_aside=["p000"])
    with pytest.raises(SplitError, match=r"not in the cohort: \['nobody'\]"):
        make_splits(patients, groups=groups, set_aside=["nobody"])


def test_the_reasons_travel_with_the_split_file(tmp_path) -> None:
    import dataclasses
    import json

    split = make_splits(_patients(), seed=0, set_aside=["p000"])
    plain_file = tmp_path / "plain.json"
    split.save(plain_file)
    assert "label_noise" not in json.loads(plain_file.read_text())  # absent when empty
    record = {"group": 7, "label_consistency": 0.03, "patient_ids": ["p000"]}
    noted = dataclasses.replace(split, label_noise=[record])
    noted.save(tmp_path / "split.json")
    loaded = CohortSplit.load(tmp_path / "split.json")
    assert loaded.label_noise == [record] and loaded.set_aside_ids == ["p000"]
    assert loaded.assignments.equals(split.assignments)
