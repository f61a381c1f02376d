"""FHIR as a cohort (issue 18 §5): a Bundle, a folder of them or an NDJSON bulk export read with
a spec (``format: fhir``), the label from Condition resources, every problem placed by file and
line; and the real Kaggle table written as FHIR and read back value for value."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from deeppcos.cli import app
from deeppcos.data import load_cohort
from deeppcos.data.fhir import FhirError
from deeppcos.exceptions import ConfigError
from tests.conftest import REPO

CODE = "urn:example:diagnoses|pcos"  # a local test code: the reference verifies no PCOS code
STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def _patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1990-01-01"}


def _lh(pid: str, value: float, n: int = 0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"{pid}-lh-{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "10501-5"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-03-01T08:00:00Z",
        "valueQuantity": {
            "value": value,
            "unit": "[IU]/L",
            "system": "http://unitsofmeasure.org",
            "code": "[IU]/L",
        },
    }


def _condition(pid: str, code: str = CODE, status: str | None = "confirmed") -> dict[str, Any]:
    system, _, value = code.partition("|")
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": system, "code": value}]},
    }
    if status:
        resource["verificationStatus"] = {"coding": [{"system": STATUS, "code": status}]}
    return resource


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def _spec(tmp_path: Path, source: Path, **fields: Any) -> Path:
    spec = {"name": "fhir", "format": "fhir", "fhir": {"path": str(source), "label_codes": [CODE]}}
    spec.update(fields)
    path = tmp_path / "cohort.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


RESOURCES = [
    *(_patient(p) for p in "abcde"),
    *(_lh(p, 5.0 + i) for i, p in enumerate("abcde")),
    _condition("a"),
    _condition("b", status=None),  # no verification status: a recorded diagnosis
    _condition("c", status="refuted"),
    _condition("d", code="http://other.example|pcos"),  # another system: not the label
]


def test_the_label_comes_from_condition_codes(tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_text(json.dumps(_bundle(RESOURCES)))
    cohort = load_cohort(_spec(tmp_path, tmp_path / "bundle.json", label_name="pcos"))
    labels = dict(zip(cohort.patients["patient_id"], cohort.patients["label"], strict=True))
    assert labels == {"a": 1, "b": 1, "c": 0, "d": 0, "e": 0}
    assert cohort.spec.label_name == "pcos" and cohort.feature_columns == ["age_years", "lh_iu_l"]
    refuted = [e for e in cohort.report.entries if e.found == "refuted"]
    assert refuted and "not a diagnosis" in refuted[0].message
    assert any("2 of 5 patients" in e.message for e in cohort.report.entries)


def test_an_ndjson_export_with_a_bad_line_is_read_and_the_line_named(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    by_kind: dict[str, list[str]] = {}
    for resource in RESOURCES:
        by_kind.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    by_kind["Observation"].insert(2, '{"resourceType": "Observation", "status": ')  # cut short
    for kind, lines in by_kind.items():
        (export / f"{kind}.ndjson").write_text("\n".join(lines) + "\n")
    cohort = load_cohort(_spec(tmp_path, export))
    assert len(cohort.patients) == 5 and int(cohort.patients["label"].sum()) == 2
    (bad,) = [e for e in cohort.report.entries if e.level == "excluded" and e.row == 3]
    assert bad.file.endswith("Observation.ndjson") and "not valid JSON" in bad.message
    np.testing.assert_allclose(sorted(cohort.patients["lh_iu_l"]), [5, 6, 7, 8, 9])


def test_a_folder_of_bundles_and_a_patient_in_two_files(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    folder.mkdir()
    (folder / "one.json").write_text(json.dumps(_bundle([_patient("a"), _lh("a", 4.0)])))
    (folder / "two.json").write_text(
        json.dumps(_bundle([_patient("b"), _lh("b", 6.0), _condition("b")]))
    )
    cohort = load_cohort(_spec(tmp_path, folder))
    assert dict(zip(cohort.patients["patient_id"], cohort.patients["label"], strict=True)) == {
        "a": 0,
        "b": 1,
    }
    (folder / "three.json").write_text(json.dumps(_bundle([_patient("a")])))
    with pytest.raises(FhirError, match=r"three\.json entry\[0\].*repeats one\.json entry\[0\]"):
        load_cohort(_spec(tmp_path, folder))


def test_an_unlabelled_fhir_cohort_and_another_kind_of_cohort(tmp_path: Path) -> None:
    old = [_patient("a"), {**_lh("a", 5.0)}]
    old[0]["birthDate"] = "1950-01-01"  # 74 at the observation: no PCOS study's age
    (tmp_path / "b.json").write_text(json.dumps(_bundle(old)))
    spec = {"name": "f", "format": "fhir", "label_name": "finding", "fhir": {"path": "b.json"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    cohort = load_cohort(tmp_path / "s.yaml")
    assert "label" not in cohort.patients
    assert cohort.patients["age_years"].iloc[0] == pytest.approx(74.2, abs=0.1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fhir": None}, "format 'fhir' needs a 'fhir' section"),
        ({"fhir": {"path": "x", "label_codes": ["pcos"]}}, "must be 'system|code'"),
        ({"format": "tables", "patients": {}}, "a 'fhir' section needs format: fhir"),
    ],
)
def test_spec_mistakes_are_named(tmp_path: Path, fields: dict, message: str) -> None:
    spec = {"name": "f", "format": "fhir", "fhir": {"path": "x"}, **fields}
    if spec["fhir"] is None:
        del spec["fhir"]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=message):
        load_cohort(tmp_path / "s.yaml")


def test_validate_reads_a_fhir_cohort(tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_text(json.dumps(_bundle(RESOURCES)))
    result = CliRunner().invoke(app, ["validate", str(_spec(tmp_path, tmp_path / "bundle.json"))])
    assert result.exit_code == 0, result.output
    assert "0: 3, 1: 2" in result.output


@pytest.mark.usefixtures("shared_data")
def test_the_real_kaggle_table_round_trips_through_fhir(tmp_path: Path) -> None:
    """Every value of every feature with a verified LOINC code, and every label, comes back."""
    from deeppcos.data.fhir_export import exportable, write_ndjson

    kaggle = load_cohort(REPO / "configs" / "pcos-kaggle-tabular.yaml")
    features, left_out = exportable(kaggle.feature_columns)
    assert "cycle_irregular" in left_out and "amh_ng_ml" in features  # no invented codes
    when = datetime(2020, 1, 15, 9, tzinfo=UTC)
    counts = write_ndjson(kaggle.patients, features, tmp_path / "ndjson", CODE, when)
    assert counts["Patient"] == 541 and counts["Condition"] == 177
    back = load_cohort(_spec(tmp_path, tmp_path / "ndjson"))
    table = kaggle.patients.set_index("patient_id")
    read = back.patients.set_index("patient_id").loc[table.index]
    assert (read["label"].astype(int) == table["label"].astype(int)).all()
    for feature in features:
        np.testing.assert_allclose(
            read[feature].to_numpy(dtype=float), table[feature].to_numpy(dtype=float), rtol=1e-9
        )
