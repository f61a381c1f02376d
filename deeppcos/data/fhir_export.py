"""A cohort's patients table as FHIR R4 resources: a Patient per row, an Observation per value
of a catalog feature that has a verified LOINC code (in the catalog's UCUM unit), and a
Condition for each patient whose label is 1, coded as the caller says.

It exists so a cohort built from a public table can be read back as FHIR
(``format: fhir``), as a bundle per patient or as an NDJSON bulk export, and so the FHIR reader
is tested on real values. No code is invented: features without a verified LOINC code are left
out (and listed), and the label's code is the caller's (``system|code``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from deeppcos.data.fhir import LOINC_SYSTEM, UCUM_SYSTEM
from deeppcos.knowledge.catalog import CATALOG

# Several features share one LOINC code (β-hCG's two measurements): the reader fills them
# oldest first, so each later one is written a minute later.
_STEP = timedelta(minutes=1)


def exportable(columns: list[str]) -> tuple[list[str], list[str]]:
    """(features written as Observations, features left out for want of a verified code)."""
    kept = [c for c in columns if c in CATALOG and CATALOG[c].loinc]
    return kept, [c for c in columns if c not in kept]


def patient_resources(
    row: pd.Series, features: list[str], label_code: str | None, when: datetime
) -> Iterator[dict[str, Any]]:
    """The resources of one patient (``row`` of a canonical patients table)."""
    pid = str(row["patient_id"])
    yield {"resourceType": "Patient", "id": pid, "gender": "female"}
    moment = when
    for number, name in enumerate(features):
        value = row.get(name)
        if value is None or pd.isna(value):
            continue
        feature = CATALOG[name]
        yield {
            "resourceType": "Observation",
            "id": f"{pid}-{number}",
            "status": "final",
            "code": {"coding": [{"system": LOINC_SYSTEM, "code": feature.loinc}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": moment.isoformat(),
            "valueQuantity": {
                "value": float(value),
                "unit": feature.unit,
                "system": UCUM_SYSTEM,
                "code": feature.unit,
            },
        }
        moment += _STEP
    label = row.get("label")
    if label_code is not None and label is not None and not pd.isna(label) and int(label) == 1:
        system, _, code = label_code.partition("|")
        yield {
            "resourceType": "Condition",
            "id": f"{pid}-label",
            "subject": {"reference": f"Patient/{pid}"},
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": "confirmed",
                    }
                ]
            },
            "code": {"coding": [{"system": system, "code": code}]},
        }


def write_bundles(
    patients: pd.DataFrame,
    features: list[str],
    folder: Path,
    label_code: str | None,
    when: datetime,
) -> int:
    """One collection Bundle per patient, ``<patient_id>.json``; the number written."""
    folder.mkdir(parents=True, exist_ok=True)
    for _, row in patients.iterrows():
        entries = [
            {"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r}
            for r in patient_resources(row, features, label_code, when)
        ]
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        (folder / f"{row['patient_id']}.json").write_text(json.dumps(bundle), encoding="utf-8")
    return len(patients)


def write_ndjson(
    patients: pd.DataFrame,
    features: list[str],
    folder: Path,
    label_code: str | None,
    when: datetime,
) -> dict[str, int]:
    """A bulk export: ``Patient.ndjson``, ``Observation.ndjson``, ``Condition.ndjson``; the
    number of resources of each type."""
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    handles: dict[str, Any] = {}
    try:
        for _, row in patients.iterrows():
            for resource in patient_resources(row, features, label_code, when):
                kind = resource["resourceType"]
                if kind not in handles:
                    handles[kind] = (folder / f"{kind}.ndjson").open("w", encoding="utf-8")
                handles[kind].write(json.dumps(resource) + "\n")
                counts[kind] = counts.get(kind, 0) + 1
    finally:
        for handle in handles.values():
            handle.close()
    return counts
