"""The tabular branch against two baselines on the real Kaggle PCOS table (541 women, 177 PCOS).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tabular_kaggle.py [--repeats 5] [--boot N]

Protocol
--------
* **Folds**: ``repeats`` × 5-fold, stratified by label, one row = one patient
  (``make_splits(..., test_fraction=0.0, seed=r)`` for r = 0 … repeats−1). Every model sees the
  same folds, so the comparisons are paired.
* **Models**, each on the same input columns (the cohort's features plus the derived ones),
  once WITH and once WITHOUT the ultrasound-derived columns:
  - ``tabular_branch``: ``TabularBranch`` with default parameters; early stopping (on
    validation log-loss) on a 20% stratified part carved from the *training* fold
    (``inner_validation_split``), never the test fold;
  - ``tabular_branch_fixed_rounds``: the same defaults trained for the fixed 300 rounds on the
    whole training fold (no early stopping), for reference;
  - ``tabular_branch_stop_on_auc``: as ``tabular_branch`` but early stopping on validation AUC
    (the first default; see the study below), for reference;
  - ``logistic_regression``: median imputation + missing-value indicators + standardisation,
    ``class_weight="balanced"``;
  - ``hist_gradient_boosting``: scikit-learn defaults, ``class_weight="balanced"``.
* **Figures** (ROC AUC):
  - ``auc``: mean over repeats of the AUC of the pooled out-of-fold predictions (all 541 patients
    scored once per repeat);
  - ``bootstrap_ci95``: patient bootstrap of the pooled out-of-fold predictions, a percentile
    interval per repeat, bounds averaged over repeats — the sampling uncertainty (which women);
  - ``repeat_sd`` and ``repeat_range``: spread of the pooled AUC over repeats — the uncertainty
    due to fold assignment only (much narrower; not a confidence interval for new patients);
  - ``fold_auc_mean``: mean of the per-fold AUCs (what many papers report);
  - ``versus_<baseline>``: paired difference tabular_branch − baseline on the same bootstrap
    resamples; mean difference, averaged percentile interval and the share of resamples > 0.
* **Stopping study** (``early_stopping_metric_study``): how the default early-stopping metric
  was chosen, by cross-validation inside each outer *training* fold only (see
  :func:`stopping_study`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/sklearn/xgboost start threads

import numpy as np
import pandas as pd
import sklearn
import xgboost
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from deeppcos.data import Cohort, load_cohort, make_splits
from deeppcos.stats import weighted_auc
from deeppcos.tabular import (
    TabularBranch,
    TabularParams,
    derive_features,
    inner_validation_split,
    select_features,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "pcos-kaggle-tabular.yaml"
OUT = REPO / "benchmarks" / "results" / "tabular_kaggle.json"
N_FOLDS = 5
SETTINGS = {"all_features": False, "no_ultrasound": True}  # name -> exclude_ultrasound
REFERENCE = "tabular_branch"
# (cohort, training ids, test ids, exclude_ultrasound, seed) -> P(PCOS) for the test ids
FitPredict = Callable[[Cohort, list[str], list[str], bool, int], np.ndarray]


def _branch(fixed_rounds: bool = False, **update: object) -> FitPredict:
    """The tabular branch with default parameters (``update`` overrides some, for the study)."""

    def fit_predict(cohort: Cohort, train: list[str], test: list[str], exclude: bool, seed: int):
        params = TabularParams(exclude_ultrasound=exclude, **update)
        model = TabularBranch(params, seed=seed)
        if fixed_rounds:
            model.fit(cohort, train)
        else:
            inner_train, inner_val = inner_validation_split(cohort, train, fraction=0.2, seed=seed)
            model.fit(cohort, inner_train, inner_val)
        return model.predict_proba(cohort, test).to_numpy()

    return fit_predict


def _design(cohort: Cohort, exclude: bool) -> pd.DataFrame:
    """The inputs the branch sees, for the sklearn baselines (same columns, same derivations)."""
    columns = select_features(cohort.feature_columns, exclude_ultrasound=exclude)
    return derive_features(cohort.patients.set_index("patient_id"))[columns]


def _sklearn(make_model: Callable[[int], object]) -> FitPredict:
    def fit_predict(cohort: Cohort, train: list[str], test: list[str], exclude: bool, seed: int):
        x = _design(cohort, exclude)
        y = cohort.patients.set_index("patient_id")["label"].astype(int)
        model = make_model(seed)
        model.fit(x.loc[train], y.loc[train])
        return model.predict_proba(x.loc[test])[:, 1]

    return fit_predict


def logistic(seed: int):
    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True),
        StandardScaler(),
        LogisticRegression(class_weight="balanced", max_iter=5000),
    )


def hist_gb(seed: int):
    return HistGradientBoostingClassifier(class_weight="balanced", random_state=seed)


MODELS: dict[str, FitPredict] = {
    "tabular_branch": _branch(),
    "tabular_branch_fixed_rounds": _branch(fixed_rounds=True),
    "tabular_branch_stop_on_auc": _branch(early_stopping_metric="auc"),
    "logistic_regression": _sklearn(logistic),
    "hist_gradient_boosting": _sklearn(hist_gb),
}
BASELINES = ("logistic_regression", "hist_gradient_boosting")


def out_of_fold(cohort: Cohort, repeats: int, exclude: bool) -> dict[str, object]:
    """Pooled out-of-fold predictions per model and repeat, per-fold AUCs and fit times."""
    labels = cohort.patients.set_index("patient_id")["label"].astype(int)
    oof = {name: [] for name in MODELS}
    fold_aucs: dict[str, list[float]] = {name: [] for name in MODELS}
    seconds = dict.fromkeys(MODELS, 0.0)
    for repeat in range(repeats):
        split = make_splits(cohort.patients, n_folds=N_FOLDS, test_fraction=0.0, seed=repeat)
        pooled = {name: pd.Series(np.nan, index=labels.index) for name in MODELS}
        for train, test in split.folds():
            for name, fit_predict in MODELS.items():
                start = time.perf_counter()
                scores = fit_predict(cohort, train, test, exclude, repeat)
                seconds[name] += time.perf_counter() - start
                pooled[name].loc[test] = scores
                fold_aucs[name].append(weighted_auc(labels.loc[test].to_numpy(), scores))
        for name in MODELS:
            assert pooled[name].notna().all(), f"{name}: a patient was never scored"
            oof[name].append(pooled[name].to_numpy())
        print(f"  repeat {repeat + 1}/{repeats} done", flush=True)
    return {"labels": labels.to_numpy(), "oof": oof, "fold_aucs": fold_aucs, "seconds": seconds}


def summarise(run: dict, n_boot: int, seed: int) -> dict[str, dict]:
    """AUC figures per model, and paired differences against the tabular branch."""
    y = run["labels"]
    names = list(MODELS)
    repeats = len(run["oof"][REFERENCE])
    rng = np.random.default_rng(seed)
    pooled = {name: [weighted_auc(y, s) for s in run["oof"][name]] for name in names}
    boot = {name: np.empty((repeats, n_boot)) for name in names}
    for r in range(repeats):
        for b in range(n_boot):
            # One resample of the women, shared by every model: the differences are paired.
            counts = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype(float)
            for name in names:
                boot[name][r, b] = weighted_auc(y, run["oof"][name][r], counts)
    out: dict[str, dict] = {}
    for name in names:
        aucs = np.array(pooled[name])
        entry = {
            "auc": round(float(aucs.mean()), 4),
            "bootstrap_ci95": _mean_interval(boot[name]),
            "repeat_sd": round(float(aucs.std(ddof=1)), 4) if repeats > 1 else 0.0,
            "repeat_range": [round(float(aucs.min()), 4), round(float(aucs.max()), 4)],
            "fold_auc_mean": round(float(np.mean(run["fold_aucs"][name])), 4),
            "fit_seconds_total": round(run["seconds"][name], 2),
        }
        if name != REFERENCE:
            delta = boot[REFERENCE] - boot[name]
            entry[f"{REFERENCE}_minus_this"] = {
                "mean": round(float((np.array(pooled[REFERENCE]) - aucs).mean()), 4),
                "bootstrap_ci95": _mean_interval(delta),
                "share_of_resamples_above_0": round(float((delta > 0).mean()), 3),
            }
        out[name] = entry
    return out


def _mean_interval(values: np.ndarray) -> list[float]:
    """Percentile 95% interval per repeat (rows), bounds averaged over repeats."""
    low = np.nanpercentile(values, 2.5, axis=1).mean()
    high = np.nanpercentile(values, 97.5, axis=1).mean()
    return [round(float(low), 4), round(float(high), 4)]


def stopping_study(cohort: Cohort, exclude: bool, seed: int = 0) -> dict[str, dict]:
    """Which validation metric early stopping should watch, judged inside training folds only.

    For each outer training fold (outer test folds are never touched): 5-fold cross-validation on
    that training fold, the branch protocol within (early stopping on 20% of the inner training
    part), pooled inner out-of-fold AUC. This is how the default ``early_stopping_metric`` was
    chosen; the outer results above were not used for it.
    """
    labels = cohort.patients.set_index("patient_id")["label"].astype(int)
    outer = make_splits(cohort.patients, n_folds=N_FOLDS, test_fraction=0.0, seed=seed)
    out: dict[str, dict] = {}
    for metric in ("logloss", "auc"):
        params = TabularParams(exclude_ultrasound=exclude, early_stopping_metric=metric)
        aucs, trees = [], []
        for k, (train, _) in enumerate(outer.folds()):
            inside = cohort.patients[cohort.patients["patient_id"].isin(train)]
            inner = make_splits(inside, n_folds=N_FOLDS, test_fraction=0.0, seed=100 + k)
            pooled = pd.Series(np.nan, index=pd.Index(train))
            for inner_train, inner_test in inner.folds():
                fit_ids, val_ids = inner_validation_split(cohort, inner_train, seed=seed)
                model = TabularBranch(params, seed=seed).fit(cohort, fit_ids, val_ids)
                pooled.loc[inner_test] = model.predict_proba(cohort, inner_test).to_numpy()
                trees.append(model.n_trees_)
            aucs.append(weighted_auc(labels.loc[pooled.index].to_numpy(), pooled.to_numpy()))
        out[f"stop_on_{metric}"] = {
            "inner_cv_auc_mean": round(float(np.mean(aucs)), 4),
            "inner_cv_auc_per_outer_fold": [round(float(a), 4) for a in aucs],
            "trees_kept_min_median_max": [int(min(trees)), int(np.median(trees)), max(trees)],
        }
    return out


def print_table(results: dict[str, dict]) -> None:
    header = f"{'model':30s} {'setting':14s} {'AUC':>6s}  {'95% CI (bootstrap)':>18s}  {'sd':>6s}"
    print(header)
    for setting, models in results.items():
        for name, entry in models.items():
            low, high = entry["bootstrap_ci95"]
            print(
                f"{name:30s} {setting:14s} {entry['auc']:6.3f}  "
                f"{low:8.3f} – {high:5.3f}  {entry['repeat_sd']:6.4f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--skip-study", action="store_true", help="skip the stopping study")
    args = parser.parse_args()
    start = time.perf_counter()
    cohort = load_cohort(CONFIG)
    results: dict[str, dict] = {}
    study: dict[str, dict] = {}
    for setting, exclude in SETTINGS.items():
        print(f"{setting}:", flush=True)
        run = out_of_fold(cohort, args.repeats, exclude)
        results[setting] = summarise(run, args.boot, seed=0)
        if not args.skip_study:
            study[setting] = stopping_study(cohort, exclude)
            print(f"  stopping study (inner CV): {study[setting]}", flush=True)
    print_table(results)
    report = {
        "data": {"config": str(CONFIG.relative_to(REPO)), **_counts(cohort)},
        "protocol": {
            "repeats": args.repeats,
            "folds": N_FOLDS,
            "split": "make_splits(test_fraction=0.0, seed=repeat): label-stratified, per patient",
            "bootstrap_resamples_per_repeat": args.boot,
            "early_stopping": "tabular_branch: 20% of the training fold (inner_validation_split)",
            "figures": "see the module docstring of benchmarks/bench_tabular_kaggle.py",
        },
        "defaults": TabularParams().model_dump(),
        "features": {
            setting: select_features(cohort.feature_columns, exclude_ultrasound=exclude)
            for setting, exclude in SETTINGS.items()
        },
        "results": results,
        "early_stopping_metric_study": study,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "xgboost": xgboost.__version__,
            "scikit_learn": sklearn.__version__,
            "threads": 1,
        },
        "seconds_total": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} in {report['seconds_total']} s")


def _counts(cohort: Cohort) -> dict[str, int]:
    labels = cohort.patients["label"]
    return {"patients": len(labels), "positives": int((labels == 1).sum())}


if __name__ == "__main__":
    main()
