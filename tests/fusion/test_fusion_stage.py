"""The fusion stage: late and intermediate fusion cross-validated on the same folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deeppcos.exceptions import ConfigError
from deeppcos.fusion.grading import cross_val_severity, severity_inputs
from deeppcos.fusion.stage import FusionInputs, available_methods, fusion_oof


def _inputs(n: int = 240, seed: int = 0, with_images: bool = True) -> FusionInputs:
    """A cohort where the label depends on one lab and on a direction in image space that each
    fold's "image model" embeds in its own rotated coordinates (as real fold models do)."""
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"p{i:03d}" for i in range(n)], name="patient_id")
    lab = rng.normal(size=n)
    scan = rng.normal(size=n)
    y = (lab + 1.5 * scan + rng.normal(scale=0.7, size=n) > 0).astype(int)
    folds = np.array([f"fold{i % 4}" for i in range(n)])
    tabular = pd.DataFrame({"amh_ng_ml": lab, "age_years": rng.normal(30, 5, n)}, index=ids)
    embeddings = {}
    for k in range(4):
        basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # each fold model: its own rotation
        latent = np.column_stack([scan, rng.normal(size=(n, 5))])
        frame = pd.DataFrame(latent @ basis, index=ids)
        frame.columns = [f"img_emb_{j}" for j in range(6)]
        frame.iloc[:10] = np.nan  # ten patients without images
        embeddings[f"fold{k}"] = frame
    p_tab = 1 / (1 + np.exp(-lab))
    p_img = 1 / (1 + np.exp(-1.5 * scan))
    p_img[:10] = np.nan
    oof = pd.DataFrame({"fold": folds, "label": y, "p_tabular": p_tab, "p_image": p_img}, index=ids)
    return FusionInputs(oof, tabular, embeddings if with_images else None)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = ~np.isnan(p)
    return float(roc_auc_score(y[keep], p[keep]))


def test_both_methods_score_exactly_the_patients_with_every_modality() -> None:
    inputs = _inputs()
    assert available_methods(inputs) == ["late", "intermediate"]
    y = inputs.labels
    late = fusion_oof(inputs, "late")
    intermediate = fusion_oof(inputs, "intermediate", {"n_components": 2, "n_estimators": 80})
    # The ten patients without images are the image-less route's: no fused score for them.
    without_images = np.arange(len(y)) < 10
    assert np.array_equal(np.isnan(late), without_images)
    assert np.array_equal(np.isnan(intermediate), without_images)
    # Both learn from the image signal and the lab: far better than either alone would allow.
    assert _auc(y, late) > 0.85
    assert _auc(y, intermediate) > 0.8


def test_intermediate_fusion_uses_each_fold_models_own_embedding_space() -> None:
    """Pooling embeddings across folds would mix coordinate systems; per-fold use must not."""
    inputs = _inputs()
    y = inputs.labels
    params = {"n_components": 2, "n_estimators": 80}
    proper = _auc(y, fusion_oof(inputs, "intermediate", params))
    # Give every fold the embeddings of one wrongly rotated model: the image signal is lost.
    scrambled = {
        k: inputs.fold_embeddings["fold0"]
        .sample(frac=1.0, random_state=1)
        .set_axis(inputs.oof.index)
        for k in inputs.fold_embeddings
    }
    broken = FusionInputs(inputs.oof, inputs.tabular, scrambled)
    assert proper > _auc(y, fusion_oof(broken, "intermediate", params)) + 0.1


def test_intermediate_needs_both_branches_and_params_are_checked() -> None:
    tabular_only = _inputs(with_images=False)
    assert available_methods(tabular_only) == ["late"]
    with pytest.raises(ConfigError, match="intermediate fusion needs both branches"):
        fusion_oof(tabular_only, "intermediate")
    with pytest.raises(ConfigError, match=r"fusion.late: unknown parameter\(s\) \['depth'\]"):
        fusion_oof(_inputs(), "late", {"depth": 3})


def test_severity_cross_validation_respects_folds_and_excludes_columns() -> None:
    inputs = _inputs()
    levels = ["none", "mild", "severe"]
    codes = np.digitize(inputs.tabular["amh_ng_ml"], [-0.5, 0.7])
    grades = pd.Series(
        pd.Categorical.from_codes(codes, levels, ordered=True), index=inputs.oof.index
    )
    grades.iloc[:20] = np.nan  # ungraded patients are scored, not trained on
    x = severity_inputs(inputs.tabular, inputs.oof["p_image"], [], inputs.oof.index)
    assert list(x.columns) == ["amh_ng_ml", "age_years", "image_logit"]
    proba = cross_val_severity(x, grades, inputs.folds, levels, "xgboost", {"n_estimators": 50}, 0)
    assert proba.shape == (len(x), 3) and np.allclose(proba.sum(axis=1), 1)
    graded = grades.notna().to_numpy()
    hits = (proba.argmax(axis=1) == grades.cat.codes.to_numpy())[graded].mean()
    assert hits > 0.7
    # With the grading column excluded (as after the criteria labeller) the signal is gone.
    blind = severity_inputs(inputs.tabular, None, ["amh_ng_ml"], inputs.oof.index)
    assert list(blind.columns) == ["age_years"]
    proba = cross_val_severity(
        blind, grades, inputs.folds, levels, "xgboost", {"n_estimators": 50}, 0
    )
    assert (proba.argmax(axis=1) == grades.cat.codes.to_numpy())[graded].mean() < hits - 0.15
