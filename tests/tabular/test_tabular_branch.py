"""The tabular branch on tiny synthetic cohorts: quality, missing data, determinism, persistence,
feature exclusion, monotone constraints, early stopping and errors that name what is wrong."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from deeppcos.data import Cohort, make_splits
from deeppcos.exceptions import DataFileError, NotFittedError, SchemaError
from deeppcos.tabular import TabularBranch, TabularParams, inner_validation_split


def _labels(cohort: Cohort, ids: list[str]) -> pd.Series:
    return cohort.patients.set_index("patient_id").loc[ids, "label"].astype(int)


def _no_tabular(cohort: Cohort) -> list[str]:
    empty = cohort.patients[cohort.feature_columns].isna().all(axis=1)
    return list(cohort.patients.loc[empty, "patient_id"])


@pytest.fixture(scope="module")
def split(synthetic: Cohort):
    return make_splits(synthetic.patients, n_folds=5, test_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def fitted(synthetic: Cohort, split) -> TabularBranch:
    train, val = split.folds()[0]
    return TabularBranch(seed=0).fit(synthetic, train, val)


def test_held_out_auc_beats_chance_by_far(synthetic: Cohort, split) -> None:
    train = split.development_ids  # every fold; the locked test part stays unseen
    branch = TabularBranch(seed=0).fit(synthetic, train)
    scores = branch.predict_proba(synthetic, split.test_ids).dropna()
    assert roc_auc_score(_labels(synthetic, list(scores.index)), scores) > 0.75


def test_patients_without_tabular_data_get_nan_and_are_not_trained_on(
    synthetic: Cohort, fitted: TabularBranch, split
) -> None:
    empty = _no_tabular(synthetic)
    assert empty, "the synthetic cohort should hold patients without a table"
    ids = list(synthetic.patients["patient_id"])
    scores = fitted.predict_proba(synthetic, ids)
    assert list(scores.index) == ids  # the order asked for
    assert scores[empty].isna().all()
    assert scores.drop(index=empty).notna().all()
    assert scores.dropna().between(0, 1).all()
    train = split.folds()[0][0]
    assert fitted.n_train_ == len(set(train) - set(empty))


def test_same_seed_same_predictions_other_seed_other_ones(synthetic: Cohort, split) -> None:
    train, val = split.folds()[1]
    first = TabularBranch(seed=3).fit(synthetic, train, val).predict_proba(synthetic)
    again = TabularBranch(seed=3).fit(synthetic, train, val).predict_proba(synthetic)
    other = TabularBranch(seed=4).fit(synthetic, train, val).predict_proba(synthetic)
    pd.testing.assert_series_equal(first, again)
    assert not first.equals(other)  # row and column subsampling follow the seed


def test_save_and_load_round_trip(synthetic: Cohort, fitted: TabularBranch, tmp_path) -> None:
    fitted.save(tmp_path / "tabular")
    assert sorted(p.name for p in (tmp_path / "tabular").iterdir()) == [
        "model.ubj",
        "tabular_branch.json",
    ]
    meta = json.loads((tmp_path / "tabular" / "tabular_branch.json").read_text())
    assert meta["feature_names"] == fitted.feature_names_
    assert meta["params"] == fitted.params.model_dump()
    loaded = TabularBranch.load(tmp_path / "tabular")
    pd.testing.assert_series_equal(loaded.predict_proba(synthetic), fitted.predict_proba(synthetic))
    assert loaded.best_iteration_ == fitted.best_iteration_
    assert loaded.history_ == fitted.history_
    assert loaded.seed == fitted.seed and loaded.params == fitted.params


def test_load_says_what_is_missing(tmp_path) -> None:
    with pytest.raises(DataFileError, match="metadata not found"):
        TabularBranch.load(tmp_path)
    (tmp_path / "tabular_branch.json").write_text('{"format": "something else"}')
    with pytest.raises(DataFileError, match="not a deeppcos tabular branch"):
        TabularBranch.load(tmp_path)


def test_exclude_ultrasound_drops_every_scan_derived_column(synthetic_us: Cohort) -> None:
    ids = list(synthetic_us.patients["patient_id"])
    scan = {
        "follicle_count_left",
        "follicle_count_right",
        "follicle_count_max",
        "follicle_count_total",
        "ovarian_volume_left_ml",
        "ovarian_volume_right_ml",
    }
    params = TabularParams(n_estimators=20)
    with_scan = TabularBranch(params).fit(synthetic_us, ids)
    assert scan <= set(with_scan.feature_names_)
    without = TabularBranch(params.model_copy(update={"exclude_ultrasound": True}))
    without.fit(synthetic_us, ids)
    assert not scan & set(without.feature_names_)
    assert "amh_ng_ml" in without.feature_names_


def _sweep(cohort: Cohort, patient_id: str, column: str, values: np.ndarray) -> Cohort:
    """A cohort of copies of one patient, identical but for ``column``."""
    row = cohort.patients[cohort.patients["patient_id"] == patient_id]
    copies = pd.concat([row] * len(values), ignore_index=True)
    copies["patient_id"] = [f"sweep{i}" for i in range(len(values))]
    copies[column] = values
    return dataclasses.replace(cohort, patients=copies, images=cohort.images.iloc[:0])


def _shuffled_labels(cohort: Cohort, seed: int = 0) -> Cohort:
    """The same cohort with labels permuted: pure noise, which trees happily overfit."""
    noisy = cohort.patients.copy()
    rng = np.random.default_rng(seed)
    noisy["label"] = pd.array(rng.permutation(noisy["label"].to_numpy()), dtype="Int8")
    return dataclasses.replace(cohort, patients=noisy)


def _violations(branch: TabularBranch, cohort: Cohort, column: str, direction: int) -> int:
    values = np.linspace(0.05, 30.0, 60) if column == "amh_ng_ml" else np.linspace(5, 200, 60)
    complete = cohort.patients.dropna(subset=cohort.feature_columns)
    count = 0
    for patient_id in complete["patient_id"].iloc[:5]:
        scores = branch.predict_proba(_sweep(cohort, patient_id, column, values)).to_numpy()
        count += int((direction * np.diff(scores) < -1e-7).sum())
    return count


@pytest.mark.parametrize(("column", "direction"), [("amh_ng_ml", 1), ("shbg_nmol_l", -1)])
def test_monotone_constraints_are_enforced(
    synthetic: Cohort, split, column: str, direction: int
) -> None:
    # On shuffled labels an unconstrained model bends every which way, so a pass below means the
    # constraint did the work, not the data.
    noisy = _shuffled_labels(synthetic)
    params = TabularParams(n_estimators=150)
    free = TabularBranch(params).fit(noisy, split.development_ids)
    assert _violations(free, synthetic, column, direction) > 0
    bound = TabularBranch(params.model_copy(update={"monotone": True}))
    bound.fit(noisy, split.development_ids)
    assert bound.monotone_constraints_[column] == direction
    assert _violations(bound, synthetic, column, direction) == 0


@pytest.mark.parametrize("metric", ["logloss", "auc"])
def test_early_stopping_stops_on_a_noisy_problem(synthetic: Cohort, split, metric: str) -> None:
    cohort = _shuffled_labels(synthetic)
    params = TabularParams(n_estimators=300, early_stopping_rounds=20, early_stopping_metric=metric)
    train, val = split.folds()[0]
    branch = TabularBranch(params).fit(cohort, train, val)
    rounds = len(branch.history_["val"]["auc"])
    assert rounds < params.n_estimators
    assert branch.best_iteration_ + 1 + params.early_stopping_rounds == rounds
    assert branch.booster_.num_boosted_rounds() == branch.n_trees_ == branch.best_iteration_ + 1
    assert set(branch.history_) == {"train", "val"}
    assert set(branch.history_["train"]) == {"auc", "logloss"}


def test_without_validation_the_fixed_number_of_rounds_is_trained(synthetic: Cohort, split):
    branch = TabularBranch(TabularParams(n_estimators=40)).fit(synthetic, split.folds()[0][0])
    assert branch.n_trees_ == 40 and set(branch.history_) == {"train"}


def test_a_missing_feature_is_named(synthetic: Cohort, fitted: TabularBranch) -> None:
    lacking = dataclasses.replace(synthetic, patients=synthetic.patients.drop(columns="amh_ng_ml"))
    with pytest.raises(SchemaError, match="amh_ng_ml"):
        fitted.predict_proba(lacking)


def test_one_class_and_unknown_ids_are_schema_errors(synthetic: Cohort) -> None:
    table = synthetic.patients
    negatives = list(table.loc[table["label"] == 0, "patient_id"])
    with pytest.raises(SchemaError, match="one class"):
        TabularBranch().fit(synthetic, negatives)
    with pytest.raises(SchemaError, match="nobody"):
        TabularBranch().fit(synthetic, [*negatives, "nobody"])
    ids = list(table["patient_id"])
    with pytest.raises(SchemaError, match="both the training and the validation"):
        TabularBranch().fit(synthetic, ids[:100], ids[90:])


def test_unfitted_branch_and_unknown_params_are_refused(synthetic: Cohort) -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        TabularBranch().predict_proba(synthetic)
    with pytest.raises(ValidationError):
        TabularParams(max_dept=4)  # a typo is an error, not a silent default


def test_inner_validation_split_stays_inside_the_training_ids(synthetic: Cohort, split) -> None:
    train = split.folds()[0][0]
    inner_train, inner_val = inner_validation_split(synthetic, train, fraction=0.2, seed=0)
    assert not set(inner_train) & set(inner_val)
    assert set(inner_train) | set(inner_val) <= set(train)
    assert 0.15 <= len(inner_val) / len(train) <= 0.25
    assert _labels(synthetic, inner_val).nunique() == 2
