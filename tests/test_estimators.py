"""The scikit-learn adapter: the estimator checks, pipelines, search, and the branch inside."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from deeppcos.estimators import TabularClassifier


@parametrize_with_checks([TabularClassifier(n_estimators=10)])
def test_scikit_learn_estimator_checks(estimator, check) -> None:
    check(estimator)


@pytest.fixture(scope="module")
def labs() -> tuple[pd.DataFrame, pd.Series]:
    """A small synthetic table in catalog names, with gaps, and its labels."""
    rng = np.random.default_rng(0)
    n = 240
    pcos = rng.random(n) < 0.35
    frame = pd.DataFrame(
        {
            "amh_ng_ml": np.where(pcos, rng.normal(8, 2, n), rng.normal(3.5, 1.5, n)),
            "lh_iu_l": np.where(pcos, rng.normal(11, 3, n), rng.normal(6, 2, n)),
            "fsh_iu_l": rng.normal(6, 1.5, n).clip(1, None),
            "weight_kg": rng.normal(65, 10, n),
            "height_cm": rng.normal(160, 7, n),
        }
    )
    frame = frame.mask(rng.random(frame.shape) < 0.1)  # 10% missing, handled natively
    return frame, pd.Series(np.where(pcos, "PCOS", "no PCOS"))


def test_derived_features_are_added_from_their_parts(labs) -> None:
    x, y = labs
    model = TabularClassifier(n_estimators=30).fit(x, y)
    assert list(model.feature_names_in_) == list(x.columns)
    assert {"bmi_kg_m2", "lh_fsh_ratio"} <= set(model.feature_names_)
    assert set(model.classes_) == {"PCOS", "no PCOS"}
    plain = TabularClassifier(n_estimators=30, derive_features=False).fit(x, y)
    assert plain.feature_names_ == list(x.columns)


def test_it_learns_and_works_in_a_pipeline_and_a_search(labs) -> None:
    x, y = labs
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(TabularClassifier(n_estimators=40), x, y, cv=folds, scoring="roc_auc")
    assert scores.mean() > 0.85  # the labs separate the classes in this table
    piped = make_pipeline(SimpleImputer(), TabularClassifier(n_estimators=20))
    assert cross_val_score(piped, x, y, cv=folds, scoring="roc_auc").mean() > 0.85
    search = GridSearchCV(
        TabularClassifier(n_estimators=20), {"max_depth": [1, 3]}, cv=folds, scoring="roc_auc"
    )
    assert search.fit(x, y).best_params_["max_depth"] in (1, 3)


def test_the_branch_inside_is_the_runs_branch(labs) -> None:
    """The same booster answers through the adapter and through TabularBranch."""
    x, y = labs
    model = TabularClassifier(n_estimators=30).fit(x, y)
    from deeppcos.tabular.features import derive_features

    design = derive_features(x)[model.feature_names_]
    scored = design.notna().any(axis=1)
    via_branch = model.branch_.predict_design(design[scored]).to_numpy()
    via_adapter = model.predict_proba(x[scored])[:, 1]
    np.testing.assert_allclose(via_adapter, via_branch, rtol=1e-6)


def test_more_than_two_classes_are_refused(labs) -> None:
    x, _ = labs
    with pytest.raises(ValueError, match="Only binary classification"):
        TabularClassifier(n_estimators=5).fit(x, np.arange(len(x)) % 3)


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys) -> None:
    """The README's scikit-learn example, as written, on a small synthetic cohort."""
    import re

    from deeppcos.data.synthetic import generate_cohort
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- readme-example: sklearn -->\n```python\n(.*?)```", readme, re.S)
    assert block is not None, "the README lost its scikit-learn example"
    generate_cohort(tmp_path / "demo" / "cohort", n_patients=80, seed=0, image_size=32)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {})  # our own README, as written
    assert re.search(r"ROC AUC 0\.\d{3} ± 0\.\d{3} over 5 folds", capsys.readouterr().out)
