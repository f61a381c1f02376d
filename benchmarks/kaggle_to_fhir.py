"""The Kaggle PCOS table as FHIR R4 — a folder of per-patient Bundles and an NDJSON bulk
export — and that FHIR read back as a cohort: validate, audit, train, and the Kaggle table's own
run validated on it. Results in benchmarks/results/kaggle_fhir.json.

    .venv/bin/python benchmarks/kaggle_to_fhir.py [--out /tmp/kaggle-fhir]
        [--label-code 'urn:deeppcos:example|pcos']

The table is read through ``configs/pcos-kaggle-tabular.yaml`` (every cleaning the loader does)
from ../shared/data, and written under ``--out`` only. Each woman becomes a Patient, each value
of a feature with a LOINC code the clinical reference verified an Observation in the catalog's
UCUM unit, and a PCOS diagnosis a Condition coded ``--label-code``. The reference verifies no
SNOMED CT or ICD-10 code for PCOS, so none is assumed: the default is a placeholder in a local
system, and a site uses the code its records carry (the spec's ``fhir.label_codes``).

The same women are in the Kaggle run's development data: its "external" figures on this cohort
measure the FHIR round trip (the same predictions), not transportability — the contamination is
said in the results.
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

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "kaggle_fhir.json"
WHEN = datetime(
    2020, 1, 15, 9, 0, tzinfo=UTC
)  # the table has no dates: one assessment time for all


def _cli(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run(
        [sys.executable, "-m", "deeppcos.cli", *args],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, done.stdout


def _spec(path: Path, source: Path, label_code: str) -> Path:
    spec = {
        "name": f"kaggle-fhir-{source.name}",
        "description": "Kaggle PCOS table written as FHIR R4 by benchmarks/kaggle_to_fhir.py",
        "format": "fhir",
        "label_name": "pcos",
        "fhir": {"path": str(source), "label_codes": [label_code]},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/kaggle-fhir"))
    parser.add_argument(
        "--label-code",
        default="urn:deeppcos:example|pcos",
        help="system|code of the PCOS Condition (default: a placeholder local code; no "
        "SNOMED/ICD code is assumed)",
    )
    args = parser.parse_args()
    from deeppcos.data import load_cohort
    from deeppcos.data.fhir_export import exportable, write_bundles, write_ndjson

    kaggle = load_cohort(REPO / "configs" / "pcos-kaggle-tabular.yaml")
    features, left_out = exportable(kaggle.feature_columns)
    out = args.out
    n_bundles = write_bundles(kaggle.patients, features, out / "bundles", args.label_code, WHEN)
    counts = write_ndjson(kaggle.patients, features, out / "ndjson", args.label_code, WHEN)
    result: dict = {
        "source": "Kaggle PCOS table (../shared/data/pcos-kaggle-tabular) via the kaggle-pcos "
        "loader",
        "label_code": args.label_code,
        "features_written": len(features),
        "features_without_a_verified_loinc_code": left_out,
        "bundles": n_bundles,
        "ndjson_resources": counts,
    }
    for layout in ("bundles", "ndjson"):
        spec = _spec(out / f"{layout}.yaml", out / layout, args.label_code)
        cohort = load_cohort(spec)
        seconds, _ = _cli("validate", str(spec))
        result[layout] = {
            "patients": len(cohort.patients),
            "pcos": int(cohort.patients["label"].sum()),
            "features_read": len(cohort.feature_columns),
            "report": cohort.report.counts(),
            "validate_seconds": round(seconds, 1),
        }
    ndjson_spec = out / "ndjson.yaml"
    result["audit_seconds"] = round(_cli("audit", str(ndjson_spec))[0], 1)
    base = yaml.safe_load((REPO / "configs" / "pcos-kaggle-tabular.yaml").read_text())
    base.pop("cohort")
    config = {**base, "name": "kaggle-fhir", "cohort_spec": str(ndjson_spec)}
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    train_s, _ = _cli(
        "train", "--config", str(out / "config.yaml"), "--out", str(out / "run"), "--overwrite"
    )
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    result["trained_on_fhir"] = {
        "seconds": round(train_s, 1),
        "out_of_fold": metrics["branches"]["tabular"]["oof"],
    }
    kaggle_run = out / "kaggle-run"
    _cli(
        "train",
        "--config",
        str(REPO / "configs" / "pcos-kaggle-tabular.yaml"),
        "--out",
        str(kaggle_run),
        "--overwrite",
    )
    report_dir = out / "external"
    _cli("evaluate", str(kaggle_run), "--cohort", str(ndjson_spec), "--out", str(report_dir))
    external = json.loads((report_dir / "metrics.json").read_text())
    result["kaggle_run_on_fhir"] = {
        "note": "the same women as the run's development data: a round-trip check",
        "scored": external.get("scored"),
        "roc_auc": external["at_run_threshold"]["roc_auc"],
        "internal": external.get("internal"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
