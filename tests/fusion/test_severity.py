"""The ordinal severity head (Frank & Hall cumulative thresholds), both kinds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from deeppcos.exceptions import (
    ConfigError,
    DataFileError,
    NotFittedError,
    SchemaError,
)
from deeppcos.fusion.severity import OrdinalHead, _Constant

KINDS = ["xgboost", "logistic"]
LEVELS = ["none", "mild", "moderate", "severe"]


def _ordinal_data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A latent score (linear in 4 of 6 features) plus noise, cut into 4 grades; 10% NaN."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    latent = x @ np.array([1.0, 0.8, -0.6, 0.4, 0.0, 0.0]) + rng.normal(scale=0.6, size=n)
    grades = np.digitize(latent, [-0.4, 0.5, 1.3])  # roughly 35/30/20/15%
    x[rng.random(x.shape) < 0.1] = np.nan
    return pd.DataFrame(x, columns=[f"f{i}" for i in range(6)]), grades


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    x_train, y_train = _ordinal_data(500, seed=0)
    x_test, y_test = _ordinal_data(300, seed=1)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


@pytest.fixture(scope="module", params=KINDS)
def fitted(request, data) -> OrdinalHead:
    return OrdinalHead(request.param).fit(data["x_train"], data["y_train"])


def _qwk(truth: np.ndarray, predicted: np.ndarray) -> float:
    return cohen_kappa_score(truth, predicted.astype(int), weights="quadratic")


def test_beats_a_constant_predictor_on_quadratic_weighted_kappa(fitted, data):
    truth = data["y_test"]
    mode = np.bincount(data["y_train"]).argmax()
    constant = _qwk(truth, np.full(len(truth), mode))
    head = _qwk(truth, fitted.predict(data["x_test"]))
    assert constant == pytest.approx(0.0)
    assert head > constant + 0.5, (fitted.kind, head)
    # The expected grade ranks patients too.
    expected = fitted.predict_expected(data["x_test"])
    assert np.corrcoef(expected, truth)[0, 1] > 0.7


def test_probabilities_are_valid_and_cumulative_ones_monotone(fitted, data):
    proba = fitted.predict_proba(data["x_test"])
    assert proba.shape == (300, 4)
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    cumulative = fitted.predict_cumulative(data["x_test"])
    assert cumulative.shape == (300, 3)
    assert (np.diff(cumulative, axis=1) <= 0).all()
    np.testing.assert_allclose(cumulative, 1 - np.cumsum(proba, axis=1)[:, :3], atol=1e-12)
    expected = fitted.predict_expected(data["x_test"])
    assert ((expected >= 0) & (expected <= 3)).all()
    assert fitted.levels_ == [0, 1, 2, 3] and fitted.n_classes_ == 4
    assert fitted.feature_names_ == [f"f{i}" for i in range(6)]
    assert fitted.n_train_ == 500 and sum(fitted.class_counts_) == 500


def test_crossing_thresholds_are_made_monotone(fitted, data):
    head = OrdinalHead(fitted.kind).fit(data["x_train"], data["y_train"])
    # Independent thresholds can cross: P(>1) = 0.5 above P(>0) = 0.3.
    head.thresholds_ = [_Constant(0.3), _Constant(0.5), _Constant(0.1)]
    np.testing.assert_allclose(head.predict_cumulative(data["x_test"][:2]), [[0.3, 0.3, 0.1]] * 2)
    np.testing.assert_allclose(head.predict_proba(data["x_test"][:2]), [[0.7, 0.0, 0.2, 0.1]] * 2)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_without_a_grade_are_ignored_in_fit(kind, data):
    x, y = data["x_train"], data["y_train"]
    ungraded = np.arange(len(y)) % 5 == 0
    # Garbage features and a missing grade: if these rows were used, the model would change.
    noisy_x = x.copy()
    noisy_x.loc[ungraded] = 1e6
    grades = pd.Series(pd.Categorical.from_codes(y, LEVELS, ordered=True))
    grades[ungraded] = np.nan
    with_missing = OrdinalHead(kind).fit(noisy_x, grades)
    graded_only = OrdinalHead(kind).fit(x[~ungraded], grades[~ungraded])
    assert with_missing.n_train_ == graded_only.n_train_ == int((~ungraded).sum())
    np.testing.assert_array_equal(
        with_missing.predict_proba(data["x_test"]), graded_only.predict_proba(data["x_test"])
    )
    assert with_missing.levels_ == LEVELS
    assert set(with_missing.predict(data["x_test"])) <= set(LEVELS)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_gives_identical_predictions(kind, data, tmp_path):
    grades = [LEVELS[g] for g in data["y_train"]]
    head = OrdinalHead(kind, seed=3).fit(data["x_train"], grades, levels=LEVELS)
    folder = head.save(tmp_path / "head")
    files = sorted(p.name for p in folder.iterdir())
    if kind == "xgboost":
        assert files == [
            "ordinal_head.json",
            "threshold_0.ubj",
            "threshold_1.ubj",
            "threshold_2.ubj",
        ]
    else:
        assert files == ["ordinal_head.json"]
    meta = json.loads((folder / "ordinal_head.json").read_text())
    assert meta["levels"] == LEVELS and meta["params"]["kind"] == kind
    loaded = OrdinalHead.load(folder)
    np.testing.assert_array_equal(
        loaded.predict_proba(data["x_test"]), head.predict_proba(data["x_test"])
    )
    assert list(loaded.predict(data["x_test"])) == list(head.predict(data["x_test"]))
    assert loaded.get_params() == head.get_params()
    assert loaded.levels_ == LEVELS and loaded.class_counts_ == head.class_counts_


@pytest.mark.parametrize("kind", KINDS)
def test_a_grade_absent_from_training_gets_zero_probability(kind, data):
    y = np.minimum(data["y_train"], 2)  # nobody "severe"
    head = OrdinalHead(kind).fit(data["x_train"], y, levels=[0, 1, 2, 3])
    assert head.constant_thresholds_ == [2]
    proba = head.predict_proba(data["x_test"])
    assert (proba[:, 3] == 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)


def test_columns_are_matched_by_name_and_arrays_by_position(data):
    head = OrdinalHead("logistic").fit(data["x_train"], data["y_train"])
    x = data["x_test"]
    reordered = x[list(reversed(x.columns))].assign(extra=1.0)
    np.testing.assert_array_equal(head.predict_proba(reordered), head.predict_proba(x))
    np.testing.assert_array_equal(head.predict_proba(x.to_numpy()), head.predict_proba(x))
    with pytest.raises(SchemaError, match="f0"):
        head.predict_proba(x.drop(columns="f0"))
    with pytest.raises(SchemaError, match="6"):
        head.predict_proba(x.to_numpy()[:, :5])


def test_all_missing_column_and_tiny_inputs_with_logistic():
    x = np.array([[0.1, np.nan], [0.4, np.nan], [0.9, np.nan], [1.5, np.nan], [2.0, np.nan]])
    head = OrdinalHead("logistic").fit(x, [0, 0, 1, 2, 2])
    proba = head.predict_proba(np.array([[np.nan, np.nan], [3.0, 5.0]]))
    assert np.isfinite(proba).all() and (proba >= 0).all()
    assert head.predict(np.array([[3.0, np.nan]]))[0] == 2


@pytest.mark.parametrize(
    ("y", "levels", "error", "match"),
    [
        (["b", "a", "b", "a"], None, ConfigError, "levels"),
        ([0, 1, 7, 1], ["a", "b"], SchemaError, "not among"),
        ([0, 0, 0, 0], None, ConfigError, "at least 2"),
        ([np.nan] * 4, [0, 1], SchemaError, "no row"),
        ([0.5, 1, 0, 1], None, ConfigError, "integer"),
        ([0, 1, 0], None, SchemaError, "3 grades for 4 rows"),
    ],
)
def test_bad_grades_are_refused(y, levels, error, match):
    with pytest.raises(error, match=match):
        OrdinalHead().fit(np.zeros((4, 2)), y, levels=levels)


def test_bad_params_and_unfitted_use_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="kind"):
        OrdinalHead("forest").fit(np.zeros((4, 1)), [0, 1, 0, 1])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_estimators"):
        OrdinalHead(n_estimators=0).fit(np.zeros((4, 1)), [0, 1, 0, 1])
    with pytest.raises(NotFittedError, match="not fitted"):
        OrdinalHead().predict_proba(np.zeros((1, 1)))
    with pytest.raises(DataFileError, match="not found"):
        OrdinalHead.load(tmp_path)


def test_load_refuses_tampered_files(data, tmp_path):
    head = OrdinalHead("xgboost", n_estimators=5).fit(data["x_train"], data["y_train"])
    folder = head.save(tmp_path / "head")
    meta_path = folder / "ordinal_head.json"
    meta = json.loads(meta_path.read_text())
    meta["thresholds"][0]["file"] = "../elsewhere.ubj"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataFileError, match="file name"):
        OrdinalHead.load(folder)
    meta["thresholds"] = meta["thresholds"][:1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataFileError, match="need 3"):
        OrdinalHead.load(folder)
    meta_path.write_text("{not json")
    with pytest.raises(DataFileError, match="unreadable"):
        OrdinalHead.load(folder)
