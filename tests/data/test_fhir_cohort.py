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
    assert str(cohort.patients["label"].dtype) == "Int8"
    assert cohort.spec.label_name == "pcos" and cohort.feature_columns == ["age_years", "lh_iu_l"]
    assert cohort.images.empty
    refuted = [e for e in cohort.report.entries if e.found == "refuted"]
    assert refuted and "not a diagnosis" in refuted[0].message
    assert any("2 of 5 patients" in e.message for e in cohort.report.entries)
    (other,) = [e for e in cohort.report.entries if e.column == "Condition.code"]
    assert other.message.startswith("1 Condition resource(s) coded other than") and other.row == (
        "entry[13]"
    )


def test_what_counts_as_a_diagnosis(tmp_path: Path) -> None:
    """entered-in-error never counts; a suspected diagnosis leaves the label missing unless
    another Condition confirms it; the same code in the label's system with another code, or
    no code at all, is not the label; clinicalStatus resolved still counts."""
    resolved = _condition("f")
    resolved["clinicalStatus"] = {"coding": [{"code": "resolved"}]}
    resources = [
        *(_patient(p) for p in "abcdefg"),
        _condition("a", status="entered-in-error"),
        _condition("b", status="provisional"),
        _condition("c", status="differential"),
        _condition("c"),  # … and confirmed elsewhere: 1
        _condition("d", code="urn:example:diagnoses|other"),
        {"resourceType": "Condition", "subject": {"reference": "Patient/e"}},  # no code
        resolved,
        _condition("g", status="made-up"),  # not a code of the value set: missing, warned
    ]
    (tmp_path / "b.json").write_text(json.dumps(_bundle(resources)))
    cohort = load_cohort(_spec(tmp_path, tmp_path / "b.json"))
    labels = cohort.patients.set_index("patient_id")["label"]
    assert labels.isna().to_dict() == {
        "a": False, "b": True, "c": False, "d": False, "e": False, "f": False, "g": True
    }  # fmt: skip
    assert labels.dropna().astype(int).to_dict() == {"a": 0, "c": 1, "d": 0, "e": 0, "f": 1}
    warned = [e for e in cohort.report.entries if e.column == "Condition.verificationStatus"]
    assert [(e.level, e.found) for e in warned] == [
        ("excluded", "entered-in-error"),
        ("warning", "provisional"),
        ("warning", "differential"),
        ("warning", "made-up"),
    ]
    assert "suspected, not diagnosed" in warned[1].message
    assert "not a code of condition-ver-status" in warned[3].message
    assert any("missing for 2 with only a suspected one" in e.message for e in cohort.report)


def test_an_ndjson_export_with_bad_lines_is_read_and_the_lines_named(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    by_kind: dict[str, list[str]] = {}
    for resource in RESOURCES:
        by_kind.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    by_kind["Observation"].insert(2, '{"resourceType": "Observation", "status": ')  # cut short
    by_kind["Condition"].insert(1, "")  # a blank line is no resource and no problem
    by_kind["Condition"].insert(3, '["not", "a", "resource"]')
    for kind, lines in by_kind.items():
        (export / f"{kind}.ndjson").write_text("\n".join(lines) + "\n")
    (export / "README.txt").write_text("not read: neither .json nor .ndjson")
    cohort = load_cohort(_spec(tmp_path, export))
    assert len(cohort.patients) == 5 and int(cohort.patients["label"].sum()) == 2
    bad = [
        (Path(e.file).name, e.row, e.message.split(" (")[0])
        for e in cohort.report.entries
        if e.level == "excluded" and e.column is None
    ]
    assert bad == [
        ("Condition.ndjson", 4, "not a FHIR resource"),
        ("Observation.ndjson", 3, "not valid JSON"),
    ]
    np.testing.assert_allclose(sorted(cohort.patients["lh_iu_l"]), [5, 6, 7, 8, 9])
    # A resource that breaks the structure stops the read, naming its file and line.
    with (export / "Observation.ndjson").open("a") as lines:
        lines.write(json.dumps({**_lh("a", 1.0, n=9), "effectiveDateTime": "1 March"}) + "\n")
    with pytest.raises(FhirError, match=r"Observation\.ndjson:7: resource\.effectiveDateTime"):
        load_cohort(_spec(tmp_path, export))


def test_a_folder_of_bundles_and_a_patient_in_two_files(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    folder.mkdir()
    (folder / "one.json").write_text(json.dumps(_bundle([_patient("a"), _lh("a", 4.0)])))
    (folder / "two.json").write_text(json.dumps(_bundle([_patient("b"), _lh("b", 6.0)])))
    (folder / "two-condition.json").write_text(json.dumps(_condition("b")))  # a lone resource
    (folder / "broken.json").write_text('{"resourceType": "Bundle", ')
    (folder / "manifest.json").write_text(json.dumps({"transactionTime": "2024-01-01"}))
    cohort = load_cohort(_spec(tmp_path, folder))
    table = cohort.patients.set_index("patient_id")
    assert table["label"].to_dict() == {"a": 0, "b": 1}
    assert table["lh_iu_l"].to_dict() == {"a": 4.0, "b": 6.0}
    skipped = sorted(
        (Path(e.file).name, "left out" in e.message)
        for e in cohort.report.entries
        if e.level == "excluded"
    )
    assert skipped == [("broken.json", True), ("manifest.json", True)]
    # The same patient id in two files is an error naming both, never a silent merge.
    (folder / "three.json").write_text(json.dumps(_bundle([_patient("a")])))
    with pytest.raises(
        FhirError, match=r"three\.json entry\[0\]: resource\.id: .*'a' repeats one\.json entry\[0\]"
    ) as caught:
        load_cohort(_spec(tmp_path, folder))
    assert "unique across the files read" in str(caught.value)


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
        ({"patients": {"path": "p.csv"}}, "remove 'patients' and 'images'"),
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
    # Two notes for 541 women: β-hCG's shared code (once, not per patient) and the label.
    assert back.report.counts() == {"info/note": 2}
    assert "(541 patient(s); the first here)" in back.report.entries[0].message
    table = kaggle.patients.set_index("patient_id")
    read = back.patients.set_index("patient_id").loc[table.index]
    assert (read["label"].astype(int) == table["label"].astype(int)).all()
    for feature in features:
        np.testing.assert_allclose(
            read[feature].to_numpy(dtype=float), table[feature].to_numpy(dtype=float), rtol=1e-9
        )


def _tiny_export(folder: Path, n: int = 60) -> None:
    """n women whose LH and AMH carry the label, as an NDJSON bulk export."""
    import pandas as pd

    from deeppcos.data.fhir_export import write_ndjson

    rng = np.random.default_rng(0)
    label = np.arange(n) % 3 == 0
    table = pd.DataFrame(
        {
            "patient_id": [f"w{k}" for k in range(n)],
            "label": label.astype(int),
            "lh_iu_l": np.round(rng.normal(6, 1.5, n) + 5 * label, 2),
            "amh_ng_ml": np.round(rng.lognormal(1.0, 0.3, n) * (1 + label), 2),
            "age_years": rng.integers(20, 40, n).astype(float),
        }
    )
    when = datetime(2024, 1, 15, 9, tzinfo=UTC)
    write_ndjson(table, ["age_years", "lh_iu_l", "amh_ng_ml"], folder, CODE, when)


def test_train_evaluate_and_predict_on_a_fhir_cohort_from_the_cli(tmp_path: Path) -> None:
    _tiny_export(tmp_path / "export")
    spec = _spec(tmp_path, tmp_path / "export")
    config = {
        "name": "fhir-tiny",
        "seed": 0,
        "cohort": yaml.safe_load(spec.read_text()),
        "split": {"n_folds": 2, "test_fraction": 0.25},
        "tabular": {"params": {"n_estimators": 15, "n_jobs": 1}},
        "image": {"enabled": False},
        "severity": {"enabled": False},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    runner, run = CliRunner(), tmp_path / "run"
    trained = runner.invoke(
        app, ["train", "--config", str(tmp_path / "config.yaml"), "--out", str(run)]
    )
    assert trained.exit_code == 0, trained.output
    cohort = json.loads((run / "cohort.json").read_text())
    assert cohort["patients"] == 60 and cohort["features"] == 3
    assert cohort["labels"] == {"0": 40, "1": 20}, cohort["labels"]
    evaluated = runner.invoke(
        app, ["evaluate", str(run), "--cohort", str(spec), "--out", str(tmp_path / "ext")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    external = json.loads((tmp_path / "ext" / "metrics.json").read_text())
    assert external["scored"] == 60 and external["at_run_threshold"]["roc_auc"]["value"] > 0.9
    predicted = runner.invoke(
        app,
        ["predict", str(run), "--fhir", str(tmp_path / "export"), "--out", str(tmp_path / "p.csv")],
    )
    assert predicted.exit_code == 0, predicted.output
    assert "60 patients scored" in predicted.output
