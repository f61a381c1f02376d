"""Probe models scored with grouped cross-validation: out-of-fold AUC with a bootstrap interval,
and its severity."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from deeppcos.audit.base import N_FOLDS
from deeppcos.audit.rules import (
    Severity,
)
from deeppcos.stats import bootstrap_auc_ci, group_codes, weighted_auc

# --- AUC with grouped cross-validation --------------------------------------------------------


def grouped_folds(
    y: np.ndarray, groups: np.ndarray, seed: int, n_folds: int = N_FOLDS
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Label-stratified folds that keep each group whole; fewer folds if groups are few."""
    from sklearn.model_selection import StratifiedGroupKFold

    frame = pd.DataFrame({"y": y, "g": groups})
    with_pos = frame.loc[frame["y"] == 1, "g"].nunique()
    with_neg = frame.loc[frame["y"] == 0, "g"].nunique()
    k = min(n_folds, with_pos, with_neg)
    if k < 2:
        return []
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" on tiny cohorts
        return list(splitter.split(np.zeros(len(y)), y, groups))


ModelKind = Literal["numeric", "categorical", "mixed"]


def _make_model(kind: ModelKind, seed: int, n_train: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    if kind == "categorical":
        return make_pipeline(
            OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=1000)
        )
    # Shallow on purpose: a probe asks whether a trivial rule exists, not for the best model.
    # The default leaf size (20) forbids any split below 40 training rows; scale it down so
    # small pilot cohorts can still show a shortcut, and keep 20 for real-sized ones.
    return HistGradientBoostingClassifier(
        max_depth=3,
        max_iter=100,
        min_samples_leaf=min(20, max(3, n_train // 10)),
        early_stopping=False,
        random_state=seed,
    )


def out_of_fold_scores(
    x: np.ndarray,
    y: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    kind: ModelKind,
    seed: int,
) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    scores = np.full(len(y), np.nan)
    with threadpool_limits(1):  # one thread per model: the audit runs beside other work
        for train, test in folds:
            if len(np.unique(y[train])) < 2:
                scores[test] = float(np.mean(y[train]))
                continue
            model = _make_model(kind, seed, len(train))
            model.fit(x[train], y[train])
            scores[test] = model.predict_proba(x[test])[:, 1]
    return scores


@dataclass
class ProbeResult:
    auc: float
    ci_low: float
    ci_high: float
    n: int
    n_groups: int
    folds: int


def probe_auc(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    kind: ModelKind,
    seed: int,
) -> ProbeResult:
    scores = out_of_fold_scores(x, y, folds, kind, seed)
    auc = weighted_auc(y, scores)
    low, high = bootstrap_auc_ci(y, scores, groups, np.random.default_rng(seed))
    return ProbeResult(auc, low, high, len(y), group_codes(groups)[1], len(folds))


def severity_for_auc(auc: float, high: float, warning: float) -> Severity:
    if math.isnan(auc):
        return "info"
    return "high" if auc >= high else "warning" if auc >= warning else "ok"


def fmt_auc(probe: ProbeResult) -> str:
    if math.isnan(probe.auc):
        return "AUC not computable"
    return f"AUC {probe.auc:.2f} (95% CI {probe.ci_low:.2f}–{probe.ci_high:.2f})"


def probe_figures(probe: ProbeResult) -> dict[str, Any]:
    return {
        "auc": round(probe.auc, 4) if not math.isnan(probe.auc) else None,
        "ci_low": round(probe.ci_low, 4) if not math.isnan(probe.ci_low) else None,
        "ci_high": round(probe.ci_high, 4) if not math.isnan(probe.ci_high) else None,
        "n": probe.n,
        "groups": probe.n_groups,
        "folds": probe.folds,
    }
