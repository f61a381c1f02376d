"""Binary metrics with patient-level bootstrap confidence intervals.

Every score is computed on one prediction per patient, so resampling rows resamples patients.
Keys returned by ``binary_metrics`` are stable (scripts read them from ``metrics.json``):
``n``, ``positives``, ``roc_auc``, ``roc_auc_ci`` ([low, high], 95%), ``pr_auc``, ``brier``,
``log_loss``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss

from deeppcos.stats import bootstrap_auc_ci, weighted_auc

N_BOOTSTRAP = 1000


def binary_metrics(
    y_true: np.ndarray | Any,
    probability: np.ndarray | Any,
    *,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
) -> dict[str, Any]:
    """Discrimination and calibration of P(label = 1); rows with a missing value are left out."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(probability, dtype=float)
    keep = ~(np.isnan(y) | np.isnan(p))
    y, p = y[keep].astype(int), p[keep]
    out: dict[str, Any] = {"n": len(y), "positives": int(y.sum())}
    if len(np.unique(y)) < 2:
        out.update(
            {
                "roc_auc": None,
                "roc_auc_ci": None,
                "pr_auc": None,
                "brier": None,
                "log_loss": None,
                "note": "needs both classes",
            }
        )
        return out
    low, high = bootstrap_auc_ci(y, p, np.arange(len(y)), np.random.default_rng(seed), n_boot)
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    out.update(
        {
            "roc_auc": round(weighted_auc(y, p), 4),
            "roc_auc_ci": [round(low, 4), round(high, 4)],
            "pr_auc": round(float(average_precision_score(y, p)), 4),
            "brier": round(float(brier_score_loss(y, p)), 4),
            "log_loss": round(float(log_loss(y, clipped, labels=[0, 1])), 4),
        }
    )
    return out
