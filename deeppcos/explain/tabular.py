"""Exact TreeSHAP for the tabular branch, through XGBoost's own ``pred_contribs``.

XGBoost computes path-dependent TreeSHAP (Lundberg et al., 2020) in C++ on the booster itself, so
the values are exact for the trees the branch saved (the booster is already cut to its best
round) and need no re-parsing of the model. They are in the booster's margin (logit) units:
for every row, ``base_values + values.sum()`` equals the booster margin, and the branch's
probability is ``sigmoid(margin)`` with nothing in between (``TabularBranch.predict_proba`` is
``booster.predict`` with the ``binary:logistic`` objective; the fusion layer calibrates later).

Results come back as ``shap.Explanation`` objects (values, base_values, data, feature_names and
the patient ids as ``instance_names``), so every shap plot works on them. ``shap.TreeExplainer``
on an XGBoost booster delegates to this same XGBoost routine; the tests also compare the values
with shap's own C++ TreeSHAP on shap's parse of the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from deeppcos.exceptions import SchemaError

if TYPE_CHECKING:
    import shap
    import xgboost as xgb

    from deeppcos.data.cohort import Cohort

__all__ = ["contributions", "tabular_interactions", "tabular_shap", "tabular_shap_for"]


def contributions(
    booster: xgb.Booster,
    x: pd.DataFrame,
    feature_names: Sequence[str],
    *,
    interactions: bool = False,
    n_jobs: int | None = None,
) -> np.ndarray:
    """XGBoost's TreeSHAP as float64: (n, p + 1) with the bias last, or (n, p + 1, p + 1)
    interaction values (bias in the last row and column) when ``interactions``."""
    import xgboost as xgb

    names = list(feature_names)
    missing = [f for f in names if f not in x.columns]
    if missing:
        raise SchemaError(
            f"the frame to explain lacks {len(missing)} model input(s): {missing[:10]}; pass the "
            "branch's design_matrix() (it derives BMI, ratios, … from their parts)"
        )
    matrix = x[names].to_numpy(dtype="float64", na_value=np.nan)
    threads = n_jobs or 1
    dmatrix = xgb.DMatrix(
        matrix, feature_names=names, missing=np.nan, nthread=threads, **_types(booster)
    )
    with _threads(booster, n_jobs):
        values = booster.predict(
            dmatrix,
            pred_contribs=not interactions,
            pred_interactions=interactions,
            validate_features=True,
        )
    return np.asarray(values, dtype="float64")


@contextmanager
def _threads(booster: xgb.Booster, n: int | None) -> Iterator[None]:
    """Run the booster with ``n`` threads for one call, then restore its own setting."""
    if n is None:
        yield
        return
    config = json.loads(booster.save_config())
    previous = int(config["learner"]["generic_param"].get("nthread", 0) or 0)
    booster.set_param({"nthread": n})
    try:
        yield
    finally:
        booster.set_param({"nthread": previous})


def _explanation(
    values: np.ndarray, base: np.ndarray, x: pd.DataFrame, names: list[str]
) -> shap.Explanation:
    import shap

    return shap.Explanation(
        values=values,
        base_values=base,
        data=x[names].to_numpy(dtype="float64", na_value=np.nan),
        feature_names=names,
        instance_names=[str(i) for i in x.index],
    )


def tabular_shap(branch: Any, x: pd.DataFrame, n_jobs: int | None = None) -> shap.Explanation:
    """TreeSHAP of a fitted ``TabularBranch`` for the rows of ``x`` (its ``design_matrix``).

    ``values`` (n, p) and ``base_values`` (n,) are in logit units and sum to the booster margin.
    A row with every input missing is not scored by the branch (its probability is NaN); its
    values are still computed (every split takes its default direction) and are the caller's
    to ignore.
    """
    _check_fitted(branch)
    names = list(branch.feature_names_)
    phi = contributions(branch.booster_, x, names, n_jobs=n_jobs)
    return _explanation(phi[:, :-1], phi[:, -1], x, names)


def tabular_interactions(
    branch: Any, x: pd.DataFrame, n_jobs: int | None = None
) -> shap.Explanation:
    """SHAP interaction values (n, p, p): the diagonal holds main effects, each off-diagonal pair
    splits an interaction in two halves; every row's matrix sums to ``margin − base_values``."""
    _check_fitted(branch)
    names = list(branch.feature_names_)
    phi = contributions(branch.booster_, x, names, interactions=True, n_jobs=n_jobs)
    return _explanation(phi[:, :-1, :-1], phi[:, -1, -1], x, names)


def tabular_shap_for(
    branch: Any, cohort: Cohort, patient_ids: Sequence[str] | None = None
) -> shap.Explanation:
    """:func:`tabular_shap` of these patients of a cohort (all when None)."""
    return tabular_shap(branch, branch.design_matrix(cohort, patient_ids))


def margin(branch: Any, x: pd.DataFrame) -> np.ndarray:
    """The booster's margin (logit) per row, float64: what the SHAP values add up to."""
    import xgboost as xgb

    _check_fitted(branch)
    names = list(branch.feature_names_)
    matrix = x[names].to_numpy(dtype="float64", na_value=np.nan)
    dmatrix = xgb.DMatrix(matrix, feature_names=names, missing=np.nan, **_types(branch.booster_))
    return np.asarray(branch.booster_.predict(dmatrix, output_margin=True), dtype="float64")


def _types(booster: xgb.Booster) -> dict[str, Any]:
    """The booster's own column types, so categorical inputs (codes) are read as categories."""
    types = booster.feature_types
    if not types or "c" not in types:
        return {}
    return {"feature_types": list(types), "enable_categorical": True}


def _check_fitted(branch: Any) -> None:
    if not hasattr(branch, "booster_") or not hasattr(branch, "feature_names_"):
        raise SchemaError(
            f"expected a fitted TabularBranch (with booster_ and feature_names_); got "
            f"{type(branch).__name__}"
        )
