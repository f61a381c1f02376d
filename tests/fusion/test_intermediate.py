"""Intermediate fusion: PCA of image embeddings + tabular features in one XGBoost booster."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from deeppcos.exceptions import DataFileError, NotFittedError, SchemaError
from deeppcos.fusion.intermediate import IntermediateFusion, cross_val_intermediate_oof

N_EMB = 32
TAB = [f"f{i}" for i in range(5)]
# Fixed directions in embedding space: one carries the image-only signal, two are nuisance.
DIRECTIONS = np.random.default_rng(99).normal(size=(3, N_EMB))


def _patients(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Labels depend on tabular features AND on a factor u that only the embeddings carry.

    ~15% of patients have no images (NaN embedding row), ~8% no labs, a few neither.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(TAB)))
    u = rng.normal(size=n)
    logit = x @ np.array([1.0, -0.7, 0.5, 0.0, 0.0]) + 1.6 * u
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    nuisance = rng.normal(scale=2.0, size=(n, 2))
    emb = np.outer(u, DIRECTIONS[0]) + nuisance @ DIRECTIONS[1:]
    emb += rng.normal(scale=0.7, size=emb.shape)
    ids = [f"s{seed}p{i}" for i in range(n)]
    tabular = pd.DataFrame(x, columns=TAB, index=pd.Index(ids, name="patient_id"))
    embeddings = pd.DataFrame(
        emb, columns=[f"img_emb_{k}" for k in range(N_EMB)], index=tabular.index
    )
    embeddings.iloc[rng.random(n) < 0.15] = np.nan
    tabular.iloc[rng.random(n) < 0.08] = np.nan
    return tabular, embeddings, y


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    tab, emb, y = _patients(600, seed=0)
    tab_t, emb_t, y_t = _patients(600, seed=1)
    return {"tab": tab, "emb": emb, "y": y, "tab_t": tab_t, "emb_t": emb_t, "y_t": y_t}


@pytest.fixture(scope="module")
def fitted(data) -> IntermediateFusion:
    return IntermediateFusion(seed=0).fit(data["tab"], data["emb"], data["y"])


def test_embeddings_add_signal_the_tabular_features_lack(fitted, data):
    tabular_only = IntermediateFusion(seed=0).fit(data["tab"], None, data["y"])
    assert tabular_only.n_components_ == 0 and tabular_only.feature_names_ == TAB
    fused = fitted.predict_proba(data["tab_t"], data["emb_t"])
    alone = tabular_only.predict_proba(data["tab_t"], None)
    # Compare on the patients both can score (the tabular-only model cannot score image-only).
    both = np.isfinite(fused) & np.isfinite(alone)
    y = data["y_t"][both]
    auc_fused, auc_alone = roc_auc_score(y, fused[both]), roc_auc_score(y, alone[both])
    assert auc_fused > auc_alone + 0.05, (auc_fused, auc_alone)


def test_fitted_attributes(fitted):
    assert fitted.n_components_ == 8
    assert fitted.feature_names_ == TAB + [f"img_pc_{k}" for k in range(8)]
    assert fitted.embedding_columns_ == [f"img_emb_{k}" for k in range(N_EMB)]
    ratios = fitted.explained_variance_ratio_
    assert np.all(np.diff(ratios) <= 0) and sum(ratios) <= 1
    assert fitted.n_trees_ == 300  # no eval set: no early stopping


def test_routes_each_modality_pattern(fitted, data):
    tab, emb = data["tab_t"], data["emb_t"]
    has_tab = tab.notna().any(axis=1).to_numpy()
    has_img = emb.notna().all(axis=1).to_numpy()
    routes = np.array(fitted.modalities_used(tab, emb))
    proba = fitted.predict_proba(tab, emb)
    expected = {
        (True, True): "tabular+image",
        (True, False): "tabular",
        (False, True): "image",
        (False, False): "none",
    }
    for (t, i), label in expected.items():
        rows = (has_tab == t) & (has_img == i)
        assert rows.any(), label
        assert set(routes[rows]) == {label}
        assert np.isnan(proba[rows]).all() if label == "none" else np.isfinite(proba[rows]).all()
    # A patient without images has NaN in every PCA column.
    design = fitted.design_matrix(tab, emb)
    assert design.loc[~has_img, "img_pc_0":].isna().all().all()
    assert design.loc[has_img, "img_pc_0":].notna().all().all()


def test_embeddings_are_matched_by_index(fitted, data):
    tab, emb = data["tab_t"], data["emb_t"]
    shuffled = emb.sample(frac=1.0, random_state=0)
    np.testing.assert_array_equal(
        fitted.predict_proba(tab, shuffled), fitted.predict_proba(tab, emb)
    )
    # A patient absent from the embeddings frame is a patient without images.
    fewer = emb.dropna()
    np.testing.assert_array_equal(fitted.predict_proba(tab, fewer), fitted.predict_proba(tab, emb))


def test_grouped_contributions_sum_to_the_margin(fitted, data):
    tab, emb = data["tab_t"], data["emb_t"]
    parts = fitted.grouped_contributions(tab, emb)
    assert list(parts.columns) == [*TAB, "ultrasound", "bias"]
    assert parts.index.equals(tab.index)
    margin = fitted.decision_function(tab, emb)
    scored = ~np.isnan(margin)
    np.testing.assert_allclose(parts.sum(axis=1)[scored], margin[scored], atol=1e-4)
    proba = fitted.predict_proba(tab, emb)[scored]
    np.testing.assert_allclose(np.log(proba / (1 - proba)), margin[scored], atol=1e-6)
    assert parts[~scored].isna().all().all()
    grouped = fitted.grouped_contributions(tab, emb, group_tabular=True)
    assert list(grouped.columns) == ["tabular", "ultrasound", "bias"]
    np.testing.assert_allclose(grouped["tabular"], parts[TAB].to_numpy().sum(axis=1), atol=1e-9)
    # The image factor matters: its share of |SHAP| is substantial among imaged patients.
    imaged = emb.notna().all(axis=1).to_numpy() & scored
    share = (
        parts.loc[imaged, "ultrasound"].abs().mean()
        / parts.loc[imaged, TAB].abs().sum(axis=1).mean()
    )
    assert share > 0.3


def test_save_load_gives_identical_predictions(fitted, data, tmp_path):
    folder = fitted.save(tmp_path / "intermediate")
    assert sorted(p.name for p in folder.iterdir()) == ["intermediate_fusion.json", "model.ubj"]
    meta = json.loads((folder / "intermediate_fusion.json").read_text())
    assert len(meta["reducer"]["components"]) == 8
    loaded = IntermediateFusion.load(folder)
    tab, emb = data["tab_t"], data["emb_t"]
    np.testing.assert_array_equal(loaded.predict_proba(tab, emb), fitted.predict_proba(tab, emb))
    pd.testing.assert_frame_equal(
        loaded.grouped_contributions(tab, emb), fitted.grouped_contributions(tab, emb)
    )
    assert loaded.feature_names_ == fitted.feature_names_


def test_early_stopping_on_an_eval_set(data):
    tab, emb, y = data["tab"], data["emb"], data["y"]
    train, val = slice(0, 450), slice(450, 600)
    model = IntermediateFusion(n_components=4, early_stopping_rounds=20, seed=1).fit(
        tab.iloc[train], emb.iloc[train], y[train], eval=(tab.iloc[val], emb.iloc[val], y[val])
    )
    assert "val" in model.history_ and model.n_trees_ <= 300
    assert model.booster_.num_boosted_rounds() == model.n_trees_


def test_cross_val_intermediate_oof(data):
    tab, emb, y = data["tab"], data["emb"], data["y"]
    folds = np.arange(len(tab)) % 3
    oof = cross_val_intermediate_oof(
        tab, emb, y, folds, lambda: IntermediateFusion(n_components=4, n_estimators=60)
    )
    neither = (tab.isna().all(axis=1) & emb.isna().all(axis=1)).to_numpy()
    assert np.isnan(oof[neither]).all() and np.isfinite(oof[~neither]).all()
    assert roc_auc_score(y[~neither], oof[~neither]) > 0.7


def test_errors_say_what_is_wrong(data, fitted, tmp_path):
    tab, emb, y = data["tab"], data["emb"], data["y"]
    with pytest.raises(NotFittedError, match="not fitted"):
        IntermediateFusion().predict_proba(tab, emb)
    partial = emb.copy()
    partial.iloc[0, 3] = np.nan
    partial.iloc[0, 0] = 1.0
    with pytest.raises(SchemaError, match="partly NaN"):
        fitted.predict_proba(tab, partial)
    with pytest.raises(SchemaError, match="by index"):
        fitted.predict_proba(tab, emb.reset_index(drop=True))
    with pytest.raises(SchemaError, match="img_emb_"):
        IntermediateFusion().fit(tab, emb.rename(columns=lambda c: c.upper()), y)
    with pytest.raises(SchemaError, match="ultrasound"):
        IntermediateFusion().fit(tab.rename(columns={"f0": "ultrasound"}), emb, y)
    with pytest.raises(SchemaError, match="lacks"):
        fitted.predict_proba(tab.drop(columns="f1"), emb)
    with pytest.raises(DataFileError, match="not found"):
        IntermediateFusion.load(tmp_path)
