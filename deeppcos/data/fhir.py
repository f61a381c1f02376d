"""FHIR R4 input: Patient, Observation (and Condition) resources → the canonical patients table.

What is read
------------
* **Patient**: the patient id is ``Patient.id`` (or, with ``patient_id="identifier"``, the value
  of ``Patient.identifier`` — the one whose ``system`` is ``identifier_system`` when given);
  ``birthDate`` gives ``age_years`` at the date of the latest value used (else at ``as_of``);
  it replaces an Age (30525-0) observation, which is used only without a birthDate.
* **Observation**: every LOINC coding (system ``http://loinc.org``) of ``Observation.code`` and
  of each ``component.code`` (a blood-pressure panel carries systolic and diastolic as
  components) is looked up in the catalog (``Feature.loinc`` and ``Feature.loinc_alt``, codes the
  clinical reference verified; no other code is ever mapped). ``valueQuantity`` is converted
  from its UCUM unit to the catalog's (``deeppcos.knowledge.units``: prefix arithmetic, and molar
  masses or IU factors from the reference §1b for mass ↔ amount ↔ IU).
* **Dates**: ``effectiveDateTime`` / ``effectiveInstant`` / ``effectivePeriod`` (end, else start),
  else ``issued``. A patient's *reference date* is ``as_of`` when given, else the date of their
  latest dated value. With ``window_days``, only values from the ``window_days`` before the
  reference date count. Per feature the **latest** value wins; a code that the catalog gives to
  several features (β-hCG's two measurements) fills them with its most recent values, oldest
  first.
* **Condition** (only with ``label_codes``, a cohort's label): a Condition with a coding whose
  ``system|code`` is one of ``label_codes`` makes its subject's label 1 when its
  ``verificationStatus`` is ``confirmed`` or absent; ``refuted`` and ``entered-in-error`` never
  count; ``unconfirmed`` / ``provisional`` / ``differential`` (suspected) leave the label missing
  unless another Condition counts; every other patient is 0. ``clinicalStatus`` and dates are
  not read (a resolved diagnosis is still a diagnosis). The same code in another system is not
  the label.
* **Files** (:func:`read_fhir_source`, the ``fhir`` cohort format): one Bundle, an NDJSON bulk
  export (one resource per line), or a folder of either, read as one collection; a bad line or
  file is left out and reported with its file and line, a patient id in two places is an error.

Nothing is dropped silently: unknown codes, units that are missing or not convertible, values
absent (``dataAbsentReason``, no ``value[x]``), censored values (``comparator``), values outside
the window or superseded by a later one, unusable statuses, other resource types, and every unit
conversion (with its factor) are entries in the :class:`~deeppcos.data.report.LoadReport`, with
the entry index as the row. A bundle that breaks the FHIR structure (a value that is not a JSON
number, a malformed date, an Observation without ``status`` or ``code``, …) raises
:class:`FhirError`, which names each entry index and field.

Why plain JSON and not ``fhir.resources``: only three resource types and a handful of elements
are read, and every problem must be reported per entry in the project's own terms (entry index,
field, what was expected) while the rest of the bundle still loads; ``fhir.resources`` validates
every element of every resource (one error in an element deeppcos never reads, or in a resource
type it ignores, rejects the whole bundle) and adds a large dependency and import time to the
CLI and the service. The checks
here follow the R4 datatypes for exactly the elements read (dateTime, date, decimal, id,
Quantity, CodeableConcept, Reference), and the tests use bundles written to the specification.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from deeppcos.data.report import LoadReport
from deeppcos.data.tables import check_ranges
from deeppcos.exceptions import DataFileError, EmptyCohortError, SchemaError
from deeppcos.knowledge.catalog import CATALOG, Feature
from deeppcos.knowledge.ranges import RangeRule
from deeppcos.knowledge.units import (
    INSULIN_PMOL_PER_UIU,
    Substance,
    UnitError,
    conversion_factor,
    parse_unit,
    substance_for,
    ucum_alias,
)

__all__ = [
    "LOINC_SYSTEM",
    "UCUM_SYSTEM",
    "FhirError",
    "FhirOptions",
    "FhirPatients",
    "FhirProblem",
    "feature_codes",
    "load_fhir_cohort",
    "read_bundle",
    "read_fhir_source",
]

LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
AGE_FEATURE = "age_years"

# Observation.status (R4 value set observation-status).
STATUSES = (
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
)
_NOT_A_RESULT = {"registered", "cancelled", "entered-in-error"}
_TENTATIVE = {"preliminary", "unknown"}
_COMPARATORS = ("<", "<=", ">=", ">", "ad")
_DIMENSIONLESS_UNITS = {"1", "{score}", "{count}", "%"}
MAX_LISTED_PROBLEMS = 10
# Condition.verificationStatus (R4 value set condition-ver-status): what makes a label.
NOT_A_DIAGNOSIS = {"refuted", "entered-in-error"}  # never counted
UNCERTAIN_DIAGNOSIS = {"unconfirmed", "provisional", "differential"}  # label left missing
DIAGNOSIS = {"confirmed"}  # and no verificationStatus at all: label 1

# R4 primitive formats (https://hl7.org/fhir/R4/datatypes.html).
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_DATE = re.compile(r"^(\d{4})(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$")
_DATETIME = re.compile(
    r"^(\d{4})(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])"
    r"(T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)?)?$"
)


# --- errors and options ----------------------------------------------------------------------


@dataclass(frozen=True)
class FhirProblem:
    """One structural problem: the entry index (None for the bundle itself) and the field."""

    entry: int | None
    field: str
    message: str

    @property
    def path(self) -> str:
        return f"entry[{self.entry}].{self.field}" if self.entry is not None else self.field


class FhirError(SchemaError):
    """A bundle that breaks the FHIR structure; ``problems`` names each entry and field."""

    def __init__(self, source: str, problems: Sequence[FhirProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        listed = "; ".join(f"{p.path}: {p.message}" for p in self.problems[:MAX_LISTED_PROBLEMS])
        more = len(self.problems) - MAX_LISTED_PROBLEMS
        super().__init__(
            f"{source}: not a valid FHIR R4 Bundle: {listed}"
            + (f"; and {more} more" if more > 0 else "")
        )


@dataclass(frozen=True)
class FhirOptions:
    """How a bundle is read (see the module notes)."""

    window_days: float | None = None
    as_of: datetime | date | str | None = None
    patient_id: Literal["id", "identifier"] = "id"
    identifier_system: str | None = None
    range_policy: Literal["null", "keep"] = "null"
    censored: Literal["bound", "missing"] = "bound"
    insulin_pmol_per_uiu: float = INSULIN_PMOL_PER_UIU
    # Condition codes ("system|code") that mean label = 1; empty: Conditions are not read.
    label_codes: tuple[str, ...] = ()
    # The range each feature is checked against (deeppcos.knowledge.ranges); None: a PCOS cohort's.
    ranges: Mapping[str, RangeRule] | None = None

    def __post_init__(self) -> None:
        if self.window_days is not None and not self.window_days > 0:
            raise ValueError(f"window_days must be positive, got {self.window_days!r}")
        if self.patient_id not in ("id", "identifier"):
            raise ValueError(f"patient_id must be 'id' or 'identifier', got {self.patient_id!r}")
        if self.range_policy not in ("null", "keep"):
            raise ValueError(f"range_policy must be 'null' or 'keep', got {self.range_policy!r}")
        if self.censored not in ("bound", "missing"):
            raise ValueError(f"censored must be 'bound' or 'missing', got {self.censored!r}")


def feature_codes() -> dict[str, tuple[Feature, ...]]:
    """LOINC code → the catalog features it fills (in catalog order)."""
    codes: dict[str, list[Feature]] = defaultdict(list)
    for feature in CATALOG.values():
        for code in (feature.loinc, *feature.loinc_alt):
            if code:
                codes[code].append(feature)
    return {code: tuple(features) for code, features in codes.items()}


# --- small value types -----------------------------------------------------------------------


@dataclass(frozen=True)
class _When:
    moment: datetime  # aware, UTC
    precision: Literal["year", "month", "day", "time"]

    def text(self) -> str:
        fmt = {"year": "%Y", "month": "%Y-%m", "day": "%Y-%m-%d", "time": "%Y-%m-%dT%H:%MZ"}
        return self.moment.strftime(fmt[self.precision])


@dataclass(frozen=True)
class _Patient:
    entry: int
    patient_id: str
    birth: _When | None


@dataclass(frozen=True)
class _Value:
    """One coded value of an Observation (or of one of its components)."""

    entry: int
    where: str  # '' for the Observation itself, 'component[j].' for a component
    patient_id: str
    code: str
    display: str
    quantity: dict[str, Any] | None
    integer: int | None
    other_value: str | None  # the value[x] element name when it is not a number
    absent: str | None  # dataAbsentReason code/text
    when: _When | None


@dataclass(frozen=True)
class _Reading:
    """A usable number for one feature, in the catalog's unit."""

    entry: int
    patient_id: str
    feature: str
    code: str
    value: float
    when: _When | None


def _parse_when(text: str, kind: Literal["date", "dateTime"]) -> _When | None:
    """A FHIR date or dateTime (partial dates allowed) as a UTC moment, or None if malformed."""
    pattern = _DATE if kind == "date" else _DATETIME
    match = pattern.match(text)
    if not match:
        return None
    year = int(match.group(1))
    month = int(match.group(3)) if match.group(3) else None
    day = int(match.group(5)) if match.group(5) else None
    try:
        if kind == "dateTime" and "T" in text:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
            return _When(moment, "time")
        moment = datetime(year, month or 1, day or 1, tzinfo=UTC)
    except ValueError:  # e.g. 2023-02-30
        return None
    precision: Literal["year", "month", "day"] = "day" if day else "month" if month else "year"
    return _When(moment, precision)


def _as_of(value: datetime | date | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    when = _parse_when(str(value), "dateTime")
    if when is None:
        raise ValueError(f"as_of must be a FHIR date or dateTime, got {value!r}")
    return when.moment


def _age_years(birth: datetime, at: datetime) -> float:
    return round((at - birth).days / 365.25, 2)


# --- the reader -------------------------------------------------------------------------------


@dataclass
class FhirPatients:
    """The canonical patients table read from a bundle, and what reading it did."""

    patients: pd.DataFrame  # patient_id + feature columns (float64, NaN = missing)
    feature_columns: list[str]
    report: LoadReport
    source: str
    reference_dates: dict[str, str | None] = field(default_factory=dict)

    def to_cohort(self, features: Sequence[str] = (), name: str | None = None):  # -> Cohort
        """A Cohort of these patients; ``features`` the table lacks (what a model needs) are
        added as missing values, and the report says which."""
        from deeppcos.data.cohort import Cohort, empty_images_table
        from deeppcos.data.spec import spec_from_dict

        patients = self.patients.copy()
        columns = list(self.feature_columns)
        absent = [f for f in dict.fromkeys(features) if f not in patients]
        for column in absent:
            patients[column] = np.nan
        columns += absent
        if absent:
            self.report.add(
                "info",
                "note",
                f"no value in the bundle for {len(absent)} model input(s), missing for every "
                f"patient: {absent}",
                file=self.source,
            )
        spec = spec_from_dict(
            {"name": name or f"fhir: {Path(self.source).name}", "patients": {"label_column": None}}
        )
        return Cohort(
            spec=spec,
            patients=patients,
            images=empty_images_table(),
            feature_columns=columns,
            report=self.report,
        )


def read_bundle(
    source: Path | str | Mapping[str, Any], options: FhirOptions | None = None
) -> FhirPatients:
    """Read a FHIR R4 Bundle (a JSON file, or the parsed JSON) into the patients table."""
    bundle, name = _load_json(source)
    return _BundleReader(name, options or FhirOptions()).read(bundle)


def load_fhir_cohort(
    source: Path | str | Mapping[str, Any],
    options: FhirOptions | None = None,
    features: Sequence[str] = (),
):  # -> Cohort
    """:func:`read_bundle` (a parsed bundle) or :func:`read_fhir_source` (a Bundle file, an
    NDJSON export or a folder), then :meth:`FhirPatients.to_cohort` (``features``: model
    inputs)."""
    if isinstance(source, Mapping):
        return read_bundle(source, options).to_cohort(features)
    return read_fhir_source(source, options).to_cohort(features)


def read_fhir_source(path: Path | str, options: FhirOptions | None = None) -> FhirPatients:
    """A FHIR cohort from files: a Bundle (``.json``), an NDJSON bulk export (``.ndjson``, one
    resource per line: Patient.ndjson, Observation.ndjson, Condition.ndjson, …), or a folder of
    either (its top level, in name order; a ``.json`` there may also hold a single resource).
    Every resource is read as one collection, so an Observation in one file may refer to a
    Patient in another; a patient id in two files is an error naming both places (never a
    silent merge: two sources' ids can collide). A line (or, in a folder, a ``.json`` file) that
    is not a JSON FHIR resource is left out and reported with its file and line; structural
    problems in a resource raise :class:`FhirError` naming the file and line or entry."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            f for f in path.iterdir() if f.is_file() and f.suffix.lower() in (".json", ".ndjson")
        )
        if not files:
            raise DataFileError(f"{path}: no .json or .ndjson FHIR files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise DataFileError(f"{path}: FHIR file or folder not found")
    if files == [path] and path.suffix.lower() != ".ndjson":
        return read_bundle(path, options)
    reader = _BundleReader(str(path), options or FhirOptions())
    entries: list[dict[str, Any]] = []
    origins: list[str] = []
    for file in files:
        if file.suffix.lower() == ".ndjson":
            _ndjson_entries(file, entries, origins, reader.report)
        else:
            _bundle_entries(file, entries, origins, reader.report)
    reader.origins = origins
    return reader.read({"resourceType": "Bundle", "type": "collection", "entry": entries})


def _ndjson_entries(
    file: Path, entries: list[dict[str, Any]], origins: list[str], report: LoadReport
) -> None:
    with file.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            problem: str | None
            try:
                resource = json.loads(line)
            except json.JSONDecodeError as exc:
                resource, problem = None, f"not valid JSON ({exc.msg}, column {exc.colno})"
            else:
                problem = (
                    None
                    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str)
                    else "not a FHIR resource (a JSON object with a resourceType)"
                )
            if problem is not None:
                report.add(
                    "excluded", "note", f"{problem}; line left out", file=str(file), row=number
                )
                continue
            entries.append({"resource": resource})
            origins.append(f"{file.name}:{number}")


def _bundle_entries(
    file: Path, entries: list[dict[str, Any]], origins: list[str], report: LoadReport
) -> None:
    """The entries of a Bundle file in a folder (a single resource is one entry). A file that is
    not JSON, or not a FHIR resource, is left out and reported, as a bad NDJSON line is."""
    try:
        content, _ = _load_json(file)
    except DataFileError as exc:
        report.add("excluded", "note", f"{exc}; file left out", file=str(file))
        return
    kind = content.get("resourceType") if isinstance(content, dict) else None
    if not isinstance(kind, str):
        report.add(
            "excluded",
            "note",
            "not a FHIR resource (a JSON object with a resourceType); file left out",
            file=str(file),
        )
        return
    if kind != "Bundle":
        entries.append({"resource": content})
        origins.append(file.name)
        return
    raw = content.get("entry", [])
    if not isinstance(raw, list):
        report.add(
            "excluded",
            "note",
            f"Bundle.entry is not an array (found {type(raw).__name__}); file left out",
            file=str(file),
            column="Bundle.entry",
        )
        return
    for index, entry in enumerate(raw):
        entries.append(entry)
        origins.append(f"{file.name} entry[{index}]")


def _load_json(source: Path | str | Mapping[str, Any]) -> tuple[Any, str]:
    if isinstance(source, Mapping):
        return source, "<FHIR bundle>"
    path = Path(source)
    if not path.is_file():
        raise DataFileError(f"{path}: FHIR bundle file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not UTF-8 text, as FHIR JSON must be ({exc})") from exc
    try:
        return json.loads(text), str(path)
    except json.JSONDecodeError as exc:
        raise DataFileError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc


class _BundleReader:
    def __init__(self, source: str, options: FhirOptions) -> None:
        self.source = source
        self.options = options
        self.as_of = _as_of(options.as_of)
        self.report = LoadReport()
        self.problems: list[FhirProblem] = []
        self.codes = feature_codes()
        self.patients: dict[str, _Patient] = {}  # patient_id -> patient
        self.references: dict[str, str] = {}  # reference text -> patient_id
        self.values: list[_Value] = []
        self.diagnosed: set[str] = set()  # patients with a Condition coded as the label
        self.suspected: set[str] = set()  # … coded as the label but only suspected
        self.other_conditions: list[int] = []  # entries of Conditions with other codes
        # (code, features) -> the first entry, per patient, of a code filling several features
        self.shared_fills: dict[tuple[str, tuple[str, ...]], list[int]] = defaultdict(list)
        # Where each entry came from ("file.ndjson:12"), when entries were gathered from files.
        self.origins: list[str] | None = None

    # -- helpers ------------------------------------------------------------------------

    def problem(self, entry: int | None, where: str, message: str) -> None:
        if entry is not None and self.origins is not None:
            # Read from files: name the file and line (or entry) instead of a merged index.
            where = f"{self.origins[entry]}: {where}"
            entry = None
        self.problems.append(FhirProblem(entry, where, message))

    def where(self, entry: int) -> str:
        """An entry as a user finds it: its index, and its file and line when read from files."""
        return f"entry[{entry}]" if self.origins is None else self.origins[entry]

    def note(
        self,
        level: Literal["info", "warning", "excluded"],
        action: str,
        message: str,
        entry: int | None = None,
        column: str | None = None,
        found: object = None,
        expected: str | None = None,
    ) -> None:
        self.report.add(
            level,
            action,
            message,
            file=self.source,
            row=None if entry is None else self.where(entry),
            column=column,
            found=found,
            expected=expected,
        )

    def _typed(self, entry: int, where: str, value: Any, kind: type, name: str) -> Any:
        """``value`` when it has the JSON type FHIR prescribes, else a problem and None."""
        if value is None:
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            self.problem(entry, where, f"expected {name}, found {value!r}")
            return None
        return value

    # -- the bundle ---------------------------------------------------------------------

    def read(self, bundle: Any) -> FhirPatients:
        entries = self._entries(bundle)
        observations: list[tuple[int, dict[str, Any]]] = []
        conditions: list[tuple[int, dict[str, Any]]] = []
        ignored: dict[str, list[int]] = defaultdict(list)
        for index, entry in entries:
            resource = entry["resource"]
            kind = resource["resourceType"]
            if kind == "Patient":
                self._patient(index, resource, entry.get("fullUrl"))
            elif kind == "Observation":
                observations.append((index, resource))
            elif kind == "Condition" and self.options.label_codes:
                conditions.append((index, resource))
            else:
                ignored[kind].append(index)
        for index, resource in observations:
            self._observation(index, resource)
        for index, resource in conditions:
            self._condition(index, resource)
        if self.problems:
            raise FhirError(self.source, self.problems)
        if self.other_conditions:
            self.note(
                "info",
                "note",
                f"{len(self.other_conditions)} Condition resource(s) coded other than "
                f"{list(self.options.label_codes)}: not the label; not read",
                entry=self.other_conditions[0],
                column="Condition.code",
            )
        for kind, indices in ignored.items():
            self.note(
                "info",
                "note",
                f"{len(indices)} {kind} resource(s) not read (only Patient and Observation are"
                + (", and Condition for the label)" if self.options.label_codes else ")"),
                entry=indices[0],
                column="resourceType",
                found=kind,
            )
        if not self.patients:
            raise EmptyCohortError(
                f"{self.source}: the bundle holds no Patient resource; expected one per patient, "
                "referenced by each Observation's subject"
            )
        return self._table(self._readings())

    def _entries(self, bundle: Any) -> list[tuple[int, dict[str, Any]]]:
        if not isinstance(bundle, dict):
            raise FhirError(
                self.source,
                [
                    FhirProblem(
                        None, "<root>", f"expected a JSON object, found {type(bundle).__name__}"
                    )
                ],
            )
        if bundle.get("resourceType") != "Bundle":
            raise FhirError(
                self.source,
                [
                    FhirProblem(
                        None,
                        "resourceType",
                        f"expected 'Bundle', found {bundle.get('resourceType')!r} (wrap single "
                        "resources in a Bundle of type 'collection')",
                    )
                ],
            )
        raw = bundle.get("entry", [])
        if not isinstance(raw, list):
            raise FhirError(
                self.source,
                [FhirProblem(None, "entry", f"expected an array, found {type(raw).__name__}")],
            )
        entries = []
        for index, entry in enumerate(raw):
            checked = self._entry(index, entry)
            if checked is not None:
                entries.append((index, checked))
        if self.problems:
            raise FhirError(self.source, self.problems)
        return entries

    def _entry(self, index: int, entry: Any) -> dict[str, Any] | None:
        if not isinstance(entry, dict):
            self.problem(index, "<entry>", f"expected an object, found {type(entry).__name__}")
            return None
        resource = entry.get("resource")
        if resource is None:
            if "request" in entry or "response" in entry:
                self.note("info", "note", "entry without a resource (a request or response)", index)
                return None
            self.problem(index, "resource", "missing; every entry needs a resource (bdl-5)")
            return None
        if not isinstance(resource, dict):
            self.problem(index, "resource", f"expected an object, found {type(resource).__name__}")
            return None
        if not isinstance(resource.get("resourceType"), str):
            self.problem(index, "resource.resourceType", "missing or not a string")
            return None
        return entry

    # -- Patient ------------------------------------------------------------------------

    def _patient(self, index: int, resource: dict[str, Any], full_url: Any) -> None:
        rid = self._typed(index, "resource.id", resource.get("id"), str, "a FHIR id string")
        if rid is not None and not _ID.match(rid):
            self.problem(
                index, "resource.id", f"expected a FHIR id ([A-Za-z0-9-.]{{1,64}}), found {rid!r}"
            )
            rid = None
        patient_id = self._patient_id(index, resource, rid, full_url)
        if patient_id is None:
            return
        birth = None
        raw_birth = self._typed(
            index, "resource.birthDate", resource.get("birthDate"), str, "a FHIR date string"
        )
        if raw_birth is not None:
            birth = _parse_when(raw_birth, "date")
            if birth is None:
                self.problem(
                    index,
                    "resource.birthDate",
                    f"expected a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD), found {raw_birth!r}",
                )
        gender = resource.get("gender")
        if gender is not None and gender not in ("female", "male", "other", "unknown"):
            self.problem(
                index,
                "resource.gender",
                f"expected female, male, other or unknown, found {gender!r}",
            )
        elif gender == "male":
            self.note(
                "warning",
                "note",
                f"patient {patient_id!r} is recorded as male; the PCOS model was built for women",
                index,
                "Patient.gender",
                gender,
            )
        if patient_id in self.patients:
            first = self.patients[patient_id].entry
            across = (
                ""
                if self.origins is None
                else " (ids must be unique across the files read: if both are one woman, put "
                "her resources in one file; if two sources' ids collide, read them apart or "
                "use patient_id: identifier with its identifier_system)"
            )
            self.problem(
                index,
                "resource.id",
                f"patient id {patient_id!r} repeats {self.where(first)}{across}",
            )
            return
        self.patients[patient_id] = _Patient(index, patient_id, birth)
        for key in self._reference_keys(resource, rid, full_url):
            self.references[key] = patient_id

    def _patient_id(
        self, index: int, resource: dict[str, Any], rid: str | None, full_url: Any
    ) -> str | None:
        if self.options.patient_id == "identifier":
            value = self._identifier(index, resource)
            if value is None:
                wanted = (
                    f" with system {self.options.identifier_system!r}"
                    if self.options.identifier_system
                    else ""
                )
                self.problem(
                    index, "resource.identifier", f"no identifier{wanted} to use as the patient id"
                )
            return value
        if rid is not None:
            return rid
        if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
            uuid = full_url.removeprefix("urn:uuid:")
            self.note(
                "info",
                "note",
                "Patient without an id: its fullUrl's UUID is the patient id",
                index,
                "fullUrl",
                full_url,
            )
            return uuid
        self.problem(
            index,
            "resource.id",
            "missing; the patient id comes from Patient.id (or use identifiers)",
        )
        return None

    def _identifier(self, index: int, resource: dict[str, Any]) -> str | None:
        identifiers = resource.get("identifier", [])
        if not isinstance(identifiers, list):
            self.problem(index, "resource.identifier", "expected an array")
            return None
        for j, identifier in enumerate(identifiers):
            if not isinstance(identifier, dict):
                self.problem(index, f"resource.identifier[{j}]", "expected an object")
                continue
            system, value = identifier.get("system"), identifier.get("value")
            wanted = self.options.identifier_system
            if (wanted is None or system == wanted) and isinstance(value, str) and value.strip():
                return value.strip()
        return None

    def _reference_keys(
        self, resource: dict[str, Any], rid: str | None, full_url: Any
    ) -> list[str]:
        keys = []
        if rid is not None:
            keys.append(f"Patient/{rid}")
        if isinstance(full_url, str):
            keys.append(full_url)
        for identifier in resource.get("identifier", []) or []:
            if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
                keys.append(f"identifier:{identifier.get('system') or ''}|{identifier['value']}")
        return keys

    # -- Condition (the label) ------------------------------------------------------------

    def _condition(self, index: int, resource: dict[str, Any]) -> None:
        """A Condition coded as one of ``label_codes`` (a coding whose system and code both
        match) is a diagnosis of its subject — label 1 — when its verificationStatus is
        ``confirmed`` or absent (most records carry none). ``refuted`` and ``entered-in-error``
        never count; ``unconfirmed``, ``provisional`` and ``differential`` (suspected, not
        diagnosed) leave the label missing unless another Condition counts. clinicalStatus is
        not read: a resolved or inactive diagnosis still says the patient had the condition, and
        Condition dates are not windowed (a diagnosis after the labs is the usual order)."""
        codes = self._condition_codes(index, resource)
        if not codes & set(self.options.label_codes):
            self.other_conditions.append(index)
            return
        status = _first_code(resource.get("verificationStatus"))
        if status in NOT_A_DIAGNOSIS:
            self.note(
                "excluded",
                "note",
                f"Condition with verificationStatus {status!r}: not a diagnosis; not counted",
                index,
                "Condition.verificationStatus",
                status,
            )
            return
        patient_id = self._subject(index, resource)
        if patient_id is None:
            return
        if status is None or status in DIAGNOSIS:
            self.diagnosed.add(patient_id)
            return
        known = status in UNCERTAIN_DIAGNOSIS
        self.note(
            "warning",
            "note",
            f"Condition with verificationStatus {status!r}: "
            + ("suspected, not diagnosed" if known else "not a code of condition-ver-status")
            + f"; patient {patient_id!r}'s label is left missing unless another Condition "
            "confirms it",
            index,
            "Condition.verificationStatus",
            status,
            expected="confirmed (or no verificationStatus) for a diagnosis",
        )
        self.suspected.add(patient_id)

    def _condition_codes(self, index: int, resource: dict[str, Any]) -> set[str]:
        code = resource.get("code")
        if code is None:
            return set()
        if not isinstance(code, dict) or not isinstance(code.get("coding", []), list):
            self.problem(index, "resource.code", "expected a CodeableConcept object")
            return set()
        return {
            f"{c.get('system')}|{c.get('code')}"
            for c in code.get("coding", [])
            if isinstance(c, dict) and isinstance(c.get("system"), str) and c.get("code")
        }

    # -- Observation --------------------------------------------------------------------

    def _observation(self, index: int, resource: dict[str, Any]) -> None:
        status = resource.get("status")
        if status not in STATUSES:
            shown = "missing" if status is None else repr(status)
            self.problem(
                index, "resource.status", f"expected one of {list(STATUSES)}, found {shown}"
            )
            return
        if not isinstance(resource.get("code"), dict):
            self.problem(
                index, "resource.code", "missing or not a CodeableConcept object (required)"
            )
            return
        when = self._when(index, resource)
        patient_id = self._subject(index, resource)
        parts: list[tuple[str, dict[str, Any]]] = [("", resource)]
        components = resource.get("component", [])
        if not isinstance(components, list):
            self.problem(index, "resource.component", "expected an array")
            components = []
        for j, component in enumerate(components):
            if not isinstance(component, dict) or not isinstance(component.get("code"), dict):
                self.problem(index, f"resource.component[{j}].code", "missing or not an object")
                continue
            parts.append((f"component[{j}].", component))
        found = [self._value(index, where, part, patient_id, when) for where, part in parts]
        if self.problems or patient_id is None:
            return
        mapped = [v for v in found if v is not None and v.code in self.codes]
        for value, (where, part) in zip(found, parts, strict=True):
            if value is None or value.code not in self.codes:
                if where == "" and mapped:
                    continue  # a panel (e.g. blood pressure) whose components were read
                self._unknown_code(index, where, part)
        if status in _NOT_A_RESULT:
            if mapped:
                self.note(
                    "excluded",
                    "note",
                    f"Observation status {status!r}: not a result; its value is not used",
                    index,
                    "Observation.status",
                    status,
                )
            return
        if status in _TENTATIVE and mapped:
            self.note(
                "warning",
                "note",
                f"Observation status {status!r}: the value is used but may change",
                index,
                "Observation.status",
                status,
            )
        self.values.extend(mapped)

    def _unknown_code(self, index: int, where: str, part: dict[str, Any]) -> None:
        codings = part["code"].get("coding") or []
        shown = [
            f"{c.get('system', '<no system>')}|{c.get('code')}"
            + (f" ({c['display']})" if isinstance(c.get("display"), str) else "")
            for c in codings
            if isinstance(c, dict)
        ]
        text = part["code"].get("text")
        label = "; ".join(shown) or (f"text only: {text!r}" if text else "no coding")
        self.note(
            "warning",
            "unknown_column",
            "code not in the catalog (only LOINC codes the clinical reference verified are "
            "mapped); value not used",
            index,
            f"Observation.{where}code",
            label,
            expected="a LOINC code of a catalog feature",
        )

    def _when(self, index: int, resource: dict[str, Any]) -> _When | None:
        for key in ("effectiveDateTime", "effectiveInstant"):
            if key in resource:
                return self._moment(index, f"resource.{key}", resource[key])
        if "effectivePeriod" in resource:
            period = resource["effectivePeriod"]
            if not isinstance(period, dict):
                self.problem(index, "resource.effectivePeriod", "expected a Period object")
                return None
            key = "end" if "end" in period else "start"
            if key in period:
                return self._moment(index, f"resource.effectivePeriod.{key}", period[key])
        if "issued" in resource:
            moment = self._moment(index, "resource.issued", resource["issued"])
            if moment is not None:
                self.note(
                    "info",
                    "note",
                    "no effective[x]: dated by 'issued'",
                    index,
                    "Observation.issued",
                )
            return moment
        return None

    def _moment(self, index: int, where: str, value: Any) -> _When | None:
        text = self._typed(index, where, value, str, "a FHIR dateTime string")
        if text is None:
            return None
        moment = _parse_when(text, "dateTime")
        if moment is None:
            self.problem(
                index,
                where,
                f"expected a FHIR dateTime (YYYY[-MM[-DD[Thh:mm:ss+zz:zz]]]), found {text!r}",
            )
        return moment

    def _subject(self, index: int, resource: dict[str, Any]) -> str | None:
        kind = str(resource.get("resourceType", "Observation"))
        subject = resource.get("subject")
        if subject is None:
            self.note(
                "excluded",
                "note",
                f"{kind} without a subject: cannot tell whose it is; not used",
                index,
                f"{kind}.subject",
            )
            return None
        if not isinstance(subject, dict):
            self.problem(index, "resource.subject", "expected a Reference object")
            return None
        reference = subject.get("reference")
        keys = []
        if reference is not None:
            if not isinstance(reference, str):
                self.problem(
                    index, "resource.subject.reference", f"expected a string, found {reference!r}"
                )
                return None
            keys += [reference, reference.split("/_history/")[0]]
            if "/Patient/" in reference:
                keys.append("Patient/" + reference.rsplit("/Patient/", 1)[1].split("/")[0])
        identifier = subject.get("identifier")
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            keys.append(f"identifier:{identifier.get('system') or ''}|{identifier['value']}")
        for key in keys:
            if key in self.references:
                return self.references[key]
        self.note(
            "excluded",
            "note",
            "subject is not a Patient in this bundle; not used",
            index,
            f"{kind}.subject",
            reference or identifier,
            expected="a reference to a Patient entry (Patient/<id> or its fullUrl)",
        )
        return None

    def _value(
        self,
        index: int,
        where: str,
        part: dict[str, Any],
        patient_id: str | None,
        when: _When | None,
    ) -> _Value | None:
        base = f"resource.{where}"
        codings = part["code"].get("coding", [])
        if not isinstance(codings, list):
            self.problem(index, f"{base}code.coding", "expected an array of Coding objects")
            return None
        code, display = None, ""
        for j, coding in enumerate(codings):
            if not isinstance(coding, dict):
                self.problem(index, f"{base}code.coding[{j}]", "expected a Coding object")
                continue
            loinc = coding.get("code") if coding.get("system") == LOINC_SYSTEM else None
            # The first LOINC coding, unless a later one is a catalog code and it is not.
            if isinstance(loinc, str) and (
                code is None or (code not in self.codes and loinc in self.codes)
            ):
                code, display = loinc, str(coding.get("display", ""))
        quantity = part.get("valueQuantity")
        if quantity is not None and not isinstance(quantity, dict):
            self.problem(index, f"{base}valueQuantity", "expected a Quantity object")
            return None
        if quantity is not None:
            self._check_quantity(index, f"{base}valueQuantity", quantity)
        integer = self._typed(
            index, f"{base}valueInteger", part.get("valueInteger"), int, "an integer"
        )
        other = next(
            (
                k
                for k in part
                if k.startswith("value") and k not in ("valueQuantity", "valueInteger")
            ),
            None,
        )
        absent = part.get("dataAbsentReason")
        absent_text = None
        if absent is not None:
            absent_text = _concept_text(absent)
        if code is None:
            return None
        return _Value(
            index,
            where,
            patient_id or "",
            code,
            display,
            quantity,
            integer,
            other,
            absent_text,
            when,
        )

    def _check_quantity(self, index: int, where: str, quantity: dict[str, Any]) -> None:
        value = quantity.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            self.problem(
                index, f"{where}.value", f"expected a JSON number (FHIR decimal), found {value!r}"
            )
        for key in ("unit", "system", "code"):
            if key in quantity and not isinstance(quantity[key], str):
                self.problem(index, f"{where}.{key}", f"expected a string, found {quantity[key]!r}")
        comparator = quantity.get("comparator")
        if comparator is not None and comparator not in _COMPARATORS:
            self.problem(
                index,
                f"{where}.comparator",
                f"expected one of {list(_COMPARATORS)}, found {comparator!r}",
            )

    # -- from values to readings -------------------------------------------------------

    def _readings(self) -> list[_Reading]:
        readings: list[_Reading] = []
        conversions: dict[tuple[str, str], list[int]] = defaultdict(list)
        for value in self.values:
            for feature in self.codes[value.code]:
                reading = self._reading(value, feature, conversions)
                if reading is not None:
                    readings.append(reading)
                    break  # one reading per value; several targets are filled in _latest
        for (name, unit), entries in conversions.items():
            factor = conversion_factor(unit, CATALOG[name].unit, self._substance(name))
            source = self._substance(name).source
            self.note(
                "info",
                "converted",
                f"{len(entries)} value(s) converted from {unit} to {CATALOG[name].unit} "
                f"(× {factor:.6g}{'; ' + source if source else ''})",
                entries[0],
                name,
                unit,
                CATALOG[name].unit,
            )
        return readings

    def _substance(self, feature: str) -> Substance:
        return substance_for(feature, self.options.insulin_pmol_per_uiu)

    def _reading(
        self, value: _Value, feature: Feature, conversions: dict[tuple[str, str], list[int]]
    ) -> _Reading | None:
        column = f"Observation.{value.where}value"
        number, unit = self._number(value, feature)
        if number is None:
            return None
        if unit is not None:
            try:
                factor = conversion_factor(unit, feature.unit, self._substance(feature.name))
            except UnitError as exc:
                self.note(
                    "warning",
                    "coerced",
                    f"{feature.name}: {exc}; value not used",
                    value.entry,
                    column + "Quantity.unit",
                    unit,
                    expected=f"a unit convertible to {feature.unit}",
                )
                return None
            if abs(factor - 1.0) > 1e-12:
                conversions[(feature.name, unit)].append(value.entry)
                number *= factor
        return _Reading(value.entry, value.patient_id, feature.name, value.code, number, value.when)

    def _number(self, value: _Value, feature: Feature) -> tuple[float | None, str | None]:
        """The raw number and its UCUM unit (None when unitless); reports why there is none."""
        column = f"Observation.{value.where}value"
        quantity = value.quantity
        if quantity is not None and quantity.get("value") is not None:
            number = float(quantity["value"])
            comparator = quantity.get("comparator")
            if comparator in ("<", "<=", ">=", ">"):
                if self.options.censored == "missing":
                    self.note(
                        "warning",
                        "coerced",
                        f"{feature.name}: censored value ({comparator}{number:g}); set to missing",
                        value.entry,
                        column + "Quantity.comparator",
                        comparator,
                    )
                    return None, None
                self.note(
                    "warning",
                    "note",
                    f"{feature.name}: censored value ({comparator}{number:g}); the bound is used",
                    value.entry,
                    column + "Quantity.comparator",
                    comparator,
                )
            unit = self._unit(value, quantity, feature)
            if unit is None and feature.unit not in _DIMENSIONLESS_UNITS:
                return None, None
            return number, unit
        if value.integer is not None:
            if feature.unit not in _DIMENSIONLESS_UNITS:
                self.note(
                    "warning",
                    "coerced",
                    f"{feature.name}: valueInteger has no unit; value not used",
                    value.entry,
                    column + "Integer",
                    value.integer,
                    expected=f"a valueQuantity in {feature.unit}",
                )
                return None, None
            return float(value.integer), None
        if value.absent is not None:
            self.note(
                "info",
                "note",
                f"{feature.name}: no value (dataAbsentReason: {value.absent})",
                value.entry,
                f"Observation.{value.where}dataAbsentReason",
                value.absent,
            )
        elif value.other_value is not None:
            self.note(
                "warning",
                "coerced",
                f"{feature.name}: {value.other_value} is not a number; value not used",
                value.entry,
                f"Observation.{value.where}{value.other_value}",
                expected="valueQuantity",
            )
        else:
            self.note(
                "warning",
                "note",
                f"{feature.name}: no value and no dataAbsentReason",
                value.entry,
                column + "[x]",
                expected="valueQuantity, or dataAbsentReason saying why not",
            )
        return None, None

    def _unit(self, value: _Value, quantity: dict[str, Any], feature: Feature) -> str | None:
        column = f"Observation.{value.where}valueQuantity"
        system, code, text = quantity.get("system"), quantity.get("code"), quantity.get("unit")
        candidate = code if code is not None else text
        if candidate is None:
            if feature.unit not in _DIMENSIONLESS_UNITS:
                self.note(
                    "warning",
                    "coerced",
                    f"{feature.name}: quantity without a unit; value not used",
                    value.entry,
                    column + ".unit",
                    expected=feature.unit,
                )
            return None
        if system not in (None, UCUM_SYSTEM):
            self.note(
                "info",
                "note",
                f"{feature.name}: unit system {system!r} is not UCUM; its code read as UCUM",
                value.entry,
                column + ".system",
                system,
                expected=UCUM_SYSTEM,
            )
        try:
            parse_unit(candidate)
            return candidate
        except UnitError:
            alias = ucum_alias(candidate)
        if alias is None:
            return candidate  # conversion reports it as not understood
        self.note(
            "info",
            "note",
            f"{feature.name}: unit {candidate!r} is not UCUM; read as {alias!r}",
            value.entry,
            column + ".code",
            candidate,
            expected=alias,
        )
        return alias

    # -- choosing the values and building the table ------------------------------------

    def _reference_date(self, readings: list[_Reading]) -> datetime | None:
        if self.as_of is not None:
            return self.as_of
        dated = [r.when.moment for r in readings if r.when is not None]
        return max(dated) if dated else None

    def _in_window(self, reading: _Reading, reference: datetime | None) -> bool:
        window = self.options.window_days
        column = "Observation.effective[x]"
        if reading.when is None:
            if window is not None or self.as_of is not None:
                self.note(
                    "excluded",
                    "note",
                    f"{reading.feature}: undated value, cannot be placed in the window; not used",
                    reading.entry,
                    column,
                )
                return False
            self.note(
                "warning",
                "note",
                f"{reading.feature}: undated value, ranked as the oldest",
                reading.entry,
                column,
            )
            return True
        assert reference is not None
        if reading.when.moment > reference:
            self.note(
                "info",
                "note",
                f"{reading.feature}: dated after as_of ({reference:%Y-%m-%d}); not used",
                reading.entry,
                column,
                reading.when.text(),
            )
            return False
        if window is not None and reading.when.moment < reference - timedelta(days=window):
            self.note(
                "info",
                "note",
                f"{reading.feature}: older than the {window:g}-day window before "
                f"{reference:%Y-%m-%d}; not used",
                reading.entry,
                column,
                reading.when.text(),
            )
            return False
        return True

    def _latest(self, readings: list[_Reading]) -> dict[str, float]:
        """The latest value per feature (codes with several targets fill them oldest first)."""
        chosen: dict[str, float] = {}
        # Grouped by the features filled, so two codes of one feature (a mass and a molar code)
        # compete on date rather than overwrite each other.
        by_targets: dict[tuple[str, ...], list[_Reading]] = defaultdict(list)
        for reading in readings:
            by_targets[tuple(f.name for f in self.codes[reading.code])].append(reading)
        floor = datetime.min.replace(tzinfo=UTC)
        for target_names, group in by_targets.items():
            group.sort(key=lambda r: (r.when.moment if r.when else floor, r.entry))
            targets = list(target_names)
            kept = group[-len(targets) :]
            for reading in group[: -len(targets)]:
                self.note(
                    "info",
                    "note",
                    f"{reading.feature}: superseded by a later value (latest per code is used)",
                    reading.entry,
                    "Observation.effective[x]",
                    reading.when.text() if reading.when else "undated",
                )
            self._same_day(kept[-1], group)
            for target, reading in zip(targets, kept, strict=False):
                chosen[target] = reading.value
            if len(targets) > 1:
                self.shared_fills[(kept[0].code, target_names)].append(kept[0].entry)
        return chosen

    def _note_shared_fills(self) -> None:
        """One note per code that fills several features (not one per patient and value)."""
        for (code, targets), entries in self.shared_fills.items():
            self.note(
                "info",
                "note",
                f"LOINC {code} fills {list(targets)} with the {len(targets)} latest values, "
                f"oldest first ({len(entries)} patient(s); the first here)",
                entries[0],
                targets[0],
            )

    def _same_day(self, latest: _Reading, group: list[_Reading]) -> None:
        if latest.when is None:
            return
        ties = [
            r
            for r in group
            if r is not latest
            and r.when is not None
            and r.when.moment == latest.when.moment
            and r.value != latest.value
        ]
        for tie in ties:
            self.note(
                "warning",
                "note",
                f"{latest.feature}: two different values at {latest.when.text()} "
                f"({tie.value:g} in entry[{tie.entry}], {latest.value:g} in "
                f"entry[{latest.entry}]); the later entry is used",
                latest.entry,
                latest.feature,
            )

    def _age(self, patient: _Patient, reference: datetime | None, row: dict[str, float]) -> None:
        if patient.birth is None:
            return
        if reference is None:
            self.note(
                "warning",
                "note",
                f"patient {patient.patient_id!r}: birthDate given but no dated observation or "
                "as_of to compute the age at; age left missing",
                patient.entry,
                "Patient.birthDate",
            )
            return
        if AGE_FEATURE in row:
            self.note(
                "info",
                "note",
                f"patient {patient.patient_id!r}: age from birthDate replaces the Age observation",
                patient.entry,
                AGE_FEATURE,
            )
        if patient.birth.precision != "day":
            self.note(
                "warning",
                "note",
                f"patient {patient.patient_id!r}: birthDate has {patient.birth.precision} "
                "precision; the age may be off by up to that much",
                patient.entry,
                "Patient.birthDate",
                patient.birth.text(),
            )
        row[AGE_FEATURE] = _age_years(patient.birth.moment, reference)

    def _table(self, readings: list[_Reading]) -> FhirPatients:
        per_patient: dict[str, list[_Reading]] = defaultdict(list)
        for reading in readings:
            per_patient[reading.patient_id].append(reading)
        rows, dates = [], {}
        for patient in self.patients.values():
            own = per_patient.get(patient.patient_id, [])
            reference = self._reference_date(own)
            kept = [r for r in own if self._in_window(r, reference)]
            row = self._latest(kept)
            # The age is taken at the latest value used (the assessment), else at as_of.
            dated = [r.when.moment for r in kept if r.when is not None]
            assessed = max(dated) if dated else self.as_of
            self._age(patient, assessed, row)
            rows.append({"patient_id": patient.patient_id, **row})
            dates[patient.patient_id] = None if assessed is None else assessed.isoformat()
        self._note_shared_fills()
        columns = [name for name in CATALOG if any(name in row for row in rows)]
        frame = pd.DataFrame(rows, columns=["patient_id", *columns])
        frame[columns] = frame[columns].astype("float64")
        if self.options.label_codes:
            label = [
                1 if pid in self.diagnosed else None if pid in self.suspected else 0
                for pid in frame["patient_id"]
            ]
            frame.insert(1, "label", pd.array(label, dtype="Int8"))
        frame.index = pd.Index(frame["patient_id"], name="row")
        check_ranges(
            frame,
            self.report,
            self.source,
            self.options.range_policy,
            columns,
            self.options.ranges,
        )
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
        return FhirPatients(frame, columns, self.report, self.source, dates)


def _first_code(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding", []) or []:
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return coding["code"]
    return None


def _concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return repr(concept)
    for coding in concept.get("coding", []) or []:
        if isinstance(coding, dict) and coding.get("code"):
            return str(coding["code"])
    return str(concept.get("text", "unspecified"))
