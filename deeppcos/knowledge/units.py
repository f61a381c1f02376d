"""UCUM units: parse the common ones, and convert a lab value to the catalog's unit.

Only what clinical labs and vital signs use is understood (a deliberately small subset of UCUM):
mass ``g``, amount ``mol``, international units ``[IU]``, volume ``L``, length ``m`` and
``[in_i]``, ``[lb_av]``, time ``s min h d wk mo a``, pressure ``m[Hg]``, ``%`` and ``1``, with
the metric prefixes ``k h da d c m u n p f``, exponents (``m2``), products (``.``), quotients
(``/``) and annotations (``{beats}``, which UCUM defines as the unit 1). Anything else is an
:class:`UnitError`, never a guess.

Within one dimension conversion is prefix arithmetic (exact). Between mass, amount and
international units it needs the analyte: :data:`SUBSTANCES` holds the molar masses and IU
factors that ``shared/clinical-reference.md`` §1b gives, by catalog feature, and nothing else —
an analyte without one (haemoglobin in mmol/L, for instance) is not converted.

Common non-UCUM spellings (``mIU/mL``, ``µg/dL``, ``mmHg``, ``bpm``) are read as their UCUM
equivalent by :func:`ucum_alias`; callers report that they did so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from deeppcos.exceptions import UnitError

# Base dimensions: g (mass), mol (amount), IU (international unit), m (length), s (time),
# mHg (pressure as a mercury column; kept apart from SI pressure on purpose).
Dims = tuple[tuple[str, int], ...]
_KINDS = ("g", "mol", "IU")  # substance dimensions an analyte's factors convert between

PREFIXES: dict[str, float] = {
    "da": 1e1,
    "k": 1e3,
    "h": 1e2,
    "d": 1e-1,
    "c": 1e-2,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
    "p": 1e-12,
    "f": 1e-15,
}


@dataclass(frozen=True)
class _Atom:
    factor: float
    dims: dict[str, int]
    metric: bool  # may take a prefix


# UCUM definitions: L = dm3; min, h, d, wk exact; mo and a are the Julian month and year;
# [in_i] = 2.54 cm and [lb_av] = 453.59237 g are the international inch and avoirdupois pound.
ATOMS: dict[str, _Atom] = {
    "g": _Atom(1.0, {"g": 1}, True),
    "mol": _Atom(1.0, {"mol": 1}, True),
    "[IU]": _Atom(1.0, {"IU": 1}, True),
    "[iU]": _Atom(1.0, {"IU": 1}, True),
    "L": _Atom(1e-3, {"m": 3}, True),
    "l": _Atom(1e-3, {"m": 3}, True),
    "m": _Atom(1.0, {"m": 1}, True),
    "s": _Atom(1.0, {"s": 1}, True),
    "min": _Atom(60.0, {"s": 1}, False),
    "h": _Atom(3600.0, {"s": 1}, False),
    "d": _Atom(86400.0, {"s": 1}, False),
    "wk": _Atom(604800.0, {"s": 1}, False),
    "mo": _Atom(2629800.0, {"s": 1}, False),
    "a": _Atom(31557600.0, {"s": 1}, False),
    "[in_i]": _Atom(0.0254, {"m": 1}, False),
    "[lb_av]": _Atom(453.59237, {"g": 1}, False),
    "m[Hg]": _Atom(1.0, {"mHg": 1}, True),
    "%": _Atom(0.01, {}, False),
    "1": _Atom(1.0, {}, False),
}

_ANNOTATION = re.compile(r"\{[^{}]*\}")
_EXPONENT = re.compile(r"^(.*?[^0-9+\-])([+-]?[0-9]+)$")
_POWER_OF_TEN = re.compile(r"^10[*^]([+-]?)([0-9]+)$")

# Bounds on what a unit may say. Units arrive from files (FHIR bundles, tables), so a crafted
# one must fail as a UnitError, not as an OverflowError, a 0.0 factor or a slow parse:
# - 200 characters: real UCUM codes are far shorter (annotated ones such as mL/min/{1.73_m2}
#   included), and the bound keeps parsing cheap whatever the input.
MAX_UNIT_LENGTH = 200
# - 10*±24: the SI prefixes span yocto (10^-24) to yotta (10^24); clinical counts need at most
#   10*12/L. Beyond that it is a typo or an attack, and 10.0**999 overflows a float.
MAX_POWER_OF_TEN = 24
# - exponent ±4: no clinical or SI-derived unit needs more (s-3 in watts, s4 in farads), so
#   digits glued to a unit (mL999999999) are refused rather than read as an absurd power.
MAX_EXPONENT = 4
# - a bare number (UCUM's integer factor, as in /100{cells}): at most 10^24, for the same reason.
MAX_FACTOR_DIGITS = 25
_SHOWN_CHARACTERS = 40


def _shown(text: str) -> str:
    """A unit string for a message: quoted, and cut to 40 characters when longer."""
    if len(text) <= _SHOWN_CHARACTERS:
        return repr(text)
    return f"{text[:_SHOWN_CHARACTERS]!r}… ({len(text):,} characters)"


@dataclass(frozen=True)
class Unit:
    text: str
    factor: float  # value in this unit × factor = value in base units
    dims: Dims


@dataclass(frozen=True)
class Substance:
    """What converting one analyte between mass, amount and IU needs (reference §1b)."""

    grams_per_mol: float | None = None
    iu_per_gram: float | None = None
    iu_per_mol: float | None = None
    source: str = ""


def _dims(counts: dict[str, int]) -> Dims:
    return tuple(sorted((k, v) for k, v in counts.items() if v))


def _split_terms(text: str) -> list[tuple[int, str]]:
    """``[(sign, component), …]`` split on ``.`` and ``/`` outside brackets and braces."""
    terms: list[tuple[int, str]] = []
    sign, depth, current = 1, 0, ""
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if depth == 0 and char in "./":
            terms.append((sign, current))
            sign, current = (-1 if char == "/" else 1), ""
        else:
            current += char
    terms.append((sign, current))
    if terms[0][1] == "" and len(terms) > 1 and terms[1][0] == -1:
        terms = terms[1:]  # a leading '/' as in '/min'
    return terms


def _atom(symbol: str) -> tuple[float, dict[str, int]]:
    if symbol in ATOMS:
        atom = ATOMS[symbol]
        return atom.factor, atom.dims
    for prefix in sorted(PREFIXES, key=len, reverse=True):
        rest = symbol[len(prefix) :]
        if symbol.startswith(prefix) and rest in ATOMS and ATOMS[rest].metric:
            atom = ATOMS[rest]
            return PREFIXES[prefix] * atom.factor, atom.dims
    raise UnitError(
        f"symbol {_shown(symbol)} is not one deeppcos understands; expected a UCUM symbol such "
        "as g, mol, [IU], L, m, s, min or m[Hg], optionally with a metric prefix (mg, nmol, uL)"
    )


def _component(text: str) -> tuple[float, dict[str, int]]:
    """One term between '.' and '/': a power of ten, a number, or a symbol with an exponent.

    Raises UnitError describing the term; :func:`parse_unit` adds the whole unit to it.
    """
    stripped = _ANNOTATION.sub("", text)
    if stripped == "":
        if text == "":
            raise UnitError(
                "empty component (a '.' or '/' at the end or doubled); expected a unit symbol "
                "after each '.' and '/'"
            )
        return 1.0, {}  # a bare annotation such as {beats} is the unit 1
    power = _POWER_OF_TEN.match(stripped)
    if power:
        return _power_of_ten(stripped, power.group(1), power.group(2)), {}
    if stripped.isdigit():
        return _integer_factor(stripped), {}
    symbol, exponent = stripped, 1
    match = _EXPONENT.match(stripped)
    if match and not stripped.endswith("]"):
        symbol, exponent = match.group(1), _exponent(stripped, match.group(2))
    factor, dims = _atom(symbol)
    return factor**exponent, {k: v * exponent for k, v in dims.items()}


def _power_of_ten(term: str, sign: str, digits: str) -> float:
    # Check the digit count before int(): int() of thousands of digits is slow, then refused.
    if len(digits) > 2 or int(digits) > MAX_POWER_OF_TEN:
        raise UnitError(
            f"power of ten {_shown(term)} is out of range; expected 10*n with n from "
            f"-{MAX_POWER_OF_TEN} to {MAX_POWER_OF_TEN}"
        )
    return 10.0 ** int(sign + digits)


def _integer_factor(term: str) -> float:
    if len(term.lstrip("0")) > MAX_FACTOR_DIGITS or int(term) > 10**MAX_POWER_OF_TEN:
        raise UnitError(
            f"number {_shown(term)} is too large; expected an integer factor of at most "
            f"10^{MAX_POWER_OF_TEN} (write large factors as 10*n)"
        )
    if int(term) == 0:
        raise UnitError("the factor 0 makes every value zero; expected a positive integer")
    return float(term)


def _exponent(term: str, digits: str) -> int:
    if len(digits.lstrip("+-")) > 1 or abs(int(digits)) > MAX_EXPONENT:
        raise UnitError(
            f"exponent in {_shown(term)} is out of range (digits glued to a unit are read as "
            f"its power); expected an exponent from -{MAX_EXPONENT} to {MAX_EXPONENT}, as in "
            "m2 or s-1"
        )
    return int(digits)


def parse_unit(text: str) -> Unit:
    """Parse a UCUM unit string (case-sensitive, as UCUM is); UnitError when not understood.

    Every UnitError names the unit (cut to 40 characters) and what was expected.
    """
    if not isinstance(text, str) or not text.strip():
        found = _shown(text) if isinstance(text, str) else type(text).__name__
        raise UnitError(f"expected a unit string, found {found}")
    text = text.strip()
    if len(text) > MAX_UNIT_LENGTH:
        raise UnitError(
            f"unit {_shown(text)} is too long; expected a UCUM code of at most "
            f"{MAX_UNIT_LENGTH} characters"
        )
    if " " in text:
        raise UnitError(f"unit {_shown(text)} contains a space, which UCUM does not allow")
    factor = 1.0
    dims: dict[str, int] = {}
    for sign, component in _split_terms(text):
        try:
            part_factor, part_dims = _component(component)
        except UnitError as exc:
            raise UnitError(f"unit {_shown(text)}: {exc}") from None
        factor *= part_factor**sign
        for key, value in part_dims.items():
            dims[key] = dims.get(key, 0) + sign * value
    # Terms within bounds can still multiply past a float's range (10*24.10*24.…).
    if not (math.isfinite(factor) and factor > 0):
        raise UnitError(
            f"unit {_shown(text)} scales values beyond what a number can hold; expected a unit "
            "of ordinary scale"
        )
    return Unit(text=text, factor=factor, dims=_dims(dims))


_ALIASES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[µμ]"), "u"),
    (re.compile(r"mcg"), "ug"),
    (re.compile(r"(?<!\[)IU(?!\])"), "[IU]"),
    (re.compile(r"^mmHg$"), "mm[Hg]"),
    (re.compile(r"^(bpm|beats/min|breaths/min)$"), "/min"),
    (re.compile(r"^(in|inch|inches)$"), "[in_i]"),
    (re.compile(r"^(lb|lbs)$"), "[lb_av]"),
    (re.compile(r"^(y|yr|yrs|year|years)$"), "a"),
)


def ucum_alias(text: str) -> str | None:
    """The UCUM spelling of a common non-UCUM unit (``mIU/mL`` → ``m[IU]/mL``), or None."""
    candidate = text.strip()
    for pattern, replacement in _ALIASES:
        candidate = pattern.sub(replacement, candidate)
    if candidate == text.strip():
        return None
    try:
        parse_unit(candidate)
    except UnitError:
        return None
    return candidate


def _kind(dims: Dims) -> tuple[str | None, Dims]:
    """The substance dimension with exponent 1 (g, mol or IU) and the remaining dimensions."""
    counts = dict(dims)
    kinds = [k for k in _KINDS if counts.get(k) == 1]
    if len(kinds) != 1:
        return None, dims
    counts.pop(kinds[0])
    return kinds[0], _dims(counts)


def _kind_factor(source: str, target: str, substance: Substance) -> float | None:
    """Multiply an amount of ``source`` kind by this to get ``target`` kind (None: unknown)."""
    per_mol: dict[str, float] = {"mol": 1.0}  # how much of each kind one mole is
    if substance.grams_per_mol:
        per_mol["g"] = substance.grams_per_mol
    if substance.iu_per_mol:
        per_mol["IU"] = substance.iu_per_mol
    elif substance.iu_per_gram and "g" in per_mol:
        per_mol["IU"] = substance.iu_per_gram * per_mol["g"]
    if source in per_mol and target in per_mol:
        return per_mol[target] / per_mol[source]
    if {source, target} == {"g", "IU"} and substance.iu_per_gram:
        return substance.iu_per_gram if source == "g" else 1.0 / substance.iu_per_gram
    return None


def conversion_factor(source: str, target: str, substance: Substance | None = None) -> float:
    """``value_in_target = value_in_source × factor``; UnitError when they do not convert."""
    a, b = parse_unit(source), parse_unit(target)
    if a.dims == b.dims:
        return a.factor / b.factor
    kind_a, rest_a = _kind(a.dims)
    kind_b, rest_b = _kind(b.dims)
    if kind_a and kind_b and rest_a == rest_b:
        if substance is None:
            raise UnitError(
                f"converting {source!r} to {target!r} needs the analyte's molar mass or IU "
                "factor, and none is known for it"
            )
        factor = _kind_factor(kind_a, kind_b, substance)
        if factor is None:
            raise UnitError(
                f"converting {source!r} to {target!r} needs a {kind_a}↔{kind_b} factor for this "
                "analyte; the clinical reference gives none"
            )
        return a.factor * factor / b.factor
    raise UnitError(f"{source!r} cannot be converted to {target!r}: they measure different things")


def is_dimensionless(text: str) -> bool:
    return parse_unit(text).dims == ()


# Molar masses and IU factors from shared/clinical-reference.md §1b (tagged ✅ there), keyed by
# catalog feature. Testosterone: 1 nmol/L = 28.84 ng/dL (MW 288.42); AMH: 1 ng/mL = 7.14 pmol/L
# (MW ≈ 140 000); glucose: 1 mmol/L = 18.016 mg/dL (MW 180.16); prolactin: 1 ng/mL = 21.2 mIU/L
# (WHO IS 84/500, assay-dependent). Insulin: 1 µIU/mL = 6.0 pmol/L by default (the reference
# gives 6.0 and 6.945, and asks that the factor used be recorded: callers report it).
INSULIN_PMOL_PER_UIU = 6.0

SUBSTANCES: dict[str, Substance] = {
    "total_testosterone_nmol_l": Substance(288.42, source="§1b testosterone, MW 288.42"),
    "free_testosterone_pg_ml": Substance(288.42, source="§1b testosterone, MW 288.42"),
    # 1e-6 g/L (1 ng/mL) = 7.14e-12 mol/L exactly as the reference states (MW ≈ 140 000).
    "amh_ng_ml": Substance(1e-6 / 7.14e-12, source="§1b AMH, 1 ng/mL = 7.14 pmol/L"),
    "dheas_ug_dl": Substance(368.49, source="§1b DHEA-S, MW 368.49"),
    "androstenedione_ng_ml": Substance(286.41, source="§1b androstenedione, MW 286.41"),
    "fasting_glucose_mg_dl": Substance(180.16, source="§1b glucose, MW 180.16"),
    "random_blood_sugar_mg_dl": Substance(180.16, source="§1b glucose, MW 180.16"),
    "vitamin_d_25oh_ng_ml": Substance(400.64, source="§1b 25-OH vitamin D, MW 400.64"),
    "progesterone_ng_ml": Substance(314.46, source="§1b progesterone, MW 314.46"),
    "prolactin_ng_ml": Substance(
        iu_per_gram=21.2e-3 / 1e-6, source="§1b prolactin, 1 ng/mL = 21.2 mIU/L (IS 84/500)"
    ),
}


def insulin_substance(pmol_per_uiu: float = INSULIN_PMOL_PER_UIU) -> Substance:
    """Insulin's IU↔amount factor: 1 µIU/mL = ``pmol_per_uiu`` pmol/L (reference §1b)."""
    if pmol_per_uiu <= 0:
        raise ValueError(f"pmol_per_uiu must be positive, got {pmol_per_uiu}")
    # 1 µIU/mL = 1e-3 IU/L and equals pmol_per_uiu × 1e-12 mol/L.
    return Substance(
        iu_per_mol=1e-3 / (pmol_per_uiu * 1e-12),
        source=f"§1b insulin, 1 µIU/mL = {pmol_per_uiu:g} pmol/L",
    )


def substance_for(feature: str, insulin_pmol_per_uiu: float = INSULIN_PMOL_PER_UIU) -> Substance:
    if feature == "fasting_insulin_uiu_ml":
        return insulin_substance(insulin_pmol_per_uiu)
    return SUBSTANCES.get(feature, Substance())
