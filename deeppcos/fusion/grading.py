"""The severity stage: where the grades come from, what the ordinal head sees, and its
cross-validation.

* **Grades.** A cohort's own ``severity`` column when it has one; otherwise (or when asked) the
  Rotterdam-criteria labeller (:mod:`deeppcos.knowledge.criteria`) derives criteria, phenotype and a
  grade from the columns present, under the guideline the config names. Patients whose grade is
  unknown are not trained on (they are still scored).
* **Inputs.** The tabular branch's design matrix and the image branch's out-of-fold logit. When
  the grades were derived by the labeller, the columns it read — and the features derived from
  them — are removed from the head's inputs; otherwise the head would simply relearn the rule
  (``CriteriaResult.exclude_from_inputs``).
* **Severity agrees with presence.** The lowest grade means "no PCOS"; the head learns the
  grade *given PCOS* (mild < moderate < severe), from the development patients whose label is
  PCOS and whose grade is a PCOS grade. A patient's severity output then combines it with the
  calibrated presence risk (``deeppcos.inference.predictor.severity_columns``): P(none) = 1 − risk,
  P(g) = risk × P(g | PCOS), and the reported grade is "none" unless the decision is positive,
  else the most probable grade given PCOS. Rows whose label and grade contradict each other
  (a PCOS label graded "none", or no PCOS with a PCOS grade, as the criteria labeller produces
  on real tables) are left out of the head's training and counted (:func:`label_grade_conflicts`).
* **Honest figures.** The head is cross-validated over the development part's patient-grouped
  folds (its image input is already out of fold) and combined with the out-of-fold risk and
  decision, giving out-of-fold grades for quadratic weighted kappa and macro F1 over every
  graded patient; the saved head is then fitted on every PCOS-graded development patient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from deeppcos.exceptions import SchemaError
from deeppcos.fusion.severity import Kind, OrdinalHead
from deeppcos.tabular.categories import CATEGORIES_ATTR, one_hot

if TYPE_CHECKING:
    from deeppcos.data.cohort import Cohort
    from deeppcos.knowledge.criteria import Guideline

__all__ = [
    "IMAGE_INPUT",
    "SeverityTargets",
    "cross_val_severity",
    "grades_given_pcos",
    "label_grade_conflicts",
    "severity_inputs",
    "severity_targets",
]

IMAGE_INPUT = "image_logit"


@dataclass
class SeverityTargets:
    """Grades for every patient of the cohort (ordered categorical, index ``patient_id``)."""

    grades: pd.Series
    source: str  # "column" or "criteria"
    levels: list[str]
    excluded_inputs: list[str] = field(default_factory=list)
    guideline: str | None = None
    criteria: dict[str, Any] | None = None  # criteria_summary of the labelling, when derived

    def describe(self) -> dict[str, Any]:
        counts = self.grades.value_counts(dropna=False, sort=False)
        return {
            "source": self.source,
            "guideline": self.guideline,
            "levels": self.levels,
            "graded_patients": int(self.grades.notna().sum()),
            "grade_counts": {str(k): int(v) for k, v in counts.items()},
            "excluded_inputs": self.excluded_inputs,
            "criteria": self.criteria,
        }


def severity_targets(cohort: Cohort, source: str, guideline: Guideline) -> SeverityTargets | None:
    """The grades the head learns, or ``None`` when ``source="column"`` and the cohort has none,
    or when the grades would come from the PCOS criteria and the cohort is not a PCOS cohort.

    ``source``: ``"column"``, ``"criteria"`` or ``"auto"`` (the column when it holds any grade,
    the criteria otherwise).
    """
    patients = cohort.patients
    has_column = "severity" in patients and patients["severity"].notna().any()
    if source == "column" or (source == "auto" and has_column):
        if not has_column:
            return None
        grades = patients.set_index("patient_id")["severity"]
        return SeverityTargets(grades, "column", [str(c) for c in grades.cat.categories])
    if not cohort.spec.is_pcos:
        return None  # grades by PCOS phenotype mean nothing for another label
    return _criteria_targets(cohort, guideline)


def _criteria_targets(cohort: Cohort, guideline: Guideline) -> SeverityTargets:
    from deeppcos.knowledge.criteria import (
        SEVERITY_LEVELS,
        CriteriaRules,
        criteria_summary,
        label_cohort,
    )

    result = label_cohort(cohort, CriteriaRules(guideline=guideline))
    ids = cohort.patients["patient_id"].to_numpy()
    grades = pd.Series(result.frame["severity"].to_numpy(), index=pd.Index(ids, name="patient_id"))
    grades = grades.astype(pd.CategoricalDtype(SEVERITY_LEVELS, ordered=True))
    label = pd.Series(cohort.patients["label"].to_numpy(), index=result.frame.index)
    return SeverityTargets(
        grades=grades.rename("severity"),
        source="criteria",
        levels=list(SEVERITY_LEVELS),
        excluded_inputs=list(result.exclude_from_inputs),
        guideline=guideline,
        criteria=criteria_summary(result, label=label),
    )


def with_no_disease_level(targets: SeverityTargets, labels: pd.Series) -> SeverityTargets:
    """``targets`` whose lowest level means "no PCOS".

    The criteria labeller's and the synthetic cohort's grades start with ``none``. A cohort whose
    own grades are PCOS grades only (label-0 patients ungraded) gets a ``none`` level below them.
    A cohort whose patients without PCOS mostly hold a grade other than the lowest cannot be
    read as presence plus severity: that is an error naming the counts.
    """
    grades = targets.grades
    negatives = grades[labels.reindex(grades.index).eq(0).fillna(False)].dropna()
    if negatives.empty:
        if targets.levels[0] == "none":
            return targets  # "none" already means no PCOS; those patients are just ungraded
        if "none" in targets.levels:
            raise SchemaError(
                f"severity grades {targets.levels}: no patient without PCOS is graded, yet a "
                "'none' grade exists above the lowest; order the grades lowest (no PCOS) first"
            )
        levels = ["none", *targets.levels]
        dtype = pd.CategoricalDtype(levels, ordered=True)
        return SeverityTargets(
            grades=grades.astype(str).where(grades.notna()).astype(dtype),
            source=targets.source,
            levels=levels,
            excluded_inputs=targets.excluded_inputs,
            guideline=targets.guideline,
            criteria=targets.criteria,
        )
    lowest = targets.levels[0]
    share = float((negatives.astype(str) == str(lowest)).mean())
    if share < 0.5:
        raise SchemaError(
            f"severity grades {targets.levels}: only {share:.0%} of the {len(negatives)} graded "
            f"patients without PCOS hold the lowest grade {lowest!r}; the lowest grade must mean "
            "'no PCOS' (or leave patients without PCOS ungraded)"
        )
    return targets


def grades_given_pcos(grades: pd.Series, labels: pd.Series, levels: list[str]) -> pd.Series:
    """The grades the head learns: a PCOS grade of a patient labelled PCOS; missing for the
    rest (no PCOS, ungraded, or a label and grade that contradict each other)."""
    pcos_levels = levels[1:]
    label = labels.reindex(grades.index)
    keep = label.eq(1).fillna(False) & grades.astype(str).isin(pcos_levels) & grades.notna()
    dtype = pd.CategoricalDtype(pcos_levels, ordered=True)
    return grades.astype(str).where(keep).astype(dtype)


def label_grade_conflicts(grades: pd.Series, labels: pd.Series, levels: list[str]) -> dict:
    """Counts of graded, labelled patients whose label and grade disagree."""
    label = labels.reindex(grades.index)
    graded = grades.notna() & label.notna()
    lowest = grades.astype(str) == str(levels[0])
    return {
        "pcos_label_graded_none": int((graded & label.eq(1) & lowest).sum()),
        "no_pcos_label_with_pcos_grade": int((graded & label.eq(0) & ~lowest).sum()),
    }


def severity_inputs(
    tabular: pd.DataFrame | None,
    p_image: pd.Series | None,
    excluded: list[str],
    index: pd.Index,
) -> pd.DataFrame:
    """The head's input table: tabular features (minus ``excluded``) and the image logit."""
    if tabular is None and p_image is None:
        raise SchemaError("the severity head needs the tabular branch, the image branch or both")
    if tabular is None:
        frame = pd.DataFrame(index=index)
    else:
        frame = tabular if tabular.index.equals(index) else tabular.reindex(index)
        if _plain_floats(frame):
            return _float_inputs(frame, p_image, excluded)
        dropped = [c for c in excluded if c in frame]
        frame = frame.drop(columns=dropped) if dropped else frame.copy()
        # Category codes are not quantities: the logistic head must see one indicator per
        # category (the boosted head splits on the indicators as well as on codes).
        frame = one_hot(frame, tabular.attrs.get(CATEGORIES_ATTR, {}))
    if p_image is not None:
        aligned = p_image if p_image.index.equals(index) else p_image.reindex(index)
        p = aligned.to_numpy(dtype="float64").clip(1e-6, 1 - 1e-6)
        frame[IMAGE_INPUT] = np.log(p / (1 - p))
    if frame.shape[1] == 0:
        raise _no_inputs_left(excluded)
    return frame


def _plain_floats(frame: pd.DataFrame) -> bool:
    """No categorical codes and every column a plain float: the inputs can be one matrix."""
    return not frame.attrs.get(CATEGORIES_ATTR) and all(kind == np.float64 for kind in frame.dtypes)


def _float_inputs(
    frame: pd.DataFrame, p_image: pd.Series | None, excluded: list[str]
) -> pd.DataFrame:
    """:func:`severity_inputs` for a table of plain floats, as one matrix (each frame
    operation costs more than the arithmetic for the few rows of a service request)."""
    names = [str(c) for c in frame.columns if c not in excluded]
    positions = [frame.columns.get_loc(c) for c in names]
    blocks = [frame.to_numpy(dtype="float64")[:, positions]]
    if p_image is not None:
        aligned = p_image if p_image.index.equals(frame.index) else p_image.reindex(frame.index)
        p = aligned.to_numpy(dtype="float64").clip(1e-6, 1 - 1e-6)
        blocks.append(np.log(p / (1 - p))[:, None])
        names.append(IMAGE_INPUT)
    if not names:
        raise _no_inputs_left(excluded)
    return pd.DataFrame(np.hstack(blocks), columns=names, index=frame.index)


def _no_inputs_left(excluded: list[str]) -> SchemaError:
    return SchemaError(
        "no input is left for the severity head: the criteria labeller used every tabular "
        f"column ({excluded}) and there is no image branch"
    )


def cross_val_severity(
    inputs: pd.DataFrame,
    grades: pd.Series,
    folds: np.ndarray,
    levels: list[str],
    kind: Kind,
    params: Mapping[str, Any] | None,
    seed: int,
) -> np.ndarray:
    """Out-of-fold class probabilities ``(n, K)`` over the same patient-grouped folds."""
    folds = np.asarray(folds, dtype=object)
    if len(folds) != len(inputs) or len(grades) != len(inputs):
        raise SchemaError(
            f"{len(inputs)} input rows, {len(grades)} grades and {len(folds)} fold values differ"
        )
    out = np.full((len(inputs), len(levels)), np.nan)
    for value in pd.unique(folds):
        held_out = folds == value
        try:
            head = new_head(kind, params, seed).fit(
                inputs[~held_out], grades[~held_out], levels=levels
            )
        except SchemaError as exc:  # e.g. no graded patient outside this fold
            raise SchemaError(f"severity head with fold {value!r} held out: {exc}") from exc
        out[held_out] = head.predict_proba(inputs[held_out])
    return out


def new_head(kind: Kind, params: Mapping[str, Any] | None, seed: int) -> OrdinalHead:
    return OrdinalHead(kind, **dict(params or {}), seed=seed)
