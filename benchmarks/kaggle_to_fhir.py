"""The Kaggle PCOS table written as FHIR R4 — a folder of per-patient Bundles and an NDJSON bulk
export — with a cohort spec for each and a tabular-only training config, all under ``--out``.

    .venv/bin/python benchmarks/kaggle_to_fhir.py --out /tmp/kaggle-fhir
        [--label-code 'urn:deeppcos:example|pcos'] [--check [--kaggle-run RUN]]

The table is read through ``configs/pcos-kaggle-tabular.yaml`` (every cleaning the loader does)
from ../shared/data, in place; nothing is written outside ``--out``. Each woman becomes a
Patient, each value of a feature with a LOINC code the clinical reference verified an
Observation in the catalog's UCUM unit (features without one are left out and listed), and a
PCOS diagnosis a confirmed Condition coded ``--label-code``. The reference verifies no SNOMED CT
or ICD-10 code for PCOS, so none is assumed: the default is a placeholder in a local system, and
a site uses the code its records carry (the spec's ``fhir.label_codes``).

Written under ``--out``: ``bundles/`` (``<patient_id>.json``), ``ndjson/`` (``Patient.ndjson``,
``Observation.ndjson``, ``Condition.ndjson``), ``bundles.yaml`` and ``ndjson.yaml`` (cohort
specs, ``format: fhir``), ``config.yaml`` (the Kaggle config's settings, its ``cohort:`` the
NDJSON spec) and ``conversion.json`` (what was written).

``--check`` then runs the CLI on it and writes ``results.json``: ``validate`` of both layouts,
``audit``, ``train --config config.yaml``, and ``evaluate RUN --cohort ndjson.yaml`` of a run
trained on the Kaggle table itself (``--kaggle-run``, else trained under ``--out``). The same
women are in that run's development data and only the features with a LOINC code reach it, so
its figure on this cohort measures the FHIR round trip with the other features missing, not
transportability.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

RESULTS = Path(__file__).resolve().parent / "results" / "kaggle_fhir.json"
REPO = Path(__file__).resolve().parents[1]
KAGGLE_CONFIG = REPO / "configs" / "pcos-kaggle-tabular.yaml"
PLACEHOLDER_CODE = "urn:deeppcos:example|pcos"
# The table has no dates: one assessment time for every woman.
WHEN = datetime(2020, 1, 15, 9, 0, tzinfo=UTC)


def _cli(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run(
        [sys.executable, "-m", "deeppcos.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"deeppcos {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return time.perf_counter() - started, done.stdout


def _spec(source: Path, label_code: str) -> dict[str, Any]:
    return {
        "name": f"kaggle-fhir-{source.name}",
        "description": "Kaggle PCOS table written as FHIR R4 by benchmarks/kaggle_to_fhir.py",
        "format": "fhir",
        "label_name": "pcos",
        "fhir": {"path": str(source), "label_codes": [label_code]},
    }


def convert(out: Path, label_code: str) -> dict[str, Any]:
    """Write the FHIR files, the specs and the config; what was written."""
    from deeppcos.data import load_cohort
    from deeppcos.data.fhir_export import exportable, write_bundles, write_ndjson

    kaggle = load_cohort(KAGGLE_CONFIG)
    features, left_out = exportable(kaggle.feature_columns)
    out.mkdir(parents=True, exist_ok=True)
    n_bundles = write_bundles(kaggle.patients, features, out / "bundles", label_code, WHEN)
    counts = write_ndjson(kaggle.patients, features, out / "ndjson", label_code, WHEN)
    for layout in ("bundles", "ndjson"):
        spec = _spec(out / layout, label_code)
        (out / f"{layout}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    config = yaml.safe_load(KAGGLE_CONFIG.read_text())
    config.update(name="kaggle-fhir", cohort=_spec(out / "ndjson", label_code))
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    written = {
        "source": "Kaggle PCOS table (../shared/data/pcos-kaggle-tabular) via the kaggle-pcos "
        "loader",
        "patients": len(kaggle.patients),
        "pcos": int(kaggle.patients["label"].sum()),
        "label_code": label_code,
        "label_code_is_placeholder": label_code == PLACEHOLDER_CODE,
        "features_written": features,
        "features_without_a_verified_loinc_code": left_out,
        "bundles": n_bundles,
        "ndjson_resources": counts,
    }
    (out / "conversion.json").write_text(json.dumps(written, indent=2) + "\n")
    return written


def _findings(path: Path) -> dict[str, int]:
    """Audit findings per severity."""
    findings = json.loads(path.read_text()).get("findings", [])
    counts: dict[str, int] = {}
    for finding in findings:
        severity = str(finding.get("severity"))
        counts[severity] = counts.get(severity, 0) + 1
    return counts


def check(out: Path, kaggle_run: Path | None) -> dict[str, Any]:
    """validate, audit, train and evaluate --cohort from the CLI; their figures."""
    from deeppcos.data import load_cohort

    result: dict[str, Any] = {}
    for layout in ("bundles", "ndjson"):
        spec = out / f"{layout}.yaml"
        seconds, _ = _cli("validate", str(spec))
        cohort = load_cohort(spec)
        result[f"validate_{layout}"] = {
            "seconds": round(seconds, 1),
            "patients": len(cohort.patients),
            "pcos": int(cohort.patients["label"].sum()),
            "features_read": len(cohort.feature_columns),
            "report": cohort.report.counts(),
        }
    seconds, _ = _cli("audit", str(out / "ndjson.yaml"), "--json", str(out / "audit.json"))
    result["audit"] = {"seconds": round(seconds, 1), "findings": _findings(out / "audit.json")}
    seconds, _ = _cli(
        "train", "--config", str(out / "config.yaml"), "--out", str(out / "run"), "--overwrite"
    )
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    result["trained_on_fhir"] = {
        "seconds": round(seconds, 1),
        "out_of_fold": metrics["branches"]["tabular"]["oof"],
    }
    if kaggle_run is None:
        kaggle_run = out / "kaggle-run"
        seconds, _ = _cli(
            "train", "--config", str(KAGGLE_CONFIG), "--out", str(kaggle_run), "--overwrite"
        )
        result["kaggle_run_train_seconds"] = round(seconds, 1)
    report = out / "external"
    seconds, _ = _cli(
        "evaluate", str(kaggle_run), "--cohort", str(out / "ndjson.yaml"), "--out", str(report)
    )
    external = json.loads((report / "metrics.json").read_text())
    result["kaggle_run_on_fhir"] = {
        "note": "the same women as the run's development data, only the features with a LOINC "
        "code: a round-trip check, not transportability",
        "seconds": round(seconds, 1),
        "scored": external.get("scored"),
        "roc_auc": external["at_run_threshold"]["roc_auc"],
        "internal": external.get("internal"),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Write the Kaggle PCOS table as FHIR R4 (per-patient Bundles and an NDJSON "
        "bulk export) with cohort specs and a training config, under --out only."
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for everything written")
    parser.add_argument(
        "--label-code",
        default=PLACEHOLDER_CODE,
        help="'system|code' of the PCOS Condition. Default: a PLACEHOLDER in a local system; "
        "the clinical reference verifies no SNOMED CT or ICD-10 code for PCOS, so none is "
        "assumed. Use the code your records carry.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="also run validate, audit, train and evaluate --cohort; results.json under --out "
        "and benchmarks/results/kaggle_fhir.json",
    )
    parser.add_argument(
        "--kaggle-run",
        type=Path,
        help="with --check: a run trained on configs/pcos-kaggle-tabular.yaml to evaluate on "
        "the FHIR cohort (default: train one under --out)",
    )
    args = parser.parse_args()
    if "|" not in args.label_code:
        parser.error(f"--label-code must be 'system|code', got {args.label_code!r}")
    out = args.out.resolve()
    if out == REPO or REPO in out.parents:
        parser.error(f"--out {out} is inside the repository; write generated data elsewhere")
    result: dict[str, Any] = {"conversion": convert(out, args.label_code)}
    if args.check:
        result.update(check(out, args.kaggle_run))
        text = json.dumps(result, indent=2, default=str) + "\n"
        (out / "results.json").write_text(text)
        # The figures the README quotes (no data: counts, timings and metrics only).
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
