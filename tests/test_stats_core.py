"""The statistics core (issue 17 §3): one way to draw resamples, one way to make intervals.

Pins the shared resampling (groups kept whole, seeds reproducible, the vectorised weights equal
to resampling rows one replicate at a time) and that every caller draws through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from deeppcos import stats
from deeppcos.stats import (
    RankedScores,
    bootstrap,
    bootstrap_draws,
    bootstrap_intervals,
    bootstrap_weights,
    group_codes,
    weighted_auc,
)


def data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    y[:2] = [1, 0]
    # Rounded: ties within and across classes.
    return y, np.round(np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1), 1)


def auc_statistic(y: np.ndarray, p: np.ndarray) -> stats.Statistic:
    ranked = RankedScores(y, p)
    return lambda weights: {"roc_auc": ranked.auc(weights)}


def test_grouped_resamples_keep_groups_whole() -> None:
    groups = np.array(["a", "a", "b", "c", "c", "c", "d", "e", "e"])
    codes, n_groups = group_codes(groups)
    weights = np.concatenate(list(bootstrap_weights(len(groups), 300, 1, groups)))
    assert weights.shape == (300, len(groups))
    for code in range(n_groups):
        rows = weights[:, codes == code]
        assert (rows == rows[:, :1]).all()  # every row of a group drawn as often as the group
    # Each resample draws as many groups as there are, with replacement.
    per_group = np.stack([weights[:, np.flatnonzero(codes == c)[0]] for c in range(n_groups)])
    assert (per_group.sum(axis=0) == n_groups).all()
    assert (weights == 0).any() and (weights >= 2).any()


def test_identical_seeds_give_identical_intervals() -> None:
    y, p = data(60)
    groups = np.arange(60) // 2
    runs = [
        bootstrap(auc_statistic(y, p), 60, seed=seed, n_boot=300, groups=groups)
        for seed in (3, 3, 4)
    ]
    assert runs[0] == runs[1]
    assert runs[0]["roc_auc"]["ci"] != runs[2]["roc_auc"]["ci"]
    # A generator continues its stream: the same as the integer seed on a fresh generator.
    from_generator = bootstrap(
        auc_statistic(y, p), 60, seed=np.random.default_rng(3), n_boot=300, groups=groups
    )
    assert from_generator == runs[0]


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("block_cells", [4_000_000, 100])  # one block, or many small ones
def test_vectorised_draws_match_a_simple_loop(
    grouped: bool, block_cells: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats, "_BLOCK_CELLS", block_cells)
    y, p = data(30, seed=1)
    groups = np.arange(30) // 3 if grouped else None
    n_boot = 50
    resampled = bootstrap_draws(auc_statistic(y, p), 30, seed=7, n_boot=n_boot, groups=groups)

    # The plain loop: draw units, take their rows, score the resampled rows with scikit-learn.
    codes, n_units = group_codes(groups) if grouped else (np.arange(30), 30)
    members = [np.flatnonzero(codes == unit) for unit in range(n_units)]
    rng = np.random.default_rng(7)
    expected = []
    for _ in range(n_boot):
        rows = np.concatenate([members[u] for u in rng.integers(0, n_units, n_units)])
        both = 0 < y[rows].sum() < len(rows)
        expected.append(roc_auc_score(y[rows], p[rows]) if both else np.nan)
    np.testing.assert_allclose(resampled.draws["roc_auc"], expected, rtol=0, atol=1e-12)
    assert resampled.estimate["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    # Delete-one jackknife over the units.
    loo = [roc_auc_score(np.delete(y, m), np.delete(p, m)) for m in members]
    np.testing.assert_allclose(resampled.jackknife["roc_auc"], loo, rtol=0, atol=1e-12)


def test_ranking_matches_scikit_learn_on_weighted_rows() -> None:
    y, p = data(50, seed=2)
    weights = np.concatenate(list(bootstrap_weights(50, 20, 0)))
    ranking = RankedScores(y, p).ranking(weights)
    for row, w in enumerate(weights):
        rows = np.repeat(np.arange(50), w.astype(int))
        assert ranking["roc_auc"][row] == pytest.approx(roc_auc_score(y[rows], p[rows]))
        assert ranking["pr_auc"][row] == pytest.approx(average_precision_score(y[rows], p[rows]))
    assert weighted_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    one_class = RankedScores(np.ones(4), np.arange(4.0)).ranking(np.ones((1, 4)))
    assert np.isnan(one_class["roc_auc"][0]) and one_class["pr_auc"][0] == 1.0


def test_no_resamples_no_interval_and_no_note() -> None:
    y, p = data(20)
    interval = bootstrap_intervals(auc_statistic(y, p), 20, seed=0, n_boot=0)["roc_auc"]
    assert interval.ci is None and interval.note is None
    assert interval.value == pytest.approx(roc_auc_score(y, p))


def test_every_caller_draws_through_the_one_core(monkeypatch: pytest.MonkeyPatch) -> None:
    from deeppcos.evaluation import external
    from deeppcos.evaluation.metrics import (
        binary_metrics,
        classification_metrics,
        ordinal_metrics,
        subgroup_metrics,
    )
    from deeppcos.tuning.selection import _apply
    from deeppcos.tuning.spaces import SelectionSettings

    calls: list[int] = []
    shared = stats.bootstrap_weights

    def counting(*args: Any, **kwargs: Any) -> Iterator[np.ndarray]:
        calls.append(1)
        return shared(*args, **kwargs)

    monkeypatch.setattr(stats, "bootstrap_weights", counting)
    y, p = data(40)
    frame = pd.DataFrame({"y": y, "p": p, "site": np.arange(40) % 2})
    callers = {
        "classification_metrics": lambda: classification_metrics(y, p, 0.5, n_boot=50),
        "binary_metrics": lambda: binary_metrics(y, p, n_boot=50),
        "ordinal_metrics": lambda: ordinal_metrics(y, y, 2, n_boot=50),
        "subgroup_metrics": lambda: subgroup_metrics(
            frame, ["site"], "y", "p", 0.5, min_size=5, n_boot=50
        ),
        "paired_auc_difference": lambda: stats.paired_auc_difference(y, p, 1 - p, n_boot=50),
        "audit bootstrap_auc_ci": lambda: stats.bootstrap_auc_ci(y, p, np.arange(40) // 2, 0),
        "external calibration": lambda: external._calibration(y, np.clip(p, 0.05, 0.95), 0),
        "tuning rule": lambda: _apply(np.linspace(-0.01, 0.03, 6), SelectionSettings()),
    }
    for name, call in callers.items():
        calls.clear()
        call()
        assert calls, f"{name} does not resample through deeppcos.stats"
