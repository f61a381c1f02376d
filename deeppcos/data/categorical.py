"""Categorical feature columns: values that name a category (sex F/M, a blood group, a site's
device) rather than measure a quantity.

In a cohort a categorical column is a pandas ``category`` column of text labels (unordered; the
categories in the spec's order when it lists them, else sorted). Models encode the labels with
the categories they were trained on (``deeppcos.tabular.categories``), so a category a new
cohort brings that training never saw is reported and scored as missing, never mistaken for
another one's code.

Which columns are categorical: those the spec declares (``patients.categorical``), and, when the
spec does not list its feature columns, a text column with at most ``max_categories`` distinct
values (inferred, and the load report says so). A declared column with more distinct values is
free text, and is refused with the column named.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deeppcos.data.report import LoadReport
from deeppcos.exceptions import SchemaError


def category_text(value: object) -> str | None:
    """A cell as a category label: stripped text, integral numbers without '.0'; None if empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def looks_categorical(values: pd.Series, max_categories: int) -> bool:
    """Mostly text, with few distinct values: a categorical column the spec did not declare."""
    labels = values.map(category_text).dropna()
    if labels.empty:
        return False
    numeric = pd.to_numeric(labels, errors="coerce").notna().mean()
    return numeric <= 0.5 and labels.nunique() <= max_categories


def read_categorical(
    values: pd.Series,
    column: str,
    declared: list[str] | None,
    max_categories: int,
    report: LoadReport,
    file: str,
) -> pd.Series:
    """The column as a category series. With ``declared`` categories a value outside them is
    reported and set missing; without, more than ``max_categories`` distinct values is an
    error (free text is not a category)."""
    labels = values.map(category_text)
    if declared is not None:
        allowed = [str(c) for c in declared]
        outside = labels.notna() & ~labels.isin(allowed)
        report_each(
            report,
            labels[outside],
            "coerced",
            "not one of the spec's categories for this column; set to missing",
            file=file,
            column=column,
            expected=allowed,
        )
        labels = labels.where(~outside, None)
        categories = allowed
    else:
        distinct = labels.dropna().unique()
        if len(distinct) > max_categories:
            examples = ", ".join(repr(v) for v in distinct[:3])
            raise SchemaError(
                f"{file}: column {column!r} has {len(distinct)} distinct values (e.g. {examples}),"
                f" more than max_categories ({max_categories}): free text is not a categorical "
                "feature; leave it out of the features, list its categories under "
                "patients.categorical, or raise patients.max_categories"
            )
        categories = sorted(str(v) for v in distinct)
    return pd.Series(pd.Categorical(labels, categories=categories), index=values.index, name=column)


def report_each(
    report: LoadReport,
    labels: pd.Series,
    action: str,
    message: str,
    *,
    file: str,
    column: str,
    expected: list[str],
) -> None:
    """One warning per cell of ``labels`` (indexed by row), naming the categories expected."""
    for row, value in labels.items():
        report.add(
            "warning",
            action,
            message,
            file=file,
            row=row,
            column=column,
            found=value,
            expected=", ".join(expected),
        )


UNSEEN = "a category the model was not trained on; scored as missing"


def report_inferred(report: LoadReport, file: str, column: str, series: pd.Series) -> None:
    categories = list(series.cat.categories)
    report.add(
        "info",
        "categorical",
        f"text with {len(categories)} distinct value{'s' if len(categories) != 1 else ''}: used "
        "as a categorical feature "
        f"({', '.join(categories)}); declare patients.categorical to fix the categories",
        file=file,
        column=column,
    )


def categorical_columns(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Which of ``columns`` hold categories (pandas ``category`` dtype)."""
    return [c for c in columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
