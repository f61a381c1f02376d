"""The paired AUC difference used to compare fusion with each branch."""

from __future__ import annotations

import numpy as np

from deeppcos.stats import paired_auc_difference, weighted_auc


def test_paired_difference_detects_a_better_model_and_not_a_copy() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    weak = y + rng.normal(scale=1.5, size=400)
    strong = y + rng.normal(scale=0.6, size=400)
    result = paired_auc_difference(y, strong, weak, n_boot=500)
    assert result["difference"] == round(weighted_auc(y, strong) - weighted_auc(y, weak), 4)
    assert result["ci"][0] > 0  # clearly better: the interval excludes 0
    same = paired_auc_difference(y, weak, weak, n_boot=200)
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0]
    weak[:10] = np.nan  # unpaired rows are left out
    assert paired_auc_difference(y, strong, weak, n_boot=50)["n"] == 390
