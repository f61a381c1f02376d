"""UCUM parsing and the lab conversions the clinical reference gives (§1b)."""

from __future__ import annotations

import pytest

from deeppcos.knowledge.units import (
    SUBSTANCES,
    UnitError,
    conversion_factor,
    parse_unit,
    substance_for,
    ucum_alias,
)


@pytest.mark.parametrize(
    ("source", "target", "feature", "expected"),
    [
        # Testosterone: 1 nmol/L = 28.84 ng/dL; 1 ng/dL = 0.03467 nmol/L (MW 288.42).
        ("ng/dL", "nmol/L", "total_testosterone_nmol_l", 0.03467),
        ("nmol/L", "ng/dL", "total_testosterone_nmol_l", 28.84),
        ("ng/mL", "nmol/L", "total_testosterone_nmol_l", 3.467),
        # AMH: pmol/L ÷ 7.14 = ng/mL.
        ("pmol/L", "ng/mL", "amh_ng_ml", 1 / 7.14),
        # Glucose: 1 mmol/L = 18.016 mg/dL.
        ("mmol/L", "mg/dL", "fasting_glucose_mg_dl", 18.016),
        # Prolactin: 1 ng/mL = 21.2 mIU/L.
        ("m[IU]/L", "ng/mL", "prolactin_ng_ml", 1 / 21.2),
        # Vitamin D: 1 ng/mL = 2.496 nmol/L; progesterone: 1 ng/mL = 3.18 nmol/L.
        ("nmol/L", "ng/mL", "vitamin_d_25oh_ng_ml", 1 / 2.496),
        ("nmol/L", "ng/mL", "progesterone_ng_ml", 1 / 3.18),
        # DHEA-S: 1 µmol/L = 36.85 µg/dL.
        ("umol/L", "ug/dL", "dheas_ug_dl", 36.85),
    ],
)
def test_reference_conversion_factors(source: str, target: str, feature: str, expected: float):
    factor = conversion_factor(source, target, SUBSTANCES[feature])
    assert factor == pytest.approx(expected, rel=2e-3)


def test_insulin_factor_is_explicit_and_configurable() -> None:
    assert conversion_factor(
        "pmol/L", "u[IU]/mL", substance_for("fasting_insulin_uiu_ml")
    ) == pytest.approx(1 / 6.0)
    assert conversion_factor(
        "pmol/L", "u[IU]/mL", substance_for("fasting_insulin_uiu_ml", 6.945)
    ) == pytest.approx(1 / 6.945)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("m[IU]/mL", "[IU]/L", 1.0),
        ("u[IU]/mL", "m[IU]/L", 1.0),
        ("g/L", "g/dL", 0.1),
        ("[lb_av]", "kg", 0.45359237),
        ("[in_i]", "cm", 2.54),
        ("{beats}/min", "/min", 1.0),
        ("mo", "a", 1 / 12),
        ("%", "1", 0.01),
    ],
)
def test_same_dimension_is_prefix_arithmetic(source: str, target: str, expected: float) -> None:
    assert conversion_factor(source, target) == pytest.approx(expected)


def test_parse_exponents_products_and_powers_of_ten() -> None:
    bmi = parse_unit("kg/m2")
    assert bmi.factor == pytest.approx(1000.0) and dict(bmi.dims) == {"g": 1, "m": -2}
    assert parse_unit("kg.m-2").dims == bmi.dims
    assert parse_unit("10*3/uL").factor == pytest.approx(1e12)


@pytest.mark.parametrize("text", ["furlong", "mg/", "mg dL", "", "Mg/dL"])
def test_units_not_understood_are_errors(text: str) -> None:
    with pytest.raises(UnitError):
        parse_unit(text)


def test_incompatible_or_unknown_analyte_conversions_are_errors() -> None:
    with pytest.raises(UnitError, match="measure different things"):
        conversion_factor("kg", "cm")
    with pytest.raises(UnitError, match="needs the analyte"):
        conversion_factor("mmol/L", "g/dL")
    # SHBG has no molar mass in the reference: mass units cannot become nmol/L.
    with pytest.raises(UnitError, match="g↔mol"):
        conversion_factor("mg/dL", "nmol/L", substance_for("shbg_nmol_l"))


def test_common_non_ucum_spellings_have_aliases() -> None:
    assert ucum_alias("mIU/mL") == "m[IU]/mL"
    assert ucum_alias("µg/dL") == "ug/dL"
    assert ucum_alias("mmHg") == "mm[Hg]"
    assert ucum_alias("bpm") == "/min"
    assert ucum_alias("mg/dL") is None  # already UCUM
    assert ucum_alias("parsecs") is None
