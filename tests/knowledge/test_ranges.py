"""Ranges that belong to the cohort (issue 18 §2): the catalog's plausible limits hold for any
cohort, its PCOS-cohort ranges only for a PCOS cohort, a spec's ranges replace both, and every
report entry says which range applied and where it came from."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deeppcos.data import load_cohort, spec_from_dict
from deeppcos.exceptions import ConfigError
from deeppcos.knowledge.catalog import CATALOG
from deeppcos.knowledge.ranges import catalog_rule, format_range, range_rules
from tests.conftest import SHARED_DATA


def _cohort(tmp_path: Path, rows: list[dict], **spec_fields):
    pd.DataFrame(rows).to_csv(tmp_path / "patients.csv", index=False)
    spec = {"name": "t", "patients": {"path": "patients.csv", "label_column": "y"}}
    spec.update(spec_fields)
    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(spec))
    return load_cohort(tmp_path / "cohort.yaml")


ROWS = [
    {"patient_id": "a", "y": 1, "age_years": 34, "shoe_size": 38},
    {"patient_id": "b", "y": 0, "age_years": 71, "shoe_size": 61},
    {"patient_id": "c", "y": 0, "age_years": -2, "shoe_size": 40},
]


def _out_of_range(cohort) -> dict[tuple[str, str], str]:
    return {(str(e.row), e.column): e.message for e in cohort.report.by_action("out_of_range")}


def test_pcos_cohort_keeps_the_catalog_pcos_range(tmp_path: Path) -> None:
    cohort = _cohort(tmp_path, ROWS)  # label_name defaults to pcos
    ages = cohort.patients.set_index("patient_id")["age_years"]
    assert ages["a"] == 34 and math.isnan(ages["b"]) and math.isnan(ages["c"])
    message = next(iter(_out_of_range(cohort).values()))
    assert "10–60 a" in message and "PCOS cohort" in message


def test_other_cohort_checks_only_the_physiological_limit(tmp_path: Path) -> None:
    cohort = _cohort(tmp_path, ROWS, label_name="cardiomegaly")
    ages = cohort.patients.set_index("patient_id")["age_years"]
    assert ages["b"] == 71  # an old patient is a patient, not an error
    assert math.isnan(ages["c"])  # no one is −2 years old
    (message,) = [m for (_, col), m in _out_of_range(cohort).items() if col == "age_years"]
    assert "≥ 0 a" in message and "plausible limit" in message


def test_spec_ranges_replace_the_catalog_and_cover_other_columns(tmp_path: Path) -> None:
    cohort = _cohort(tmp_path, ROWS, ranges={"age_years": [0, 120], "shoe_size": [30, 50]})
    table = cohort.patients.set_index("patient_id")
    assert table.loc["b", "age_years"] == 71  # inside the spec's 0–120 although a PCOS cohort
    assert math.isnan(table.loc["b", "shoe_size"])  # a non-catalog column, ranged by the spec
    messages = [m for (_, col), m in _out_of_range(cohort).items() if col == "shoe_size"]
    assert messages == ["outside the plausible range 30–50 (the spec's ranges); set to missing"]
    assert cohort.summary()["ranges"]["shoe_size"] == {
        "low": 30.0,
        "high": 50.0,
        "unit": "",
        "source": "spec",
    }


def test_a_non_catalog_column_has_no_range_unless_the_spec_gives_one(tmp_path: Path) -> None:
    cohort = _cohort(tmp_path, ROWS, label_name="other")
    assert cohort.patients.set_index("patient_id").loc["b", "shoe_size"] == 61
    assert "shoe_size" not in cohort.summary()["ranges"]


def test_an_open_end_and_a_range_naming_no_feature(tmp_path: Path) -> None:
    cohort = _cohort(
        tmp_path, ROWS, label_name="other", ranges={"shoe_size": [None, 45], "typo_size": [0, 1]}
    )
    assert math.isnan(cohort.patients.set_index("patient_id").loc["b", "shoe_size"])
    notes = [e for e in cohort.report.entries if e.column == "typo_size"]
    assert notes and "not a feature column" in notes[0].message


def test_an_upside_down_range_is_a_spec_error() -> None:
    with pytest.raises(ConfigError, match=r"ranges\.age_years: low 60 is above high 10"):
        spec_from_dict({"name": "t", "patients": {}, "ranges": {"age_years": [60, 10]}})


def test_catalog_keeps_population_ranges_apart_from_limits() -> None:
    age = CATALOG["age_years"]
    assert age.pcos_range == (10, 60) and age.plausible == (0, math.inf)
    assert catalog_rule("age_years", pcos=False).text() == "≥ 0 a"
    assert catalog_rule("lh_iu_l", pcos=False) == catalog_rule("lh_iu_l", pcos=True)
    assert set(range_rules(["age_years", "not_in_catalog"], pcos=True)) == {"age_years"}
    assert format_range(-math.inf, 5, "mm") == "≤ 5 mm"


def test_predictions_check_what_training_checked(tmp_path: Path) -> None:
    """A run records its ranges; new patients are checked against them (service, dashboard)."""
    from deeppcos.inference.predictor import Predictor

    # What load_run reads from the run's cohort.json.
    summary = {"pcos": False, "ranges": {"age_years": {"low": 0, "high": 120, "source": "spec"}}}
    predictor = Predictor(run=tmp_path, config=None, record={}, cohort_summary=summary)  # type: ignore[arg-type]
    rules = predictor.input_ranges(["age_years", "weight_kg", "shoe_size"])
    assert (rules["age_years"].high, rules["age_years"].source) == (120, "spec")
    assert rules["weight_kg"].source == "catalog"  # not a PCOS run: no adult-weight range
    assert "shoe_size" not in rules


@pytest.mark.usefixtures("shared_data")
def test_real_chest_xray_ages_survive_a_catalog_name(tmp_path: Path) -> None:
    """The NIH table, one row per image, 'Patient Age' renamed to the catalog's age_years: as a
    chest X-ray cohort every real age is kept; declared a PCOS cohort, ages outside 10–60 are
    not plausible for one and are set missing, each reported."""
    table = SHARED_DATA / "chestxr8-seed-sample" / "Data_Entry_2017_v2020_subset.csv"
    patients = {
        "path": str(table),
        "id_column": "Image Index",
        "label_column": None,
        "rename": {"Patient Age": "age_years"},
        "feature_columns": ["age_years"],
    }
    raw = pd.read_csv(table)
    outside = int(((raw["Patient Age"] > 60) | (raw["Patient Age"] < 10)).sum())
    assert outside > 100  # the premise: many real patients are older than a PCOS cohort

    def load(**fields):
        spec = {"name": "nih", "patients": patients, **fields}
        (tmp_path / "nih.yaml").write_text(yaml.safe_dump(spec))
        return load_cohort(tmp_path / "nih.yaml")

    chest = load(label_name="finding", image_modality="chest X-ray")
    assert chest.report.by_action("out_of_range") == []
    assert chest.patients["age_years"].notna().sum() == len(raw)
    as_pcos = load(pcos=True)
    assert len(as_pcos.report.by_action("out_of_range")) == outside
