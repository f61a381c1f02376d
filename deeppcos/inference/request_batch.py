"""Service requests merged into one model call, and the predictions handed back to each.

A labs-only JSON request needs no cohort of its own: its checked values are a small matrix
(:class:`RequestRows`), and a micro-batch of such requests becomes one cohort with one
``numpy`` stack. Requests that bring images or a FHIR Bundle arrive as cohorts (their images
are files in a temporary folder); a batch holding any of those is merged frame by frame.

Two requests may use the same patient id: inside a batch each id is prefixed with its request's
position (``"3/P-1"``), and :func:`split_predictions` restores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.data.cohort import Cohort, empty_images_table
from deeppcos.data.report import LoadReport
from deeppcos.data.spec import CohortSpec

__all__ = ["RequestRows", "merge_requests", "split_predictions"]


@dataclass
class RequestRows:
    """One JSON request's patients, checked: ids, the numeric inputs as a matrix (values
    outside the plausible range already missing), each categorical input's labels (unseen
    ones already missing) and the request's load report."""

    spec: CohortSpec
    ids: list[str]
    numeric: list[str]
    values: np.ndarray  # (patients, numeric) float64
    categorical: dict[str, list[Any]] = field(default_factory=dict)
    report: LoadReport = field(default_factory=LoadReport)

    def frame(self) -> pd.DataFrame:
        """The patients table, row i = patient i."""
        frame = pd.DataFrame(self.values, columns=self.numeric)
        frame.insert(0, "patient_id", self.ids)
        for column, labels in self.categorical.items():
            frame[column] = pd.Series(labels, dtype=object)
        frame.index = pd.RangeIndex(0, len(frame), name="row")
        return frame

    def cohort(self) -> Cohort:
        columns = [*self.numeric, *self.categorical]
        return Cohort(self.spec, self.frame(), empty_images_table(), columns, self.report)

    @property
    def patients(self) -> int:
        return len(self.ids)


def merge_requests(
    requests: Sequence[RequestRows | Cohort], columns: list[str], spec: CohortSpec
) -> tuple[Cohort, list[list[str]]]:
    """One cohort of every request's patients over ``columns`` (the model's inputs), for one
    model call, and each request's own ids."""
    parts = [_ids(request) for request in requests]
    prefixed = [f"{k}/{pid}" for k, ids in enumerate(parts) for pid in ids]
    if all(isinstance(r, RequestRows) for r in requests):
        patients = _stack_rows([r for r in requests if isinstance(r, RequestRows)], columns)
        images = empty_images_table()
    else:
        cohorts = [r.cohort() if isinstance(r, RequestRows) else r for r in requests]
        patients = pd.concat([c.patients for c in cohorts], ignore_index=True)
        patients = patients.reindex(columns=["patient_id", *columns])
        images = _merged_images(cohorts)
    # Plain Python strings: converting a few ids to pandas' Arrow strings costs more than the
    # rest of the merge, and they only travel to the output.
    patients["patient_id"] = np.array(prefixed, dtype=object)
    return Cohort(spec, patients, images, list(columns), LoadReport()), parts


def split_predictions(
    predictions: pd.DataFrame, parts: list[list[str]]
) -> list[list[dict[str, Any]]]:
    """Each request's rows of a merged prediction (one record per patient), in its own order,
    under its own ids."""
    # Column lists zipped into records: DataFrame.to_dict("records") costs more for a few rows.
    names = list(predictions.columns)
    columns = [_native(predictions[name]) for name in names]
    records = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    out, start = [], 0
    for ids in parts:
        own = records[start : start + len(ids)]
        for record, pid in zip(own, ids, strict=True):
            record["patient_id"] = pid
        out.append(own)
        start += len(ids)
    return out


def _native(column: pd.Series) -> list[Any]:
    """The column's values as Python objects, as ``DataFrame.to_dict`` gives them (a masked or
    string column's missing value is None)."""
    values = column.tolist()
    if isinstance(column.dtype, pd.BooleanDtype | pd.StringDtype) and column.hasnans:
        return [None if v is pd.NA else v for v in values]
    return values


def _ids(request: RequestRows | Cohort) -> list[str]:
    if isinstance(request, RequestRows):
        return request.ids
    return [str(i) for i in request.patients["patient_id"]]


def _stack_rows(requests: list[RequestRows], columns: list[str]) -> pd.DataFrame:
    """The requests' values under ``columns`` as one table (a column a request lacks is
    missing for its patients)."""
    categorical = [c for c in columns if any(c in r.categorical for r in requests)]
    numeric = [c for c in columns if c not in categorical]
    blocks = []
    for request in requests:
        if request.numeric[: len(numeric)] == numeric:  # the usual case: the model's columns first
            blocks.append(request.values[:, : len(numeric)])
            continue
        where = {name: j for j, name in enumerate(request.numeric)}
        block = np.full((request.patients, len(numeric)), np.nan)
        for i, name in enumerate(numeric):
            if name in where:
                block[:, i] = request.values[:, where[name]]
        blocks.append(block)
    frame = pd.DataFrame(np.vstack(blocks), columns=numeric)
    for column in categorical:
        labels = [
            label for r in requests for label in r.categorical.get(column, [None] * r.patients)
        ]
        frame[column] = pd.Series(labels, dtype=object)
    return frame


def _merged_images(cohorts: list[Cohort]) -> pd.DataFrame:
    images = []
    for k, cohort in enumerate(cohorts):
        if len(cohort.images):
            own = cohort.images.copy()
            own["patient_id"] = f"{k}/" + own["patient_id"].astype(str)
            own["image_id"] = f"{k}/" + own["image_id"].astype(str)
            images.append(own)
    return pd.concat(images, ignore_index=True) if images else cohorts[0].images.iloc[0:0].copy()
