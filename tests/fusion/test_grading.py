"""Severity that agrees with presence: the head learns the grade given PCOS, and one output
combines it with the calibrated risk and the decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deeppcos.exceptions import RunError, SchemaError
from deeppcos.fusion.grading import (
    SeverityTargets,
    grades_given_pcos,
    label_grade_conflicts,
    with_no_disease_level,
)
from deeppcos.inference.predictor import given_pcos, severity_columns
from deeppcos.pipeline.training import presence_agreement

LEVELS = ["none", "mild", "moderate", "severe"]


def _targets(values: list, levels: list[str] = LEVELS) -> SeverityTargets:
    index = pd.Index([f"p{i}" for i in range(len(values))], name="patient_id")
    grades = pd.Series(values, index=index).astype(pd.CategoricalDtype(levels, ordered=True))
    return SeverityTargets(grades, "column", levels)


def test_severity_agrees_with_the_decision_and_the_risk() -> None:
    rng = np.random.default_rng(0)
    given = rng.dirichlet(np.ones(3), size=50)
    risk = rng.uniform(0, 1, 50)
    risk[3] = np.nan  # no prediction
    decision = pd.array([pd.NA if np.isnan(r) else r >= 0.3 for r in risk], dtype="boolean")
    out = severity_columns(given, risk, decision, LEVELS, LEVELS[1:])
    scored = ~np.isnan(risk)
    flagged = np.asarray(decision.fillna(False), dtype=bool)
    assert (out["severity"][flagged] != "none").all()
    assert (out["severity"][scored & ~flagged] == "none").all()
    assert out["severity"].isna()[~scored].all() and out.iloc[3, 1:].isna().all()
    np.testing.assert_allclose(out["p_severity_none"][scored], 1 - risk[scored])
    np.testing.assert_allclose(out.filter(like="p_severity_").sum(axis=1)[scored], 1)
    # A flagged patient's grade is the most probable one given PCOS.
    best = np.array(LEVELS[1:])[given.argmax(axis=1)]
    assert (out["severity"][flagged].astype(str) == best[flagged]).all()
    row = out.filter(like="p_severity_").iloc[0]
    shares = given_pcos({k.removeprefix("p_severity_"): v for k, v in row.items()})
    np.testing.assert_allclose(list(shares.values()), given[0])
    agreement = presence_agreement(out["severity"], decision, LEVELS)
    assert agreement["contradictions"] == 0
    assert sum(agreement["table"]["flagged"].values()) == int(flagged.sum())
    with pytest.raises(RunError, match="do not extend"):
        severity_columns(given, risk, decision, LEVELS, ["a", "b", "c"])


def test_the_head_learns_pcos_grades_of_pcos_patients_only() -> None:
    targets = _targets(["none", "mild", "severe", "none", "moderate", "mild", None])
    labels = pd.Series([0, 1, 1, 1, 0, 1, 1], index=targets.grades.index)
    given = grades_given_pcos(targets.grades, labels, LEVELS)
    assert list(given.cat.categories) == LEVELS[1:]
    assert given.iloc[1] == "mild" and given.iloc[2] == "severe"
    assert given.notna().tolist() == [False, True, True, False, False, True, False]
    conflicts = label_grade_conflicts(targets.grades, labels, LEVELS)
    assert conflicts == {"pcos_label_graded_none": 1, "no_pcos_label_with_pcos_grade": 1}


def test_grades_without_a_no_disease_level_get_one() -> None:
    levels = ["mild", "moderate", "severe"]
    targets = _targets(["mild", None, "severe", None], levels)
    labels = pd.Series([1, 0, 1, 0], index=targets.grades.index)
    extended = with_no_disease_level(targets, labels)
    assert extended.levels == ["none", *levels]
    assert extended.grades.tolist()[0] == "mild" and pd.isna(extended.grades.iloc[1])
    # Already starting with "no PCOS": unchanged, whether or not those patients are graded.
    same = _targets(["none", "mild"])
    assert with_no_disease_level(same, pd.Series([0, 1], index=same.grades.index)) is same
    ungraded = _targets([None, "mild"])
    labels = pd.Series([0, 1], index=ungraded.grades.index)
    assert with_no_disease_level(ungraded, labels) is ungraded
    # Patients without PCOS mostly holding another grade: not presence plus severity.
    odd = _targets(["severe", "severe", "mild"], levels)
    with pytest.raises(SchemaError, match="lowest grade must mean"):
        with_no_disease_level(odd, pd.Series([0, 0, 1], index=odd.grades.index))


def test_phenotype_grades_only_for_a_pcos_cohort() -> None:
    """Severity by PCOS phenotype means nothing for a cardiomegaly label: no criteria grades
    for another cohort, whatever source asks for them; a PCOS cohort still gets them."""
    from deeppcos.data.cohort import Cohort, empty_images_table
    from deeppcos.data.spec import spec_from_dict
    from deeppcos.fusion.grading import severity_targets

    patients = pd.DataFrame(
        {
            "patient_id": ["a", "b"],
            "label": pd.array([1, 0], dtype="Int8"),
            "cycle_irregular": [1.0, 0.0],
            "total_testosterone_nmol_l": [3.0, 1.0],
        }
    )

    def cohort(label_name: str) -> Cohort:
        spec = spec_from_dict({"name": "t", "label_name": label_name, "patients": {}})
        features = ["cycle_irregular", "total_testosterone_nmol_l"]
        return Cohort(spec, patients, empty_images_table(), features)

    for source in ("auto", "criteria"):
        assert severity_targets(cohort("cardiomegaly"), source, "rotterdam-2003") is None
    pcos = severity_targets(cohort("pcos"), "auto", "rotterdam-2003")
    assert pcos is not None and pcos.source == "criteria"
