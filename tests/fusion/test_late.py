"""Late fusion (logistic stacking of branch probabilities) and its second-level CV helper."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from deeppcos.exceptions import (
    ConfigError,
    DataFileError,
    NotFittedError,
    SchemaError,
)
from deeppcos.fusion.late import LateFusion, cross_val_fusion_oof


def _branch_scores(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A latent truth drives two noisy branch scores; ~15% of rows miss one modality and ~2%
    miss both."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2.5 * z))).astype(int)
    p_tab = 1 / (1 + np.exp(-1.2 * (z + rng.normal(scale=1.0, size=n))))
    p_img = 1 / (1 + np.exp(-0.8 * (z + rng.normal(scale=1.2, size=n))))
    pattern = rng.choice(4, size=n, p=[0.83, 0.075, 0.075, 0.02])
    p_tab[(pattern == 2) | (pattern == 3)] = np.nan
    p_img[(pattern == 1) | (pattern == 3)] = np.nan
    frame = pd.DataFrame({"p_tabular": p_tab, "p_image": p_img}, index=[f"p{i}" for i in range(n)])
    return frame, y


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    train, y_train = _branch_scores(1000, seed=0)
    test, y_test = _branch_scores(1000, seed=1)
    return {"train": train, "y_train": y_train, "test": test, "y_test": y_test}


@pytest.fixture(scope="module")
def fitted(data) -> LateFusion:
    return LateFusion().fit(data["train"], data["y_train"])


def test_beats_each_single_modality_on_held_out_rows(fitted, data):
    test, y = data["test"], data["y_test"]
    fused = fitted.predict_proba(test)
    both = test.notna().all(axis=1).to_numpy()
    auc_fused = roc_auc_score(y[both], fused[both])
    for column in ("p_tabular", "p_image"):
        single = roc_auc_score(y[both], test.loc[both, column])
        assert auc_fused > single + 0.02, (column, auc_fused, single)


def test_scores_only_patients_with_every_modality(fitted, data):
    """A patient missing a modality is the router's to send to the other branch alone: the
    fusion gives no score at all, rather than one moved by the absence."""
    test = data["test"]
    proba = fitted.predict_proba(test)
    both = test.notna().all(axis=1).to_numpy()
    assert (~both).any()
    assert np.isnan(proba[~both]).all() and np.isfinite(proba[both]).all()
    # It learned from those with both only: the rows missing a modality change nothing.
    complete_only = LateFusion().fit(
        data["train"][data["train"].notna().all(axis=1)],
        data["y_train"][data["train"].notna().all(axis=1).to_numpy()],
    )
    assert complete_only.coef_ == fitted.coef_ and complete_only.intercept_ == fitted.intercept_
    assert fitted.n_train_ == int(data["train"].notna().all(axis=1).sum())


def test_a_branch_absent_from_training_is_ignored(data):
    model = LateFusion().fit(data["train"][["p_tabular"]], data["y_train"])
    assert model.modalities_ == ["tabular"]
    assert model.coef_["image"] == 0
    test = data["test"]
    has_labs = test["p_tabular"].notna().to_numpy()
    proba = model.predict_proba(test)  # an image probability it never learned is ignored
    assert np.isfinite(proba[has_labs]).all() and np.isnan(proba[~has_labs]).all()
    np.testing.assert_array_equal(proba, model.predict_proba(test[["p_tabular"]]))
    again = LateFusion.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.modalities_ == ["tabular"]


def test_contributions_sum_to_the_logit_exactly(fitted, data):
    test = data["test"]
    parts = fitted.contributions(test)
    assert list(parts.columns) == ["intercept", "tabular", "image"]
    assert parts.index.equals(test.index)
    logit = fitted.decision_function(test)
    scored = ~np.isnan(logit)
    np.testing.assert_allclose(parts.sum(axis=1)[scored], logit[scored], rtol=0, atol=1e-12)
    proba = fitted.predict_proba(test)[scored]
    np.testing.assert_allclose(np.log(proba / (1 - proba)), logit[scored], atol=1e-9)
    assert parts[~scored].isna().all().all()


def test_contributions_match_sklearn_on_the_same_features(data):
    """The decomposition is of the very logistic regression sklearn fits."""
    from sklearn.linear_model import LogisticRegression

    from deeppcos.fusion.late import _design

    model = LateFusion(C=0.5).fit(data["train"], data["y_train"])
    x, complete = _design(data["train"], ["tabular", "image"])
    reference = LogisticRegression(C=0.5, max_iter=1000).fit(x[complete], data["y_train"][complete])
    np.testing.assert_allclose(
        model.decision_function(data["train"])[complete],
        reference.decision_function(x[complete]),
        atol=1e-10,
    )


def test_round_trips_give_identical_predictions(fitted, data, tmp_path):
    text = json.dumps(fitted.to_dict())  # JSON-safe
    again = LateFusion.from_dict(json.loads(text))
    loaded = LateFusion.load(fitted.save(tmp_path / "late"))
    for model in (again, loaded):
        np.testing.assert_array_equal(
            model.predict_proba(data["test"]), fitted.predict_proba(data["test"])
        )
        pd.testing.assert_frame_equal(
            model.contributions(data["test"]), fitted.contributions(data["test"])
        )
    assert loaded.n_train_ == fitted.n_train_


def test_cross_val_fusion_oof_uses_only_other_folds(data):
    frame, y = data["train"], data["y_train"]
    folds = np.arange(len(frame)) % 4
    oof = cross_val_fusion_oof(frame, y, folds, LateFusion)
    assert oof.shape == (len(frame),)
    both = frame.notna().all(axis=1).to_numpy()
    assert np.isnan(oof[~both]).all() and np.isfinite(oof[both]).all()
    held = folds == 2
    manual = LateFusion().fit(frame[~held], y[~held]).predict_proba(frame[held])
    np.testing.assert_array_equal(oof[held], manual)
    # Out-of-fold stacking is honest: no better than in-sample on the same rows.
    in_sample = LateFusion().fit(frame, y).predict_proba(frame)
    assert roc_auc_score(y[both], oof[both]) <= roc_auc_score(y[both], in_sample[both]) + 1e-3


def test_cross_val_fusion_oof_checks_folds(data):
    frame, y = data["train"], data["y_train"]
    with pytest.raises(SchemaError, match="entries"):
        cross_val_fusion_oof(frame, y, [0, 1], LateFusion)
    with pytest.raises(SchemaError, match="at least 2 folds"):
        cross_val_fusion_oof(frame, y, np.zeros(len(frame)), LateFusion)
    with pytest.raises(SchemaError, match="no fold"):
        cross_val_fusion_oof(frame, y, [np.nan] + [0, 1] * 499 + [1], LateFusion)


def test_errors_say_what_is_wrong(data, tmp_path):
    frame, y = data["train"], data["y_train"]
    with pytest.raises(NotFittedError, match="not fitted"):
        LateFusion().predict_proba(frame)
    with pytest.raises(SchemaError, match=r"\[0, 1\]"):
        LateFusion().fit(frame.assign(p_image=frame["p_image"] * 3), y)
    with pytest.raises(SchemaError, match="none of the branch columns"):
        LateFusion().fit(frame.rename(columns=str.upper), y)
    with pytest.raises(SchemaError, match="both classes"):
        LateFusion().fit(frame, np.ones(len(frame)))
    with pytest.raises(SchemaError, match="labels for"):
        LateFusion().fit(frame, y[:10])
    with pytest.raises(ConfigError, match="C must be"):
        LateFusion(C=0).fit(frame, y)
    with pytest.raises(DataFileError, match="not found"):
        LateFusion.load(tmp_path)
    with pytest.raises(SchemaError, match="format"):
        LateFusion.from_dict({"format": "something else"})
