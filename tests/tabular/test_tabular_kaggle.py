"""The tabular branch on the real Kaggle PCOS table (541 women), read in place."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from deeppcos.data import Cohort, load_cohort, make_splits
from deeppcos.tabular import TabularBranch, inner_validation_split
from tests.conftest import REPO

pytestmark = [pytest.mark.realdata, pytest.mark.usefixtures("shared_data")]


@pytest.fixture(scope="module")
def kaggle() -> Cohort:
    return load_cohort(REPO / "configs" / "pcos-kaggle-tabular.yaml")


def test_five_fold_out_of_fold_auc(kaggle: Cohort) -> None:
    split = make_splits(kaggle.patients, n_folds=5, test_fraction=0.0, seed=0)
    scores = []
    for train, test in split.folds():
        # Early stopping sees a part carved from the training fold, never the scored fold.
        inner_train, inner_val = inner_validation_split(kaggle, train, seed=0)
        branch = TabularBranch(seed=0).fit(kaggle, inner_train, inner_val)
        scores.append(branch.predict_proba(kaggle, test))
    oof = pd.concat(scores)
    assert oof.notna().all() and oof.index.is_unique and len(oof) == len(kaggle.patients)
    labels = kaggle.patients.set_index("patient_id").loc[oof.index, "label"].astype(int)
    assert roc_auc_score(labels, oof) > 0.85
    # The scan's follicle counts are among the inputs, with their per-patient summaries.
    assert {"follicle_count_max", "follicle_count_total"} <= set(branch.feature_names_)
