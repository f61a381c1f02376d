"""Subgroup analysis: does the model work as well in every age band, BMI band and site?

``subgroup_metrics`` returns one row per (column, level) after a first row for the whole cohort
(``group == "all"``), with the columns

``group``, ``level``, ``n``, ``positives``, then for each of ``roc_auc``, ``sensitivity`` and
``specificity``: the value, ``<metric>_low`` and ``<metric>_high`` (95% patient bootstrap, BCa)
and ``<metric>_gap`` (subgroup minus whole cohort: negative means worse in the subgroup), and
``note``. Bounds are NaN where no interval is reported, and ``note`` says why (e.g. too few
resamples with a positive, or an interval that would not contain its estimate).

A gap is a point difference, not a test: read it against the subgroup's interval, which is wide
for small groups (a sensitivity of exactly 0 or 1 gets the Wilson interval, since the bootstrap
one collapses there). Groups smaller than ``min_size`` get point estimates but no interval, and a
note, because a bootstrap on a handful of patients gives intervals that look precise and are
not. Rows missing the group value form their own level, ``missing``, so no patient
silently drops out of the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.evaluation._resample import BinaryScorer, clean_binary, wilson_for_boundaries
from deeppcos.stats import bootstrap

SUBGROUP_METRICS = ("roc_auc", "sensitivity", "specificity")
MISSING_LEVEL = "missing"

# Age bands in completed years, each [low, high): "25–29" holds 25.0 up to 29.99. Chosen to split
# the reproductive-age cohorts this toolkit sees (Kaggle table: 20–48 years) into groups of
# useful size; they are a reporting convention, not clinical cut-offs.
AGE_EDGES = (-np.inf, 25.0, 30.0, 35.0, np.inf)
AGE_LABELS = ("<25", "25–29", "30–34", "≥35")

# WHO adult BMI classes, each [low, high) in kg/m². The obesity cut-off >=30 (classes >=30/35/40)
# is verified in ../shared/clinical-reference.md §1a [R6]. The 18.5 (underweight) and 25
# (overweight) cut-offs are the standard WHO classification (WHO Technical Report Series 894,
# 2000) but the reference does not carry them. The reference also lists WHO Asian action points
# (23.0, 27.5; partly verified, [G14]) that matter for South Asian cohorts such as the Kaggle
# table; band those with pd.cut if needed.
BMI_EDGES = (-np.inf, 18.5, 25.0, 30.0, np.inf)
BMI_LABELS = ("<18.5", "18.5–24.9", "25–29.9", "≥30")


def age_band(age: Any) -> Any:
    """Age band label (``<25``, ``25–29``, ``30–34``, ``≥35``); ``None``/NaN when age is missing.

    A scalar gives a string (or ``None``); an array or Series gives an ordered categorical
    Series (keeping a Series' index), so tables sort the bands in age order.
    """
    return _band(age, AGE_EDGES, AGE_LABELS)


def bmi_band(bmi: Any) -> Any:
    """WHO BMI class label (``<18.5``, ``18.5–24.9``, ``25–29.9``, ``≥30``); see ``BMI_EDGES``."""
    return _band(bmi, BMI_EDGES, BMI_LABELS)


def _band(values: Any, edges: Sequence[float], labels: Sequence[str]) -> Any:
    if np.ndim(values) == 0:
        if values is None or pd.isna(values):
            return None
        return str(pd.cut([float(values)], list(edges), right=False, labels=list(labels))[0])
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    numbers = pd.to_numeric(series, errors="coerce").astype(float)
    return pd.cut(numbers, list(edges), right=False, labels=list(labels), ordered=True)


def subgroup_metrics(
    frame: pd.DataFrame,
    group_columns: Sequence[str],
    y_col: str,
    p_col: str,
    threshold: float,
    min_size: int = 20,
    *,
    seed: int = 0,
    n_boot: int = 1000,
) -> pd.DataFrame:
    """AUC, sensitivity and specificity per level of each group column, with gaps to the cohort.

    ``frame`` holds one row per patient. Rows missing the label or probability are left out of
    every row of the table (their count is in ``result.attrs["excluded"]``).
    """
    missing = [c for c in [y_col, p_col, *group_columns] if c not in frame.columns]
    if missing:
        raise KeyError(f"subgroup_metrics: columns {missing} not in frame ({list(frame.columns)})")
    y, p, keep = clean_binary(frame[y_col], frame[p_col], probabilities=True)
    kept = frame.loc[keep]
    cohort = _row("all", "all", y, p, threshold, min_size, seed, n_boot)
    rows = [cohort]
    for column in group_columns:
        for level, mask in _levels(kept[column]):
            rows.append(_row(column, level, y[mask], p[mask], threshold, min_size, seed, n_boot))
    table = pd.DataFrame(rows)
    for metric in SUBGROUP_METRICS:
        table[f"{metric}_gap"] = table[metric] - cohort[metric]
    ordered = ["group", "level", "n", "positives"]
    for metric in SUBGROUP_METRICS:
        ordered += [metric, f"{metric}_low", f"{metric}_high", f"{metric}_gap"]
    table = table[[*ordered, "note"]]
    table.attrs["excluded"] = int((~keep).sum())
    table.attrs["threshold"] = float(threshold)
    return table


def _levels(values: pd.Series) -> list[tuple[str, np.ndarray]]:
    """(label, row mask) per observed level, in category order when ordered, then ``missing``."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        candidates = list(values.cat.categories)
    else:
        candidates = sorted(values.dropna().unique().tolist(), key=_sort_key)
    out = [(str(level), (values == level).to_numpy()) for level in candidates]
    out.append((MISSING_LEVEL, values.isna().to_numpy()))
    return [(label, mask) for label, mask in out if mask.any()]


def _sort_key(value: Any) -> tuple[int, float, str]:
    # Numbers in numeric order, then everything else as text: mixed sites such as 1, 2, "B".
    if isinstance(value, int | float | np.number):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _row(
    group: str,
    level: str,
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    min_size: int,
    seed: int,
    n_boot: int,
) -> dict[str, Any]:
    scorer = BinaryScorer(y, p, threshold)

    def statistic(weights: np.ndarray) -> dict[str, np.ndarray]:
        scores = {"roc_auc": scorer.ranked.auc(weights), **scorer.at_threshold(weights)}
        return {name: scores[name] for name in SUBGROUP_METRICS}

    small = len(y) < min_size
    scores = bootstrap(statistic, len(y), seed=seed, n_boot=0 if small else n_boot)
    scores = wilson_for_boundaries(scores, scorer.proportions())
    row: dict[str, Any] = {"group": group, "level": level, "n": len(y), "positives": int(y.sum())}
    notes = []
    if small:
        notes.append(f"n = {len(y)} < {min_size}: point estimates only, no interval")
    if len(np.unique(y)) < 2:
        notes.append("one class only: AUC and sensitivity or specificity undefined")
    for name, entry in scores.items():
        ci = entry["ci"] or [np.nan, np.nan]
        value = np.nan if entry["value"] is None else entry["value"]
        row.update({name: value, f"{name}_low": ci[0], f"{name}_high": ci[1]})
        # An undefined value is explained by the one-class note above.
        if entry["value"] is not None and "ci_note" in entry:
            notes.append(f"{name}: {entry['ci_note']}")
    row["note"] = "; ".join(notes)
    return row
