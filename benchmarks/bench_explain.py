"""Explanation speed, written to benchmarks/results/explain.json.

    .venv/bin/python benchmarks/bench_explain.py [--run RUN] [--patients 240] [--repeats 21]

With the models loaded (the predictor and the cohort in memory), on 2 threads (TensorFlow
intra-op 2, XGBoost 2):

- ``patient``: one patient's full explanation, ``explain_patient(..., max_images=1)``: the
  prediction (both branches, fusion, calibration, severity), tabular TreeSHAP, the exact fusion
  attribution, the criteria checklist and Grad-CAM of one image drawn back at its original
  geometry — median over ``--repeats`` patients with labs and images (target < 300 ms); its
  parts timed alone; rendering the HTML report separately;
- ``tabular_shap``: TreeSHAP of 10,000 patients (rows drawn with replacement from the cohort's
  design matrix, seeded: TreeSHAP's cost depends on the trees, not on the values), through
  XGBoost's ``pred_contribs`` (target ≥ 1,000 patients/s), against ``shap.TreeExplainer`` in the
  same run — both its default path (which hands XGBoost models to the same XGBoost routine) and
  shap's own C++ TreeSHAP on its parse of the model — with the largest difference in values.

Without ``--run`` it trains the demo configuration (synthetic cohort, compact CNN at 96 px,
tabular defaults) at ``--patients`` patients into a temporary folder: explanation speed
depends on the models, not on the cohort's size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
THREADS = 2
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "explain.json"
SHAP_ROWS = 10_000


def _tensorflow_threads() -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)


def _median_ms(times: list[float]) -> dict[str, Any]:
    ms = sorted(1000 * t for t in times)
    return {
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
        "min_ms": round(ms[0], 1),
        "n": len(ms),
    }


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _train(folder: Path, patients: int) -> tuple[Path, float]:
    from deeppcos.pipeline.training import demo_config, train

    config = demo_config(folder, patients=patients, seed=0)
    seconds, run = _time(lambda: train(config, folder / "run", overwrite=True))
    return run, seconds


def _patients(predictor: Any, cohort: Any) -> list[str]:
    """Patients with labs and at least one image, in a fixed order."""
    counts = cohort.images["patient_id"].astype(str).value_counts()
    labs = predictor.branches["tabular"].predict_proba(cohort).dropna().index
    return sorted(set(counts.index) & {str(i) for i in labs})


def bench_patient(predictor: Any, cohort: Any, repeats: int) -> dict[str, Any]:
    from deeppcos.explain.patient import explain_patient
    from deeppcos.explain.report import render_html
    from deeppcos.explain.saliency import patient_images, saliency_for_images
    from deeppcos.explain.tabular import tabular_shap

    ids = _patients(predictor, cohort)
    branch = predictor.branches["tabular"]
    image = predictor.branches["image"]
    explain_patient(predictor, ids[-1], cohort, max_images=1)  # warm-up: tracing, caches
    full, shap_one, cam_one, predict_one, html = [], [], [], [], []
    for patient in [ids[k % len(ids)] for k in range(repeats)]:
        seconds, explanation = _time(
            lambda p=patient: explain_patient(predictor, p, cohort, max_images=1)
        )
        full.append(seconds)
        shap_one.append(
            _time(lambda p=patient: tabular_shap(branch, branch.design_matrix(cohort, [p])))[0]
        )
        rows = patient_images(cohort, patient).iloc[:1]
        cam_one.append(_time(lambda r=rows: saliency_for_images(image, r, "gradcam"))[0])
        predict_one.append(_time(lambda p=patient: predictor.predict(cohort, [p]))[0])
        html.append(_time(lambda e=explanation: render_html(e))[0])
    return {
        "what": "explain_patient(max_images=1): prediction, tabular SHAP, fusion attribution, "
        "criteria, Grad-CAM of one image at its original geometry",
        "full_explanation": _median_ms(full),
        "target_ms": 300,
        "meets_target": statistics.median(full) < 0.3,
        "parts_alone": {
            "predict": _median_ms(predict_one),
            "tabular_shap_one_patient": _median_ms(shap_one),
            "gradcam_one_image": _median_ms(cam_one),
        },
        "render_html": _median_ms(html),
        "image_size": image.params.image_size,
        "backbone": image.params.backbone,
    }


def bench_tabular(predictor: Any, cohort: Any) -> dict[str, Any]:
    import shap

    from deeppcos.explain.tabular import tabular_shap

    branch = predictor.branches["tabular"]
    design = branch.design_matrix(cohort)
    rows = design.sample(SHAP_ROWS, replace=True, random_state=0)
    tabular_shap(branch, rows.iloc[:100], n_jobs=THREADS)  # warm-up
    times, ours = [], None
    for _ in range(5):
        seconds, ours = _time(lambda: tabular_shap(branch, rows, n_jobs=THREADS))
        times.append(seconds)
    branch.booster_.set_param({"nthread": THREADS})  # shap calls the booster as it is
    explainer = shap.TreeExplainer(branch.booster_)
    default_s, theirs = _time(lambda: explainer(rows))
    internal = shap.TreeExplainer(branch.booster_)
    internal.model.model_type = "internal"  # shap's own C++ TreeSHAP, not XGBoost's
    matrix = rows.to_numpy(dtype="float64")
    internal_s, independent = _time(lambda: internal.shap_values(matrix, check_additivity=False))
    median = statistics.median(times)
    return {
        "rows": SHAP_ROWS,
        "features": len(branch.feature_names_),
        "trees": int(branch.n_trees_),
        "max_depth": branch.params.max_depth,
        "pred_contribs": {
            "median_s": round(median, 4),
            "patients_per_s": round(SHAP_ROWS / median),
            "runs_s": [round(t, 4) for t in times],
        },
        "target_patients_per_s": 1000,
        "meets_target": SHAP_ROWS / median >= 1000,
        "shap_tree_explainer": {
            "seconds": round(default_s, 4),
            "patients_per_s": round(SHAP_ROWS / default_s),
            "max_abs_diff": float(np.abs(theirs.values - ours.values).max()),
            "note": "shap hands XGBoost boosters to XGBoost's own pred_contribs",
        },
        "shap_own_tree_shap": {
            "seconds": round(internal_s, 4),
            "patients_per_s": round(SHAP_ROWS / internal_s),
            "max_abs_diff": float(np.abs(independent - ours.values).max()),
            "note": "shap's C++ TreeSHAP on shap's parse of the model (one thread)",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="an existing run folder (default: train one)")
    parser.add_argument("--patients", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    _tensorflow_threads()
    from deeppcos.inference.predictor import load_run

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="deeppcos-bench-explain-") as tmp:
        training_s = None
        run = args.run
        if run is None:
            run, training_s = _train(Path(tmp), args.patients)
        load_s, predictor = _time(lambda: load_run(run))
        cohort = predictor.cohort()
        result = {
            "machine": {
                "cpus": os.cpu_count(),
                "threads": THREADS,
                "python": platform.python_version(),
                "load_average_before": [round(x, 2) for x in load_before],
            },
            "run": str(args.run) if args.run else f"demo config, {args.patients} patients",
            "training_s": None if training_s is None else round(training_s, 1),
            "load_run_s": round(load_s, 2),
            "patient": bench_patient(predictor, cohort, args.repeats),
            "tabular_shap": bench_tabular(predictor, cohort),
        }
        result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
