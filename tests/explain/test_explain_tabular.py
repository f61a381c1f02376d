"""Tabular TreeSHAP: equal to shap's TreeExplainer, additive to the booster margin, interaction
values, and usable by shap's plots."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shap

from deeppcos.exceptions import SchemaError
from deeppcos.explain.tabular import margin, tabular_interactions, tabular_shap

ATOL = 1e-5


@pytest.fixture(scope="module")
def branch(predictor: Any) -> Any:
    return predictor.branches["tabular"]


@pytest.fixture(scope="module")
def design(branch: Any, cohort: Any) -> pd.DataFrame:
    return branch.design_matrix(cohort)


def test_equal_to_shap_tree_explainer(branch: Any, design: pd.DataFrame) -> None:
    ours = tabular_shap(branch, design)
    theirs = shap.TreeExplainer(branch.booster_)(design)
    assert isinstance(ours, shap.Explanation)
    assert ours.values.shape == (len(design), len(branch.feature_names_))
    np.testing.assert_allclose(ours.values, theirs.values, atol=ATOL)
    np.testing.assert_allclose(ours.base_values, theirs.base_values, atol=ATOL)
    assert list(ours.feature_names) == list(branch.feature_names_)
    assert list(ours.instance_names) == list(design.index)
    np.testing.assert_array_equal(np.isnan(ours.data), design.isna().to_numpy())


def test_equal_to_shaps_own_tree_shap_algorithm(branch: Any, design: pd.DataFrame) -> None:
    """shap.TreeExplainer hands XGBoost models to XGBoost itself; force shap's own C++ TreeSHAP
    on shap's parse of the model for an independent check of the per-feature values."""
    explainer = shap.TreeExplainer(branch.booster_)
    explainer.model.model_type = "internal"  # skip the XGBoost shortcut
    independent = explainer.shap_values(design.to_numpy(dtype="float64"), check_additivity=False)
    np.testing.assert_allclose(tabular_shap(branch, design).values, independent, atol=ATOL)


def test_bias_is_the_trees_expected_value(branch: Any, design: pd.DataFrame) -> None:
    """φ₀ = base margin + Σ over trees of the cover-weighted mean leaf value, from the model
    dump (the base margin is logit(base_score))."""
    trees = branch.booster_.trees_to_dataframe()
    expected = 0.0
    for _, tree in trees.groupby("Tree"):
        leaves = tree[tree["Feature"] == "Leaf"]
        expected += float((leaves["Gain"] * leaves["Cover"]).sum() / tree["Cover"].iloc[0])
    config = json.loads(branch.booster_.save_config())
    base_score = float(config["learner"]["learner_model_param"]["base_score"].strip("[]"))
    expected += float(np.log(base_score / (1 - base_score)))
    base = tabular_shap(branch, design.iloc[:3]).base_values
    np.testing.assert_allclose(base, expected, atol=ATOL)


def test_values_add_up_to_the_margin_and_the_branch_probability(
    branch: Any, design: pd.DataFrame, cohort: Any
) -> None:
    explanation = tabular_shap(branch, design)
    total = explanation.base_values + explanation.values.sum(axis=1)
    np.testing.assert_allclose(total, margin(branch, design), atol=ATOL)
    # The branch's probability is sigmoid(margin): no calibration between booster and fusion.
    probability = branch.predict_proba(cohort).to_numpy()
    scored = ~np.isnan(probability)
    assert scored.sum() > 60 and (~scored).sum() >= 1  # some patients have no tabular data
    np.testing.assert_allclose(1 / (1 + np.exp(-total[scored])), probability[scored], atol=1e-6)


def test_interaction_values(branch: Any, design: pd.DataFrame) -> None:
    rows = design.iloc[:12]
    interactions = tabular_interactions(branch, rows)
    p = len(branch.feature_names_)
    assert interactions.values.shape == (12, p, p)
    # Each row of the interaction matrix sums to that feature's SHAP value.
    np.testing.assert_allclose(
        interactions.values.sum(axis=2), tabular_shap(branch, rows).values, atol=ATOL
    )
    theirs = shap.TreeExplainer(branch.booster_).shap_interaction_values(rows)
    np.testing.assert_allclose(interactions.values, theirs, atol=ATOL)


def test_shap_plots_work_on_the_explanation(branch: Any, design: pd.DataFrame) -> None:
    import matplotlib.pyplot as plt

    explanation = tabular_shap(branch, design)
    names = np.array(explanation.feature_names)
    top_overall = names[np.abs(explanation.values).mean(axis=0).argmax()]
    top_first = names[np.abs(explanation.values[0]).argmax()]
    for plot, top in (
        (lambda: shap.plots.bar(explanation, show=False), top_overall),
        (lambda: shap.plots.beeswarm(explanation, show=False), top_overall),
        (lambda: shap.plots.waterfall(explanation[0], show=False), top_first),
    ):
        plot()
        labels = " ".join(t.get_text() for ax in plt.gcf().axes for t in ax.get_yticklabels())
        plt.close("all")
        # Each plot names the feature that matters most (overall, or for the first patient).
        assert top in labels, (top, labels)


def test_threads_are_restored_and_missing_inputs_named(branch: Any, design: pd.DataFrame) -> None:
    before = json.loads(branch.booster_.save_config())["learner"]["generic_param"]["nthread"]
    with_two = tabular_shap(branch, design, n_jobs=2)
    after = json.loads(branch.booster_.save_config())["learner"]["generic_param"]["nthread"]
    assert before == after
    np.testing.assert_allclose(with_two.values, tabular_shap(branch, design).values, atol=ATOL)
    with pytest.raises(SchemaError, match="amh_ng_ml"):
        tabular_shap(branch, design.drop(columns=["amh_ng_ml"]))
