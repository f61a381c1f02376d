"""Wall time and out-of-fold quality of ``deeppcos train`` on 2 cores, written to
benchmarks/results/training.json.

    .venv/bin/python benchmarks/bench_training.py [--configs synthetic chestxr8 ...]

For each config: wall seconds of the whole run (cohort generation excluded for the synthetic
cohort: it is generated first), each branch's out-of-fold ROC AUC with its 95% patient
bootstrap interval, each fusion method's out-of-fold ROC AUC and the one kept, the severity
head's quadratic weighted kappa and macro F1, and the calibrated fusion on the locked test part
(``deeppcos evaluate``). The chest X-ray config compares image + age, sex and view (fusion)
with the image branch alone in one run; the Kaggle table gives ECE before and after calibration.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd

from deeppcos.config import load_config
from deeppcos.pipeline.evaluate import evaluate_run
from deeppcos.pipeline.training import cohort_for, train
from deeppcos.runs.reader import Run
from deeppcos.stats import paired_auc_difference

REPO = Path(__file__).resolve().parents[1]


def bench(name: str, work: Path) -> dict:
    config = load_config(REPO / "configs" / f"{name}.yaml")
    cohort_for(config)  # generate a synthetic cohort outside the timed part
    start = time.perf_counter()
    run = train(config, work / name, overwrite=True)
    seconds = round(time.perf_counter() - start, 1)
    metrics = Run(run).metrics().to_json()
    test = evaluate_run(run)
    return {
        "fusion_vs_branches": _paired(run),
        "locked_test": {
            "patients": test["scored"],
            "threshold": test["threshold"],
            **{k: test["fusion"][k] for k in ("roc_auc", "sensitivity", "specificity", "ece")},
            "ece_before_after_calibration": test["calibration_ece"],
            "branches_roc_auc": {
                name: [values["roc_auc"], values["roc_auc_ci"]]
                for name, values in test["branches"].items()
            },
        },
        "fusion_oof": {key: metrics["fusion"]["oof"][key] for key in ("roc_auc", "roc_auc_ci", "n")}
        if "fusion" in metrics
        else None,
        "fusion_methods_oof": {
            method: [entry["oof_uncalibrated"]["roc_auc"], entry["oof_uncalibrated"]["roc_auc_ci"]]
            for method, entry in metrics.get("fusion", {}).get("methods", {}).items()
        },
        "fusion_kept": metrics.get("fusion", {}).get("method"),
        "routes": {
            route: {
                "scored_by": entry["scored_by"],
                "patients": entry["patients"],
                "oof_roc_auc": (entry.get("oof") or {}).get("roc_auc"),
            }
            for route, entry in metrics.get("fusion", {}).get("routes", {}).items()
        },
        "missing_modalities": metrics.get("fusion", {}).get("missing_modalities"),
        "severity": _severity(metrics.get("severity"), test.get("severity")),
        "seconds": seconds,
        "development_patients": metrics["development_patients"],
        "branches": {
            branch: {key: values["oof"][key] for key in ("roc_auc", "roc_auc_ci", "n")}
            for branch, values in metrics["branches"].items()
        },
    }


def _paired(run: Path) -> dict:
    """Fusion minus each branch, ROC AUC, on the patients both scored: out of fold (calibrated
    fusion vs the branch's out-of-fold output) and on the locked test part; paired bootstrap."""
    oof = pd.read_csv(run / "oof_predictions.csv")
    test = pd.read_csv(run / "evaluation" / "test_predictions.csv")
    out: dict = {}
    for column in [c for c in oof.columns if c in ("p_tabular", "p_image")]:
        name = column.removeprefix("p_")
        out[name] = {
            "oof": paired_auc_difference(oof["label"], oof["risk"], oof[column]),
            "locked_test": paired_auc_difference(test["label"], test["risk"], test[column]),
        }
    return out


def _severity(trained: dict | None, tested: dict | None) -> dict | None:
    if not trained or "oof" not in trained:
        return None
    out = {
        "source": trained["source"],
        "guideline": trained.get("guideline"),
        "label_grade_conflicts": trained.get("label_grade_conflicts"),
    }
    tested = tested or {}
    parts = (
        ("oof", trained["oof"], trained.get("oof_given_pcos", {}), trained),
        ("locked_test", tested, tested.get("given_pcos", {}), tested),
    )
    for part, scores, given, whole in parts:
        if "quadratic_kappa" in scores:
            out[part] = {
                "n": scores["n"],
                "quadratic_kappa": scores["quadratic_kappa"],
                "macro_f1": scores["macro_f1"],
                "confusion": scores.get("confusion"),
                "given_pcos": {k: given.get(k) for k in ("n", "quadratic_kappa", "macro_f1")},
                "presence_agreement": whole.get("presence_agreement"),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--configs", nargs="+", default=["synthetic", "chestxr8", "pcos-kaggle-tabular"]
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/training.json")
    args = parser.parse_args()
    results: dict = {"cpus": os.cpu_count()}
    if args.out.is_file():
        results.update(json.loads(args.out.read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            results[name] = bench(name, Path(tmp))
            print(name, json.dumps(results[name]), flush=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")  # after each config
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
