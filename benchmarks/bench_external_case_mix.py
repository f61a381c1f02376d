"""External validation on a cohort of a different case mix, built from public data: the Kaggle
PCOS table split by age into two cohorts with no woman in both, written to
benchmarks/results/external_case_mix.json.

    .venv/bin/python benchmarks/bench_external_case_mix.py [--out /tmp/case-mix] [--age 31]

1. **The cohorts.** The real Kaggle table (541 women, read in place from ../shared/data through
   ``configs/pcos-kaggle-tabular.yaml``, with every cleaning the loader does) is written as two
   ``tables`` cohorts under ``--out``: *younger*, aged below ``--age``, to develop a model on,
   and *older*, aged ``--age`` or more, as the external cohort. This is a non-random
   (by-characteristic) split in the sense of TRIPOD's internal–external validation: the two
   hold different women, and the second differs in age, and with it in AMH, cycle pattern and
   PCOS prevalence, the way another clinic's patients would. It is not another site: the same
   hospitals, the same assays and the same labelling hands.
2. **The model** is the Kaggle config's (tabular branch, late fusion, severity from the
   Rotterdam labeller), trained with ``deeppcos train`` on the younger cohort.
3. **External validation**: ``deeppcos evaluate RUN --cohort older.yaml``; the JSON keeps the
   internal and external figures side by side (discrimination, calibration in the large and
   slope, sensitivity and specificity at the run's threshold, the largest case-mix shifts).

Nothing is written into the repository except the results JSON; the data stay in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "external_case_mix.json"


def _write_cohort(patients, folder: Path, name: str, description: str, categories) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table = patients.rename(columns={"label": "pcos"})
    table.to_csv(folder / "patients.csv", index=False)
    spec = {
        "name": name,
        "description": description,
        "format": "tables",
        "label_name": "pcos",
        "patients": {
            "path": "patients.csv",
            "label_column": "pcos",
            "categorical": categories,
        },
    }
    path = folder / "cohort.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _config(spec: Path, out: Path) -> Path:
    base = yaml.safe_load((REPO / "configs" / "pcos-kaggle-tabular.yaml").read_text())
    base.pop("cohort")
    config = {"name": "kaggle-younger", **base, "cohort_spec": str(spec)}
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run(*args: str) -> float:
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    subprocess.run([sys.executable, "-m", "deeppcos.cli", *args], check=True, env=env)
    return time.perf_counter() - started


def _largest_shifts(case_mix: dict, n: int = 5) -> list[dict]:
    """The features whose standardised difference is largest in size."""
    rows = [r for r in case_mix.get("table", []) if r.get("standardised_difference") is not None]
    rows = [r for r in rows if r["standardised_difference"] == r["standardised_difference"]]
    rows.sort(key=lambda r: -abs(r["standardised_difference"]))
    return [
        {"feature": r["feature"], "standardised_difference": r["standardised_difference"]}
        for r in rows[:n]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/deeppcos-case-mix"))
    parser.add_argument("--age", type=float, default=31.0, help="the older cohort's lowest age")
    args = parser.parse_args()
    from deeppcos.data import load_cohort

    kaggle = load_cohort(REPO / "configs" / "pcos-kaggle-tabular.yaml")
    patients = kaggle.patients.drop(columns=[c for c in ("severity",) if c in kaggle.patients])
    categories = {c: list(patients[c].cat.categories) for c in kaggle.categorical_columns}
    age = patients["age_years"]
    younger = patients[age < args.age]
    older = patients[age >= args.age]
    out = args.out
    young_spec = _write_cohort(
        younger,
        out / "younger",
        "kaggle-younger",
        f"Kaggle PCOS table, age < {args.age:g}",
        categories,
    )
    old_spec = _write_cohort(
        older, out / "older", "kaggle-older", f"Kaggle PCOS table, age ≥ {args.age:g}", categories
    )
    run = out / "run"
    train_s = _run(
        "train", "--config", str(_config(young_spec, out)), "--out", str(run), "--overwrite"
    )
    report_dir = out / "external"
    eval_s = _run("evaluate", str(run), "--cohort", str(old_spec), "--out", str(report_dir))
    report = json.loads((report_dir / "metrics.json").read_text())
    result = {
        "data": "Kaggle PCOS table (../shared/data/pcos-kaggle-tabular), split by age",
        "age_split": args.age,
        "development": {
            "patients": len(younger),
            "pcos": int(younger["label"].sum()),
            "mean_age": round(float(younger["age_years"].mean()), 1),
        },
        "external_cohort": {
            "patients": len(older),
            "pcos": int(older["label"].sum()),
            "mean_age": round(float(older["age_years"].mean()), 1),
        },
        "seconds": {"train": round(train_s, 1), "evaluate": round(eval_s, 1)},
        "internal": report.get("internal"),
        "external": {
            k: report.get(k)
            for k in (
                "scored",
                "at_run_threshold",
                "calibration",
                "threshold_for_target_sensitivity",
                "contamination",
            )
        },
        "largest_case_mix_shifts": _largest_shifts(report.get("case_mix") or {}),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")
    shown = ("development", "external_cohort", "seconds", "largest_case_mix_shifts")
    print(json.dumps({k: result[k] for k in shown}, indent=2))
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
