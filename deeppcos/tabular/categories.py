"""Categorical model inputs: the categories a model was trained on, and their encodings.

A model's design matrix is all float64: a categorical column holds the index of its label in the
model's own category list (NaN = missing), so the arrays, the scoring paths and the saved files
stay numeric. The label → code mapping belongs to the *model* (saved with it), never to the
cohort being scored: a cohort whose data bring categories in another order, or a category the
model never saw, is encoded by label, and an unseen label is scored as missing and reported.

* XGBoost reads the codes natively as categories (``feature_types`` "c", partition splits);
* linear parts (the logistic severity head) see one indicator column per category
  (:func:`one_hot`), never the codes as if they were quantities;
* explanations show the label ("sex = M"), via :func:`label_of`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from deeppcos.data.categorical import UNSEEN, category_text, report_each
from deeppcos.data.report import LoadReport

# Where a design matrix carries its model's categories (pandas keeps attrs through slicing).
CATEGORIES_ATTR = "categories"

Categories = Mapping[str, list[str]]


def categories_of(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The categories of each ``category``-dtype column of a frame (a cohort's features)."""
    return {
        str(c): [str(v) for v in frame[c].cat.categories]
        for c in frame.columns
        if isinstance(frame[c].dtype, pd.CategoricalDtype)
    }


def encode(
    frame: pd.DataFrame,
    categories: Categories,
    report: LoadReport | None = None,
    file: str = "",
) -> pd.DataFrame:
    """``frame`` with each categorical column replaced by float codes in ``categories``' order;
    a label outside them becomes NaN and, with ``report``, an ``unseen_category`` entry per
    row. The result carries ``categories`` in ``attrs``."""
    out = frame.copy()
    for column, known in categories.items():
        if column not in out:
            continue
        labels = out[column].map(category_text)
        codes = labels.map({label: float(k) for k, label in enumerate(known)})
        unseen = labels.notna() & codes.isna()
        if report is not None:
            report_each(
                report,
                labels[unseen],
                "unseen_category",
                UNSEEN,
                file=file,
                column=column,
                expected=list(known),
            )
        out[column] = codes.astype("float64")
    out.attrs[CATEGORIES_ATTR] = {c: list(v) for c, v in categories.items()}
    return out


def feature_types(names: list[str], categories: Categories) -> list[str]:
    """XGBoost's per-column types: "c" for a categorical input, "q" for a quantity."""
    return ["c" if name in categories else "q" for name in names]


def one_hot(frame: pd.DataFrame, categories: Categories) -> pd.DataFrame:
    """Each categorical code column replaced by one 0/1 column per category, named
    ``column=label`` (NaN in all of them where the category is missing)."""
    present = [c for c in categories if c in frame]
    if not present:
        return frame
    out = frame.drop(columns=present)
    for column in present:
        codes = frame[column].to_numpy(dtype="float64", na_value=np.nan)
        for k, label in enumerate(categories[column]):
            out[f"{column}={label}"] = np.where(np.isnan(codes), np.nan, (codes == k) * 1.0)
    return out


def label_of(categories: Categories, column: str, value: float | None) -> str | None:
    """The category label of a code, or None when ``column`` is not categorical."""
    known = categories.get(column)
    if known is None:
        return None
    if value is None or np.isnan(value):
        return "missing"
    index = int(value)
    return known[index] if 0 <= index < len(known) else "unseen"
