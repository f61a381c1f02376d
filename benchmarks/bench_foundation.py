"""Foundation timings and audit findings on 2 cores, written to benchmarks/results/foundation.json.

    .venv/bin/python benchmarks/bench_foundation.py [--patients 600] [--skip-real]

Measures: synthetic cohort generation (600 patients at 256 px), loading + validating each real
data set, and the leakage audit of each, with the audit's headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from deeppcos.audit.checks import audit_cohort
from deeppcos.data import load_cohort
from deeppcos.data.synthetic import generate_cohort

REPO = Path(__file__).resolve().parents[1]
REAL = {
    "pcos-kaggle-tabular": REPO / "configs" / "pcos-kaggle-tabular.yaml",
    "pcos-kaggle-ultrasound": REPO / "configs" / "pcos-kaggle-ultrasound.yaml",
    "chestxr8": REPO / "configs" / "chestxr8.yaml",
    "chestxr8-any-finding": REPO / "configs" / "chestxr8-any-finding.yaml",
}


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, round(time.perf_counter() - start, 2)


def bench_cohort(spec: Path) -> dict:
    cohort, load_s = timed(load_cohort, spec)
    result, audit_s = timed(audit_cohort, cohort)
    summary = cohort.summary()
    summary.pop("missing_fraction", None)
    return {
        "load_seconds": load_s,
        "audit_seconds": audit_s,
        "summary": summary,
        "worst_severity": result.worst_severity,
        "findings": [
            {"check": f.check, "severity": f.severity, "title": f.title, "figures": f.figures}
            for f in result.findings
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/foundation.json")
    args = parser.parse_args()
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as tmp:
        spec, synth_s = timed(generate_cohort, Path(tmp) / "synthetic", n_patients=args.patients)
        results["synthetic_generate"] = {
            "patients": args.patients,
            "image_size": 256,
            "seconds": synth_s,
        }
        results["synthetic"] = bench_cohort(spec)
    if not args.skip_real:
        for name, path in REAL.items():
            results[name] = bench_cohort(path)
            print(name, results[name]["load_seconds"], results[name]["audit_seconds"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
