"""FHIR R4 bundles → the canonical patients table: codes, units, dates, gaps and malformed input.

Bundles are hand-written to the R4 specification (Bundle, Patient, Observation with
CodeableConcept, Quantity in UCUM, dataAbsentReason, component); ``tests/data/fhir/`` holds a
complete one, the others are built here so each test shows what it varies.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deeppcos.data.fhir import FhirError, FhirOptions, feature_codes, load_fhir_cohort, read_bundle
from deeppcos.exceptions import DataFileError, EmptyCohortError
from tests.conftest import REPO

EXAMPLE = REPO / "tests" / "data" / "fhir" / "two_patients.json"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def patient(pid: str, birth: str | None = "1994-03-01", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": pid, "gender": "female"}
    if birth:
        resource["birthDate"] = birth
    return {"fullUrl": f"http://clinic.example/fhir/Patient/{pid}", "resource": resource | extra}


def observation(
    pid: str,
    code: str,
    value: float | None = None,
    unit: str | None = None,
    when: str | None = "2024-03-01",
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    if when:
        resource["effectiveDateTime"] = when
    if value is not None:
        resource["valueQuantity"] = {"value": value}
        if unit is not None:  # FHIR JSON has no nulls: an absent unit is an absent key
            resource["valueQuantity"] |= {"system": UCUM, "code": unit, "unit": unit}
    return {"resource": resource | extra}


def bundle(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": list(entries)}


def entries_of(result, **match: str) -> list:
    return [e for e in result.report if all(getattr(e, k) == v for k, v in match.items())]


# --- the complete example bundle -------------------------------------------------------------


def test_example_bundle_maps_codes_and_converts_units_with_reference_factors() -> None:
    result = read_bundle(EXAMPLE)
    rows = result.patients.set_index("patient_id")
    p1, p2 = rows.loc["p1"], rows.loc["p2"]
    assert p1["lh_iu_l"] == 12.5  # the latest of two LH values
    assert p1["fsh_iu_l"] == 6.25
    assert p1["total_testosterone_nmol_l"] == pytest.approx(72 * 0.03467, rel=1e-3)  # ng/dL
    assert p1["amh_ng_ml"] == pytest.approx(50 / 7.14)  # pmol/L
    assert p1["fasting_glucose_mg_dl"] == pytest.approx(5.2 * 18.016)  # mmol/L
    assert (p1["systolic_bp_mmhg"], p1["diastolic_bp_mmhg"]) == (118, 76)  # panel components
    assert p2["weight_kg"] == pytest.approx(150 * 0.45359237)
    assert p2["height_cm"] == pytest.approx(65 * 2.54)
    assert p2["prolactin_ng_ml"] == pytest.approx(424 / 21.2)
    assert p2["progesterone_ng_ml"] == pytest.approx(9.54 / 3.18, rel=1e-3)  # molar LOINC code
    assert np.isnan(p2["lh_iu_l"])  # its only LH was entered in error
    # Age at the latest observation used: p1 born 1994-03-01, labs 2024-03-01.
    assert p1["age_years"] == pytest.approx(30.0, abs=0.01)
    assert p2["age_years"] == pytest.approx(
        (np.datetime64("2024-02-10") - np.datetime64("1990-07-15")).astype(int) / 365.25, abs=0.01
    )
    assert result.reference_dates["p2"].startswith("2024-02-10")


def test_example_bundle_reports_what_it_did_not_use() -> None:
    result = read_bundle(EXAMPLE)
    unknown = entries_of(result, action="unknown_column")
    assert [e.row for e in unknown] == ["entry[9]"] and "2243-4" in unknown[0].found
    shbg = entries_of(result, action="coerced")
    assert len(shbg) == 1 and shbg[0].found == "mg/dL" and "shbg_nmol_l" in shbg[0].message
    assert "dataAbsentReason" in entries_of(result, row="entry[10]")[0].message
    assert entries_of(result, row="entry[16]")[0].level == "excluded"  # entered-in-error
    assert "superseded" in entries_of(result, row="entry[3]")[0].message
    assert "Encounter" in entries_of(result, column="resourceType")[0].message
    converted = {e.column: e for e in entries_of(result, action="converted")}
    assert "0.0346717" in converted["total_testosterone_nmol_l"].message
    assert set(converted) == {
        "total_testosterone_nmol_l",
        "amh_ng_ml",
        "fasting_glucose_mg_dl",
        "weight_kg",
        "height_cm",
        "prolactin_ng_ml",
        "progesterone_ng_ml",
    }


def test_only_reference_codes_are_mapped() -> None:
    codes = feature_codes()
    assert codes["38476-8"][0].name == "amh_ng_ml"
    for wrong in ("38476-0", "49012-2", "35365-6", "2243-4"):  # reference's warning list
        assert wrong not in codes
    assert [f.name for f in codes["21198-7"]] == ["beta_hcg_1_miu_ml", "beta_hcg_2_miu_ml"]
    assert codes["14890-8"][0].name == "progesterone_ng_ml"


# --- values over time and the date window ----------------------------------------------------


def _lh_series() -> dict[str, Any]:
    return bundle(
        patient("a"),
        observation("a", "10501-5", 4.0, "[IU]/L", "2023-06-01"),
        observation("a", "10501-5", 9.0, "[IU]/L", "2024-02-01"),
        observation("a", "10501-5", 7.0, "[IU]/L", "2023-12-01"),
        observation("a", "15067-2", 5.0, "[IU]/L", "2023-01-01"),
    )


def test_latest_value_per_code_regardless_of_entry_order() -> None:
    result = read_bundle(_lh_series())
    row = result.patients.iloc[0]
    assert row["lh_iu_l"] == 9.0 and row["fsh_iu_l"] == 5.0
    assert len([e for e in result.report if "superseded" in e.message]) == 2


def test_window_keeps_only_recent_values_and_reports_the_rest() -> None:
    result = read_bundle(_lh_series(), FhirOptions(window_days=90))
    row = result.patients.iloc[0]
    assert row["lh_iu_l"] == 9.0 and "fsh_iu_l" not in result.patients
    outside = [e for e in result.report if "window" in e.message]
    assert {e.row for e in outside} == {"entry[1]", "entry[4]"}


def test_as_of_moves_the_window_back_in_time() -> None:
    result = read_bundle(_lh_series(), FhirOptions(as_of="2024-01-01", window_days=365))
    assert result.patients.iloc[0]["lh_iu_l"] == 7.0
    assert any("after as_of" in e.message for e in result.report)


def test_mass_and_molar_codes_of_one_analyte_compete_on_date() -> None:
    result = read_bundle(
        bundle(
            patient("a"),
            observation("a", "14890-8", 31.8, "nmol/L", "2024-03-01"),  # newer, molar code
            observation("a", "2839-9", 1.0, "ng/mL", "2024-01-01"),
        )
    )
    assert result.patients.iloc[0]["progesterone_ng_ml"] == pytest.approx(10.0, rel=1e-3)


def test_two_beta_hcg_measurements_fill_both_features_oldest_first() -> None:
    result = read_bundle(
        bundle(
            patient("a"),
            observation("a", "21198-7", 30.0, "m[IU]/mL", "2024-03-05"),
            observation("a", "21198-7", 3.0, "m[IU]/mL", "2024-03-01"),
        )
    )
    row = result.patients.iloc[0]
    assert (row["beta_hcg_1_miu_ml"], row["beta_hcg_2_miu_ml"]) == (3.0, 30.0)


def test_same_day_conflict_is_a_warning() -> None:
    result = read_bundle(
        bundle(
            patient("a"),
            observation("a", "10501-5", 4.0, "[IU]/L"),
            observation("a", "10501-5", 6.0, "[IU]/L"),
        )
    )
    assert result.patients.iloc[0]["lh_iu_l"] == 6.0
    assert any(e.level == "warning" and "two different values" in e.message for e in result.report)


# --- gaps, wrong units, unknown codes ---------------------------------------------------------


def test_missing_values_are_reported_not_dropped() -> None:
    no_value = observation("a", "2986-8")
    absent = observation(
        "a",
        "38476-8",
        dataAbsentReason={"coding": [{"code": "not-performed"}], "text": "Not performed"},
    )
    quantity_without_value = observation("a", "13967-5")
    quantity_without_value["resource"]["valueQuantity"] = {"unit": "nmol/L", "system": UCUM}
    result = read_bundle(bundle(patient("a"), no_value, absent, quantity_without_value))
    # No usable value: the patient stays, with nothing to date an age by (reported).
    assert list(result.patients.columns) == ["patient_id"]
    assert any("no dated observation" in e.message for e in result.report)
    messages = {e.row: e.message for e in result.report}
    assert "no value and no dataAbsentReason" in messages["entry[1]"]
    assert "not-performed" in messages["entry[2]"]
    assert "no value and no dataAbsentReason" in messages["entry[3]"]


def test_wrong_units_are_reported_and_the_value_is_not_used() -> None:
    result = read_bundle(
        bundle(
            patient("a"),
            observation("a", "10501-5", 5.0, "mg/dL"),  # LH in a mass unit: no IU factor
            observation("a", "29463-7", 60.0, "cm"),  # weight in a length unit
            observation("a", "8302-2", 160.0, "furlong"),  # not a unit at all
            observation("a", "15067-2", 6.0, None),  # no unit
        )
    )
    assert list(result.patients.columns) == ["patient_id"]
    bad = {e.row: e for e in result.report if e.action == "coerced"}
    assert set(bad) == {"entry[1]", "entry[2]", "entry[3]", "entry[4]"}
    assert bad["entry[2]"].found == "cm" and bad["entry[2]"].expected == "a unit convertible to kg"
    assert "not one deeppcos understands" in bad["entry[3]"].message


def test_non_ucum_spelling_is_read_and_reported() -> None:
    obs = observation("a", "10501-5", 5.0, None)
    obs["resource"]["valueQuantity"] = {"value": 5.0, "unit": "mIU/mL"}
    result = read_bundle(bundle(patient("a"), obs))
    assert result.patients.iloc[0]["lh_iu_l"] == 5.0
    assert any("read as 'm[IU]/mL'" in e.message for e in result.report)


def test_unknown_codes_and_non_loinc_codings_are_reported() -> None:
    local = observation("a", "x")
    local["resource"]["code"] = {"coding": [{"system": "urn:lab:local", "code": "LH"}]}
    text_only = observation("a", "x")
    text_only["resource"]["code"] = {"text": "ovarian ultrasound impression"}
    result = read_bundle(
        bundle(patient("a"), observation("a", "1234-5", 3.0, "g/L"), local, text_only)
    )
    unknown = {e.row: e.found for e in result.report if e.action == "unknown_column"}
    assert unknown == {
        "entry[1]": "http://loinc.org|1234-5",
        "entry[2]": "urn:lab:local|LH",
        "entry[3]": "text only: 'ovarian ultrasound impression'",
    }


def test_censored_values_use_the_bound_or_go_missing() -> None:
    obs = observation("a", "21198-7", 2.0, "m[IU]/mL")
    obs["resource"]["valueQuantity"]["comparator"] = "<"
    data = bundle(patient("a"), obs)
    assert read_bundle(data).patients.iloc[0]["beta_hcg_1_miu_ml"] == 2.0
    missing = read_bundle(data, FhirOptions(censored="missing"))
    assert "beta_hcg_1_miu_ml" not in missing.patients
    assert any("censored" in e.message for e in missing.report)


def test_out_of_range_values_follow_the_catalog_policy() -> None:
    data = bundle(patient("a"), observation("a", "15067-2", 5052.0, "[IU]/L"))
    nulled = read_bundle(data)
    assert np.isnan(nulled.patients.iloc[0]["fsh_iu_l"])
    (entry,) = [e for e in nulled.report if e.action == "out_of_range"]
    assert entry.row == "a" and entry.column == "fsh_iu_l"
    assert read_bundle(data, FhirOptions(range_policy="keep")).patients.iloc[0]["fsh_iu_l"] == 5052


def test_observations_of_unknown_subjects_are_excluded_and_reported() -> None:
    stray = observation("ghost", "10501-5", 5.0, "[IU]/L")
    no_subject = observation("a", "10501-5", 5.0, "[IU]/L")
    del no_subject["resource"]["subject"]
    result = read_bundle(bundle(patient("a"), stray, no_subject))
    excluded = {e.row: e.message for e in result.report if e.level == "excluded"}
    assert "not a Patient in this bundle" in excluded["entry[1]"]
    assert "without a subject" in excluded["entry[2]"]
    assert "lh_iu_l" not in result.patients


def test_patients_without_observations_are_kept() -> None:
    result = read_bundle(bundle(patient("a"), patient("b", birth=None)))
    assert list(result.patients["patient_id"]) == ["a", "b"]
    assert any("no dated observation" in e.message for e in result.report)


def test_identifier_as_patient_id_and_uuid_references() -> None:
    pat = patient("x1", identifier=[{"system": "urn:mrn", "value": "MRN-7"}])
    pat["fullUrl"] = "urn:uuid:11111111-2222-4333-8444-555555555555"
    obs = observation("x1", "10501-5", 5.0, "[IU]/L")
    obs["resource"]["subject"] = {"reference": pat["fullUrl"]}
    result = read_bundle(
        bundle(pat, obs), FhirOptions(patient_id="identifier", identifier_system="urn:mrn")
    )
    assert list(result.patients["patient_id"]) == ["MRN-7"]
    assert result.patients.iloc[0]["lh_iu_l"] == 5.0


def test_partial_birth_date_gives_an_age_with_a_warning() -> None:
    result = read_bundle(
        bundle(patient("a", birth="1990"), observation("a", "10501-5", 5.0, "[IU]/L"))
    )
    assert result.patients.iloc[0]["age_years"] == pytest.approx(34.16, abs=0.01)
    assert any("year precision" in e.message for e in result.report)


def test_to_cohort_adds_model_inputs_the_bundle_lacks() -> None:
    cohort = load_fhir_cohort(EXAMPLE, features=["lh_iu_l", "hair_growth", "cycle_irregular"])
    assert {"hair_growth", "cycle_irregular"} <= set(cohort.feature_columns)
    assert cohort.patients["hair_growth"].isna().all()
    cohort.validate()
    assert any("hair_growth" in e.message for e in cohort.report)


# --- malformed bundles: clear errors naming the entry and field ------------------------------


def _broken(mutate) -> dict[str, Any]:
    data = bundle(patient("a"), observation("a", "10501-5", 5.0, "[IU]/L"))
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "path", "says"),
    [
        (
            lambda b: b["entry"][1]["resource"]["valueQuantity"].update(value="12,5"),
            "entry[1].resource.valueQuantity.value",
            "JSON number",
        ),
        (
            lambda b: b["entry"][1]["resource"].pop("status"),
            "entry[1].resource.status",
            "found missing",
        ),
        (
            lambda b: b["entry"][1]["resource"].update(effectiveDateTime="01/03/2024"),
            "entry[1].resource.effectiveDateTime",
            "FHIR dateTime",
        ),
        (
            lambda b: b["entry"][1]["resource"].pop("code"),
            "entry[1].resource.code",
            "required",
        ),
        (
            lambda b: b["entry"][0]["resource"].update(birthDate="1994-13-01"),
            "entry[0].resource.birthDate",
            "FHIR date",
        ),
        (lambda b: b["entry"][1].pop("resource"), "entry[1].resource", "missing"),
        (lambda b: b["entry"].append(patient("a")), "entry[2].resource.id", "repeats entry[0]"),
        (lambda b: b.update(resourceType="Patient"), "resourceType", "expected 'Bundle'"),
        (lambda b: b.update(entry={"x": 1}), "entry", "expected an array"),
    ],
)
def test_malformed_bundle_names_entry_and_field(mutate, path: str, says: str) -> None:
    with pytest.raises(FhirError) as info:
        read_bundle(_broken(mutate))
    assert f"{path}: " in str(info.value) and says in str(info.value)
    assert info.value.problems[0].path == path


def test_all_structural_problems_are_listed_at_once() -> None:
    data = _broken(lambda b: None)
    data["entry"].append(copy.deepcopy(data["entry"][1]))
    for index in (1, 2):
        data["entry"][index]["resource"]["valueQuantity"]["value"] = "five"
    with pytest.raises(FhirError) as info:
        read_bundle(data)
    assert [p.entry for p in info.value.problems] == [1, 2]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Bundle", "entry": [}')
    with pytest.raises(DataFileError, match=r"bad\.json: not valid JSON: .* line 1"):
        read_bundle(bad)
    with pytest.raises(DataFileError, match="not found"):
        read_bundle(tmp_path / "missing.json")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(bundle(observation("a", "10501-5", 5.0, "[IU]/L"))))
    with pytest.raises(EmptyCohortError, match="no Patient resource"):
        read_bundle(empty)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="window_days"):
        FhirOptions(window_days=0)
    with pytest.raises(ValueError, match="as_of"):
        read_bundle(bundle(patient("a")), FhirOptions(as_of="yesterday"))
