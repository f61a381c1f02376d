"""The cohort spec: a YAML file that says where a cohort's tables and images are and what their
columns mean, so the same toolkit serves PCOS, chest X-ray or any image-plus-table cohort.

A spec file is either a spec at the top level or a config with a ``cohort:`` section. Relative
paths are resolved against the folder of the YAML file that names them.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from deeppcos.exceptions import ConfigError

CohortFormat = Literal["tables", "kaggle-pcos", "image-folder", "dicom", "nih-chestxr", "fhir"]
RangePolicy = Literal["null", "keep"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatientsSpec(_Strict):
    """One row per patient."""

    path: Path | None = None
    sheet: str | None = Field(None, description="worksheet name for .xlsx files")
    id_column: str = "patient_id"
    label_column: str | None = "pcos"
    severity_column: str | None = None
    severity_levels: list[str] | None = Field(
        None, description="severity grades in order, mildest first; values outside are errors"
    )
    feature_columns: list[str] | None = Field(
        None, description="tabular features; None uses every column that is not an id or label"
    )
    group_column: str | None = Field(None, description="site or group, for subgroup metrics")
    rename: dict[str, str] = Field(default_factory=dict)
    drop_columns: list[str] = Field(default_factory=list)
    # How to read a CSV/TSV that is not UTF-8, comma-separated with its header on line 1 (as
    # European spreadsheet exports often are: Latin-1 or cp1252, ';', a title line on top).
    encoding: str | None = Field(
        None, description="text encoding of a CSV/TSV file (latin-1, cp1252, …); default UTF-8"
    )
    sep: str | None = Field(
        None, description="column separator of a CSV/TSV file (';', '\\t', …); default by suffix"
    )
    header_row: int = Field(
        1, ge=1, description="line (CSV/TSV) or row (XLSX) holding the column names; 1 = first"
    )
    categorical: list[str] | dict[str, list[str]] = Field(
        default_factory=list,
        description="columns whose values are categories (text or codes), after rename; a "
        "mapping gives each column's categories in order (a value outside is reported and set "
        "missing), a list lets the data say which categories there are",
    )
    infer_categorical: bool = Field(
        True,
        description="when feature_columns is not given, use a text column with at most "
        "max_categories distinct values as a categorical feature (the load report says so)",
    )
    max_categories: int = Field(
        20,
        ge=2,
        description="more distinct values than this in a categorical column is free "
        "text, not categories: refused with the column named",
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(
                    f"unknown text encoding {value!r}; expected a codec name such as utf-8, "
                    "latin-1 or cp1252"
                ) from None
        return value

    @field_validator("sep")
    @classmethod
    def _single_character(cls, value: str | None) -> str | None:
        # Longer separators make pandas treat them as regular expressions: refuse, not guess.
        if value is not None and (len(value) != 1 or value in "\r\n\"'"):
            raise ValueError(
                f"separator {value!r} must be a single character such as ';', ',' or '\\t' "
                "(not a quote or a line break)"
            )
        return value


class ImagesSpec(_Strict):
    """One row per image: a manifest table, or a folder with one subfolder per class."""

    manifest: Path | None = None
    folder: Path | None = None
    root: Path | None = Field(
        None,
        description="base folder for relative paths in the manifest (default: the manifest's "
        "folder); every image path must resolve, symlinks followed, inside it or inside one of "
        "allowed_roots, else the image is left out",
    )
    allowed_roots: list[Path] = Field(
        default_factory=list,
        description="further folders that image paths may point into (absolute paths or '../' "
        "in a manifest, symlinks in an image folder); nothing outside is ever opened",
    )
    path_column: str = "path"
    patient_column: str = "patient_id"
    side_column: str | None = None
    view_column: str | None = None
    label_column: str | None = Field(None, description="image-level label, if any")
    label_map: dict[str, int] | None = Field(
        None,
        description="image-level label values -> 0/1, when the file does not hold 0/1 as meant "
        "(PCOSGen's 'Healthy' column: {'1': 0, '0': 1}); a value not in the map is an error",
    )
    conflicting_copies: Literal["exclude", "keep"] = Field(
        "exclude",
        description="byte-identical image files whose labels disagree: 'exclude' leaves every "
        "copy out, 'keep' keeps them with a warning; both list each copy in the load report",
    )
    class_map: dict[str, int] | None = Field(
        None, description="image-folder format: subfolder name -> label (0/1)"
    )
    max_pixels: int = Field(
        60_000_000, gt=0, description="larger images are refused (decompression-bomb guard)"
    )


class FhirSourceSpec(_Strict):
    """A cohort read from FHIR R4: a Bundle (JSON), an NDJSON bulk export, or a folder of them."""

    path: Path = Field(description="a Bundle .json file, an .ndjson file, or a folder of them")
    label_codes: list[str] = Field(
        default_factory=list,
        description="Condition codes, as 'system|code', that mean label = 1 (for PCOS, the "
        "SNOMED CT or ICD-10 code your records use); a patient with none of them is 0; empty: "
        "the cohort is unlabelled",
    )
    window_days: float | None = Field(
        None,
        gt=0,
        description="use only observations within this many days of each patient's latest one",
    )
    patient_id: Literal["id", "identifier"] = "id"
    identifier_system: str | None = None
    censored: Literal["bound", "missing"] = "bound"

    @field_validator("label_codes")
    @classmethod
    def _system_and_code(cls, values: list[str]) -> list[str]:
        for value in values:
            system, bar, code = value.partition("|")
            if not bar or not system.strip() or not code.strip():
                raise ValueError(
                    f"label code {value!r} must be 'system|code', e.g. "
                    "'http://hl7.org/fhir/sid/icd-10|<code>'"
                )
        return values


class CohortSpec(_Strict):
    name: str
    description: str = ""
    format: CohortFormat = "tables"
    label_name: str = Field("pcos", description="what the binary label means, for display")
    pcos: bool | None = Field(
        None,
        description="whether the label is a PCOS diagnosis: turns on the catalog's PCOS-cohort "
        "ranges, the Rotterdam checklist and severity by phenotype; default: label_name is "
        "'pcos'",
    )
    image_modality: str | None = Field(
        None,
        description="what the images are, in words for reports and pages (e.g. 'ultrasound', "
        "'chest X-ray'); default 'ultrasound' for a PCOS cohort, else 'image'",
    )
    patients: PatientsSpec | None = None
    images: ImagesSpec | None = None
    fhir: FhirSourceSpec | None = Field(None, description="format 'fhir': where and how to read")
    ranges: dict[str, tuple[float | None, float | None]] = Field(
        default_factory=dict,
        description="plausible range per column (after rename), [low, high], null for an open "
        "end; replaces the catalog's range for that column and gives one to a non-catalog column",
    )
    range_policy: RangePolicy = Field(
        "null",
        description="values outside the catalog's plausible range: 'null' sets them missing, "
        "'keep' keeps them; both record every such value in the load report",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="format-specific options")
    base_dir: Path = Field(Path("."), description="set on load: folder of the YAML file")

    @model_validator(mode="after")
    def _needs_a_source(self) -> CohortSpec:
        if self.format == "fhir":
            if self.fhir is None:
                raise ValueError("format 'fhir' needs a 'fhir' section (path, label_codes)")
            if self.patients is not None or self.images is not None:
                raise ValueError(
                    "format 'fhir' reads patients from the 'fhir' section; remove 'patients' "
                    "and 'images' (they would be ignored)"
                )
        elif self.fhir is not None:
            raise ValueError(f"a 'fhir' section needs format: fhir (found format {self.format})")
        elif self.patients is None and self.images is None:
            raise ValueError("a cohort needs a 'patients' section, an 'images' section, or both")
        for column, (low, high) in self.ranges.items():
            if low is not None and high is not None and low > high:
                raise ValueError(f"ranges.{column}: low {low:g} is above high {high:g}")
        if self.patients and self.patients.severity_column and not self.patients.severity_levels:
            raise ValueError("'severity_column' needs 'severity_levels' (grades, mildest first)")
        return self

    @property
    def is_pcos(self) -> bool:
        """Whether the label is PCOS (``pcos``, else ``label_name`` is 'pcos')."""
        if self.pcos is not None:
            return self.pcos
        return self.label_name.strip().lower() == "pcos"

    @property
    def modality(self) -> str:
        """The images' kind in words ('ultrasound', 'chest X-ray', …)."""
        return self.image_modality or ("ultrasound" if self.is_pcos else "image")

    def resolve(self, path: Path | str | None) -> Path | None:
        """A path from the spec, made absolute against the spec's folder."""
        if path is None:
            return None
        path = Path(path).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()


def load_spec(path: Path | str) -> CohortSpec:
    """Read and validate a cohort spec (or a config's ``cohort:`` section) from YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: spec file not found; expected a YAML cohort spec or config")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping at the top level, found {type(raw).__name__}"
        )
    section = raw.get("cohort", raw)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'cohort' must be a mapping, found {type(section).__name__}")
    return spec_from_dict(section, base_dir=path.parent.resolve(), source=str(path))


def spec_from_dict(
    data: dict[str, Any], *, base_dir: Path | str = ".", source: str = "<dict>"
) -> CohortSpec:
    """Validate a spec given as a mapping; relative paths resolve against ``base_dir``."""
    try:
        return CohortSpec.model_validate({**data, "base_dir": Path(base_dir).resolve()})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}"
            f" (found {err.get('input')!r})"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: invalid cohort spec: {problems}") from exc


def dump_spec(spec: CohortSpec, path: Path | str) -> None:
    """Write a spec as YAML (paths relative to the file where possible)."""
    path = Path(path)
    data = spec.model_dump(mode="json", exclude={"base_dir"}, exclude_none=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
