import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deeppcos.evaluation.metrics import binary_metrics


def test_metrics_match_sklearn_and_have_a_sane_interval() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    m = binary_metrics(y, p, seed=1)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-4)
    low, high = m["roc_auc_ci"]
    assert low < m["roc_auc"] < high and high - low < 0.2
    assert m["n"] == 300 and m["positives"] == int(y.sum())


def test_missing_predictions_are_left_out_and_one_class_is_reported() -> None:
    m = binary_metrics([0, 1, 1, 0], [0.1, np.nan, 0.8, 0.3])
    assert m["n"] == 3
    assert binary_metrics([1, 1], [0.2, 0.9])["roc_auc"] is None
