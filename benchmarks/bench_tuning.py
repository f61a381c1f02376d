"""Tuning benchmark: does the tuner beat the default XGBoost on the real Kaggle table (541 women,
177 PCOS) without fooling itself, what does Optuna cost per trial, and do 2 workers help?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tuning.py [--trials 60] [--quick]
        [--parts nested,ceiling,workers,overhead,round_reports] [--outer-seeds 0,1]
        [--ceiling-candidates 100] [--round-trials 5]

Writes ``benchmarks/results/tuning.json`` (``--parts`` re-runs some parts and keeps the others).
With 60 trials and two outer assignments, about 45 minutes on 2 otherwise idle cores (nested
33, ceiling 9); the timings (parts 3 and 4) mean little on a busy machine, which is why the load
average at the end is recorded.

1. **Nested evaluation** (``nested``). Outer: patient-level, label-stratified 5-fold over all
   541 women (``make_splits(test_fraction=0, seed=S)``), for each outer seed ``S`` (two
   assignments by default: 10 outer folds, so "ahead on k of n outer folds" has some weight).
   Inside each outer TRAINING part only, a
   study is run exactly as ``deeppcos tune --target tabular`` runs it (``configs/tuning.yaml``
   defaults: TPE, repeated 2 × 5 grouped folds, median pruning, the default enqueued first, the
   keep-the-default rule on 2 × 5 fresh confirmation folds). Then one model per arm is trained
   on the outer training part exactly as ``deeppcos train`` trains its final booster (the
   config's 5 folds cross-validated, then a refit on every training patient for the median
   rounds early stopping kept, or the fixed rounds of an arm that does not stop early) and
   predicts the outer test fold, which no tuning step saw. Arms:
   - ``default``: the config's parameters — the branch defaults (depth 3, learning rate 0.05,
     300 rounds) with exactly 300 rounds on every training patient (the config sets
     ``early_stopping_rounds: null``);
   - ``fixed_rounds`` and ``early_stopping``: the same with either stopping rule, whatever the
     config says — ``fixed_rounds`` is the "shallow default XGBoost" of issue 5's outside
     measurement; ``early_stopping`` (the branch's own default) stops on log-loss on a fifth of
     each training fold, then refits on all training patients for the median rounds kept;
   - ``tuned``: what the tuner returns (the best trial only when its gain beats the noise);
   - ``best_trial``: the same study's best trial, taken without the rule;
   - ``naive``: a plain search as described in issue 5 — TPE, 4-fold inner CV without repeats,
     a wide space, no default trial, the best trial taken;
   - ``top5_mean``: the mean probability of the models of the study's 5 best trials — the usual
     remedy when one best trial is a lucky draw;
   - ``bagged_default``: the default trained with 5 model seeds (its row and column subsampling
     differ), probabilities averaged — how much of any gap is seed noise.
   Figures, per outer assignment: pooled out-of-fold ROC AUC per arm and the paired difference
   to ``default`` with a 95% patient bootstrap interval (the same resamples for both arms);
   over all outer folds: the mean per-fold AUC (pooling also ranks patients scored by different
   models against each other, a single deployed model does not), the mean per-fold gain over
   ``default`` and on how many folds each arm was ahead of it or behind; per-outer-fold AUCs,
   the decisions and their reasons.
2. **The ceiling** (``ceiling``): could any tuner be ahead here? The default and
   ``--ceiling-candidates`` random points of the tabular space (100 by default) are each trained
   on every outer training part of part 1 as ``deeppcos train`` trains, and scored on the outer
   test fold. The candidate with the best mean per-fold gain over the default is chosen by the
   test folds themselves — an oracle no tuner has, so its gain is an upper bound on what a search
   of this space can find, and flattered by the choice. Less flattered: the candidate best on one
   outer assignment's folds, scored on the other's (the same women, cut differently). Also the
   share of candidates ahead on average, and quantiles of their mean gains.
3. **Optuna overhead per trial** (``overhead``), per storage (journal file, SQLite, PostgreSQL
   when ``DEEPPCOS_TEST_POSTGRES_URL`` names a server): a study whose objective does everything
   the real one does with Optuna (8 suggestions, 10 reports with pruning checks, 6 user
   attributes) but no model, timed per trial, against the real objective's mean time per trial.
4. **Workers** (``workers``): the real tabular objective (pruning off, so trials are alike),
   ``deeppcos tune``'s own machinery on a journal file, 1 worker process against 2, trials per
   minute from the first trial's start to the last one's end (start-up excluded) and wall time.
5. **Reports inside a booster fold** (``round_reports``): what ``tabular.report_every_rounds``
   costs per trial, per storage — one early-stopping trial repeated with reports per fold only,
   every 25 rounds and every round (the pruner checks every report but never prunes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and xgboost start threads

import numpy as np
import optuna
import pandas as pd
import yaml

from deeppcos.config import load_config
from deeppcos.data.splits import CohortSplit, make_splits
from deeppcos.pipeline.training import cohort_for, cross_validate_branch, refit_branch
from deeppcos.stats import weighted_auc
from deeppcos.tuning.objective import DEFAULT_ROLE, BranchEvaluator, Development, Objective
from deeppcos.tuning.selection import best_trial, decide, finished_trials
from deeppcos.tuning.spaces import TuningSettings, load_tuning_settings
from deeppcos.tuning.storage import open_storage, worker_token
from deeppcos.tuning.workers import n_steps, sampler_and_pruner

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "pcos-kaggle-tabular.yaml"
SETTINGS = REPO / "configs" / "tuning.yaml"
OUT = REPO / "benchmarks" / "results" / "tuning.json"
OUTER_FOLDS = 5
N_BOOT = 2000
TOP_K = 5
BAG_SEEDS = 5
NAIVE_SPACE = {
    "max_depth": {"type": "int", "low": 2, "high": 10},
    "learning_rate": {"type": "float", "low": 0.005, "high": 0.3, "log": True},
    "n_estimators": {"type": "int", "low": 50, "high": 1000},
    "min_child_weight": {"type": "float", "low": 0.1, "high": 20.0, "log": True},
    "subsample": {"type": "float", "low": 0.5, "high": 1.0},
    "colsample_bytree": {"type": "float", "low": 0.3, "high": 1.0},
    "reg_lambda": {"type": "float", "low": 0.001, "high": 10.0, "log": True},
    "reg_alpha": {"type": "float", "low": 0.0, "high": 5.0},
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --- 1. nested evaluation -------------------------------------------------------------------------


def naive_settings() -> TuningSettings:
    data = TuningSettings().model_dump(mode="json")
    data["tabular"] = {
        "cv": {"folds": 4, "repeats": 1},
        "selection": {"rule": "best", "confirm_repeats": 0},
        "space": NAIVE_SPACE,
    }
    data["pruner"] = {"kind": "none"}
    return TuningSettings.model_validate(data)


def run_study(
    dev: Development, settings: TuningSettings, trials: int, with_default: bool
) -> tuple[optuna.Study, BranchEvaluator, float]:
    """A study as ``deeppcos tune`` runs it, in memory, on the development part ``dev``."""
    seed = settings.study.seed
    evaluator = BranchEvaluator("tabular", dev, settings.tabular, settings.objective, seed, 1)
    sampler, pruner = sampler_and_pruner(settings, len(evaluator.search_folds()), False, seed + 1)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    if with_default:
        study.enqueue_trial(evaluator.default_points()[0], user_attrs={"role": DEFAULT_ROLE})
    start = time.perf_counter()
    study.optimize(Objective(evaluator, worker_token(), seed + 1), n_trials=trials)
    return study, evaluator, time.perf_counter() - start


def _outer_part(outer_seed: int, k: int) -> tuple[Any, Any, Development, list[str], list[str]]:
    """Outer fold ``k`` of assignment ``outer_seed``: its training part as a development part."""
    config = load_config(CONFIG)
    cohort = cohort_for(config)
    outer = make_splits(cohort.patients, n_folds=OUTER_FOLDS, test_fraction=0.0, seed=outer_seed)
    train_ids, test_ids = outer.folds()[k]
    parts = pd.Series("fold0", index=pd.Index(train_ids, name="patient_id"), dtype="string")
    parts = pd.concat([parts, pd.Series("test", index=pd.Index(test_ids), dtype="string")])
    dev = Development(config, cohort, CohortSplit(parts.sort_index(), 1, 0, 0.0), None)
    return config, cohort, dev, list(train_ids), list(test_ids)


def outer_fold(args: tuple[int, int, int]) -> dict[str, Any]:
    """Tune inside outer fold k's training part; predict its test part with every arm."""
    outer_seed, k, trials = args
    config, cohort, dev, train_ids, test_ids = _outer_part(outer_seed, k)
    settings = load_tuning_settings(SETTINGS)
    study, evaluator, seconds = run_study(dev, settings, trials, with_default=True)
    decision = decide(study, evaluator, settings.tabular.selection, settings.objective)
    best = best_trial(study, settings.objective)
    naive, naive_eval, naive_seconds = run_study(dev, naive_settings(), trials, False)
    default = evaluator.default_points()[0]
    arms = {
        "default": default,
        "early_stopping": {**default, "early_stopping_rounds": 50},
        "fixed_rounds": {**default, "early_stopping_rounds": None},
        "tuned": decision.params,
        "best_trial": dict(best.params),
        "naive": dict(naive.best_params),
    }

    def fit(params: dict[str, Any], evaluator: BranchEvaluator = evaluator, seed: int = 0
            ) -> np.ndarray:
        return _fit_predict(evaluator, params, cohort, train_ids, test_ids, config, seed)

    predictions = {name: fit(params, naive_eval if name == "naive" else evaluator)
                   for name, params in arms.items()}
    top = _top_trials(study, TOP_K)
    predictions["top5_mean"] = np.mean([fit(dict(t.params)) for t in top], axis=0)
    predictions["bagged_default"] = np.mean(
        [fit(default, seed=100 * s) for s in range(BAG_SEEDS)], axis=0
    )
    labels = cohort.patients.set_index("patient_id")["label"]
    states = [t.state.name for t in study.trials]
    return {
        "outer_seed": outer_seed,
        "fold": k,
        "test_ids": list(test_ids),
        "predictions": {n: p.tolist() for n, p in predictions.items()},
        "auc": {n: weighted_auc(labels.reindex(test_ids).to_numpy(), p)
                for n, p in predictions.items()},
        "decision": decision.to_dict(),
        "inner_cv_best": best.value,
        "inner_cv_default": study.trials[0].value,
        "naive_inner_cv_best": naive.best_value,
        "params": arms,
        "top5_trials": [t.number for t in top],
        "trials": {s: states.count(s) for s in set(states)},
        "study_seconds": round(seconds, 1),
        "naive_study_seconds": round(naive_seconds, 1),
    }


def _top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    return sorted(finished_trials(study), key=lambda t: t.value, reverse=True)[:k]


def _fit_predict(
    evaluator: BranchEvaluator,
    params: dict[str, Any],
    cohort: Any,
    train_ids: list[str],
    test_ids: list[str],
    config: Any,
    seed_offset: int = 0,
) -> np.ndarray:
    """The model ``deeppcos train`` would save from the outer training part, on the test fold:
    the config's folds cross-validated (early stopping on an inner validation part of each
    fold's training patients, when the arm early-stops), then one booster refit on every
    training patient for the median rounds kept. ``seed_offset`` shifts the boosters' seeds,
    not the folds."""
    resolved = evaluator.resolved(params)
    seed = config.seed + seed_offset
    patients = cohort.patients[cohort.patients["patient_id"].isin(set(train_ids))]
    split = make_splits(patients, n_folds=config.split.n_folds, test_fraction=0.0,
                        seed=config.split_seed)
    folds = cross_validate_branch("tabular", resolved, cohort, split, None, seed)
    model = refit_branch("tabular", resolved, cohort, split, None, seed, folds.fold_trees)
    return model.predict_proba(cohort, test_ids).to_numpy()


def nested(trials: int, processes: int, outer_seeds: list[int]) -> dict[str, Any]:
    start = time.perf_counter()
    jobs = [(seed, k, trials) for seed in outer_seeds for k in range(OUTER_FOLDS)]
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        folds = list(pool.map(outer_fold, jobs))
    labels = cohort_for(load_config(CONFIG)).patients.set_index("patient_id")["label"]
    arms = list(folds[0]["predictions"])
    challengers = [arm for arm in arms if arm != "default"]
    per_assignment = {
        str(seed): _pooled([f for f in folds if f["outer_seed"] == seed], labels, arms)
        for seed in outer_seeds
    }
    gains = {arm: [f["auc"][arm] - f["auc"]["default"] for f in folds] for arm in challengers}
    for f in folds:
        del f["predictions"], f["test_ids"]
    return {
        "protocol": "outer 5-fold patient-level over all 541 women, for each outer seed; tuning "
        "inside each outer training part only; one model per arm fitted on the outer training "
        "part as `deeppcos train` fits its final booster (5-fold CV for the rounds, refit on all) "
        "predicts the outer test fold",
        "trials_per_study": trials,
        "outer_seeds": outer_seeds,
        "per_assignment": per_assignment,
        # A single deployed model is scored on its own: the per-fold AUC is its figure.
        "mean_fold_auc": {
            arm: round(float(np.mean([f["auc"][arm] for f in folds])), 4) for arm in arms
        },
        "mean_fold_gain_vs_default": {arm: round(float(np.mean(g)), 4) for arm, g in gains.items()},
        "folds_ahead_of_default": {arm: int(np.sum(np.array(g) > 0)) for arm, g in gains.items()},
        "folds_behind_default": {arm: int(np.sum(np.array(g) < 0)) for arm, g in gains.items()},
        "n_outer_folds": len(folds),
        "outer_folds": folds,
        "tuned_kept_default": sum(f["decision"]["chosen"] == "default" for f in folds),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _pooled(folds: list[dict[str, Any]], labels: pd.Series, arms: list[str]) -> dict[str, Any]:
    """Pooled out-of-fold AUC of one outer assignment and each arm's paired gap to default."""
    ids = [i for f in folds for i in f["test_ids"]]
    y = labels.reindex(ids).to_numpy(dtype=float)
    pooled = {arm: np.concatenate([np.asarray(f["predictions"][arm]) for f in folds])
              for arm in arms}
    draws = np.random.default_rng(0).integers(0, len(y), size=(N_BOOT, len(y)))
    return {
        "pooled_auc": {arm: round(weighted_auc(y, p), 4) for arm, p in pooled.items()},
        "versus_default": {arm: _paired(y, pooled[arm], pooled["default"], draws)
                           for arm in arms if arm != "default"},
    }


def _paired(y: np.ndarray, a: np.ndarray, b: np.ndarray, draws: np.ndarray) -> dict[str, Any]:
    diffs = np.array([weighted_auc(y[d], a[d]) - weighted_auc(y[d], b[d]) for d in draws])
    diffs = diffs[~np.isnan(diffs)]
    return {
        "difference": round(weighted_auc(y, a) - weighted_auc(y, b), 4),
        "ci95": [round(float(np.percentile(diffs, 2.5)), 4),
                 round(float(np.percentile(diffs, 97.5)), 4)],
        "share_above_0": round(float((diffs > 0).mean()), 3),
    }


# --- 2. the ceiling: how far ahead of the default is anything in the space? ----------------------


def ceiling_candidates(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` points drawn uniformly (log-uniformly where the space says so) from the tabular
    space of ``configs/tuning.yaml`` (the default is added by :func:`ceiling_fold`)."""
    settings = load_tuning_settings(SETTINGS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    points: list[dict[str, Any]] = []
    for _ in range(n):
        trial = study.ask()
        points.append({name: p.suggest(trial, name) for name, p in settings.tabular.space.items()})
        study.tell(trial, 0.0)
    return points


def ceiling_fold(args: tuple[int, int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Outer fold k: the default and every candidate fitted on its training part as
    ``deeppcos train`` fits, each scored on its test part."""
    outer_seed, k, candidates = args
    config, cohort, dev, train_ids, test_ids = _outer_part(outer_seed, k)
    settings = load_tuning_settings(SETTINGS)
    evaluator = BranchEvaluator("tabular", dev, settings.tabular, settings.objective, 0, 1)
    y = cohort.patients.set_index("patient_id")["label"].reindex(test_ids).to_numpy()
    points = [evaluator.default_points()[0], *candidates]
    aucs = [weighted_auc(y, _fit_predict(evaluator, point, cohort, train_ids, test_ids, config))
            for point in points]
    return {"outer_seed": outer_seed, "fold": k, "default_auc": aucs[0], "aucs": aucs[1:]}


def ceiling(n_candidates: int, processes: int, outer_seeds: list[int]) -> dict[str, Any]:
    """Every candidate on every outer test fold. Choosing the best of them by those very folds is
    an oracle no tuner has: its gain is an upper bound on what a search of this space can find
    (and itself flattered by the choice). Choosing on one outer assignment's folds and scoring on
    the other's is less flattered (the same women, cut differently)."""
    start = time.perf_counter()
    candidates = ceiling_candidates(n_candidates)
    jobs = [(seed, k, candidates) for seed in outer_seeds for k in range(OUTER_FOLDS)]
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        folds = list(pool.map(ceiling_fold, jobs))
    # gains[i, j]: candidate j's AUC minus the default's on outer fold i
    gains = np.array([np.asarray(f["aucs"]) - f["default_auc"] for f in folds])
    seeds = np.array([f["outer_seed"] for f in folds])
    mean_gain = gains.mean(axis=0)
    oracle = int(np.argmax(mean_gain))
    out: dict[str, Any] = {
        "protocol": "the default and N random points of the tabular space, each fitted on every "
        "outer training part as `deeppcos train` fits and scored on the outer test fold (the "
        "nested part's outer folds); gains are per-fold AUC differences to the default",
        "n_candidates": n_candidates,
        "n_outer_folds": len(folds),
        "default_mean_fold_auc": round(float(np.mean([f["default_auc"] for f in folds])), 4),
        "share_of_candidates_with_mean_gain_above_0": round(float((mean_gain > 0).mean()), 3),
        "candidate_mean_gain_quantiles": {
            q: round(float(np.quantile(mean_gain, float(q))), 4)
            for q in ("0.5", "0.9", "0.99", "1.0")
        },
        "oracle": {
            "params": candidates[oracle],
            "mean_fold_gain": round(float(mean_gain[oracle]), 4),
            "folds_ahead": int((gains[:, oracle] > 0).sum()),
            "folds_behind": int((gains[:, oracle] < 0).sum()),
            "fold_gains": [round(float(g), 4) for g in gains[:, oracle]],
        },
        "candidates": [
            {"params": c, "mean_fold_gain": round(float(g), 4),
             "folds_ahead": int((gains[:, j] > 0).sum())}
            for j, (c, g) in enumerate(zip(candidates, mean_gain, strict=True))
        ],
    }
    if len(outer_seeds) > 1:
        out["chosen_on_one_assignment"] = [
            _cross_choice(gains, seeds == s, candidates, s) for s in outer_seeds
        ]
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def _cross_choice(
    gains: np.ndarray, chosen_on: np.ndarray, candidates: list[dict[str, Any]], seed: int
) -> dict[str, Any]:
    """The candidate best on one outer assignment's folds, scored on the other assignments'."""
    j = int(np.argmax(gains[chosen_on].mean(axis=0)))
    held = gains[~chosen_on, j]
    return {
        "chosen_on_outer_seed": seed,
        "params": candidates[j],
        "gain_where_chosen": round(float(gains[chosen_on, j].mean()), 4),
        "gain_elsewhere": round(float(held.mean()), 4),
        "folds_ahead_elsewhere": int((held > 0).sum()),
        "folds_behind_elsewhere": int((held < 0).sum()),
    }


# --- 3. Optuna's own overhead ---------------------------------------------------------------------


def _null_objective(trial: optuna.Trial) -> float:
    """Everything the real objective does with Optuna, nothing else."""
    space = TuningSettings().tabular.space
    values = {name: param.suggest(trial, name) for name, param in space.items()}
    for attr in ("worker", "model_seed", "sampler_seed"):
        trial.set_user_attr(attr, 0)
    for step in range(10):
        trial.report(0.9 + 0.001 * step + 0.0001 * values["max_depth"], step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    trial.set_user_attr("fold_metrics", [{"roc_auc": 0.9, "n": 86.0, "seconds": 0.2}] * 10)
    trial.set_user_attr("duration_s", 0.0)
    return 0.9 + 0.001 * values["max_depth"]


def overhead(storages: dict[str, str], trials: int, objective_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    settings = TuningSettings()
    for name, url in storages.items():
        storage = open_storage(url)
        sampler, pruner = sampler_and_pruner(settings, 10, False, 0)
        study = optuna.create_study(
            storage=storage, sampler=sampler, pruner=pruner, direction="maximize",
            study_name=f"overhead-{os.getpid()}-{time.time_ns()}",
        )
        start = time.perf_counter()
        study.optimize(_null_objective, n_trials=trials)
        per_trial = (time.perf_counter() - start) / trials
        out[name] = {
            "trials": trials,
            "optuna_s_per_trial": round(per_trial, 4),
            "share_of_real_trial": round(per_trial / (per_trial + objective_s), 4),
        }
        if name == "postgresql":
            optuna.delete_study(study_name=study.study_name, storage=storage)
    return {
        "protocol": "no-model objective doing the real objective's Optuna calls (8 suggestions, "
        "10 reports + should_prune, 6 user attributes) with TPE (multivariate, constant liar) and "
        "the median pruner; the real objective's mean seconds per trial for comparison",
        "real_objective_s_per_trial": round(objective_s, 3),
        "storages": out,
    }


# --- 4. one worker against two --------------------------------------------------------------------


def workers(trials: int, folder: Path) -> dict[str, Any]:
    from deeppcos.tuning import tune

    data = TuningSettings().model_dump(mode="json")
    data["pruner"] = {"kind": "none"}
    data["tabular"]["selection"]["confirm_repeats"] = 0
    space = folder / "tuning-no-pruning.yaml"
    space.write_text(yaml.safe_dump(data))
    out: dict[str, Any] = {}
    for k in (1, 2):
        storage = str(folder / f"workers-{k}.log")
        start = time.perf_counter()
        (result,) = tune(CONFIG, "tabular", trials, space=space, storage=storage, workers=k,
                         study=f"workers-{k}")
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name=f"workers-{k}", storage=open_storage(storage))
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        first = min(t.datetime_start for t in done)
        last = max(t.datetime_complete for t in done)
        span = (last - first).total_seconds()
        out[f"{k}_worker{'s' if k > 1 else ''}"] = {
            "trials": len(done),
            "trials_per_minute": round(60 * len(done) / span, 2),
            "mean_trial_s": round(float(np.mean([t.user_attrs["duration_s"] for t in done])), 2),
            "wall_s": round(wall, 1),
            "decision": result.decision.chosen,
        }
    one, two = out["1_worker"], out["2_workers"]
    out["speed_up"] = round(two["trials_per_minute"] / one["trials_per_minute"], 2)
    out["protocol"] = (
        "deeppcos tune --target tabular on the Kaggle table (2 x 5 repeated folds, pruning off "
        "so trials are alike), journal file, --workers 1 vs 2 (1 thread each); trials per "
        "minute from the first trial's start to the last one's end; wall includes start-up"
    )
    return out


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1, got {text!r}"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"outer seeds repeat: {text!r}")
    return seeds


# --- 5. reports inside a booster fold ------------------------------------------------------------


def round_reports(trials: int, storages: dict[str, str]) -> dict[str, Any]:
    """What ``tabular.report_every_rounds`` costs: the same early-stopping trial (the config's
    parameters with ``early_stopping_rounds: 50``) run ``trials`` times per storage with round
    reports off, every 25 rounds and every round (one trial only: on SQLite it takes minutes);
    the pruner checks at every report but never prunes (its start-up count is never reached),
    so every trial does the same work. One untimed trial first warms the process up."""
    from deeppcos.tuning.objective import load_development

    dev = load_development(load_config(CONFIG))
    defaults = TuningSettings()
    warm = BranchEvaluator("tabular", dev, defaults.tabular, defaults.objective, 0, 1)
    optuna.create_study(direction="maximize").optimize(Objective(warm, "warm-up", 0), n_trials=1)
    out: dict[str, Any] = {}
    for name, url in storages.items():
        out[name] = {}
        for every in (0, 25, 1):
            data = load_tuning_settings(SETTINGS).model_dump(mode="json")
            data["tabular"]["report_every_rounds"] = every
            data["pruner"]["n_startup_trials"] = 10 * trials
            settings = TuningSettings.model_validate(data)
            evaluator = BranchEvaluator("tabular", dev, settings.tabular, settings.objective, 0, 1)
            sampler, pruner = sampler_and_pruner(settings, n_steps(evaluator), False, 0)
            study = optuna.create_study(
                storage=open_storage(url), sampler=sampler, pruner=pruner, direction="maximize",
                study_name=f"rounds-{every}-{os.getpid()}-{time.time_ns()}",
            )
            point = {**evaluator.default_points()[0], "early_stopping_rounds": 50}
            n = 1 if every == 1 else trials
            for _ in range(n):
                study.enqueue_trial(point)
            study.optimize(Objective(evaluator, worker_token(), 0), n_trials=n)
            done = study.trials
            out[name][f"every_{every}"] = {
                "s_per_trial": round(float(np.mean([t.user_attrs["duration_s"] for t in done])), 3),
                "reports_per_trial": round(float(np.mean([len(t.intermediate_values)
                                                          for t in done])), 1),
            }
            if name == "postgresql":
                optuna.delete_study(study_name=study.study_name, storage=open_storage(url))
    return {
        "protocol": "the Kaggle config's parameters with early stopping (50 rounds), 2 x 5 "
        "folds, the same trial repeated; reports after every fold only (every_0), also every 25 "
        "boosting rounds, or every round; median pruner checking but never pruning",
        "trials": trials,
        "storages": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=60, help="trials per nested study")
    parser.add_argument("--worker-trials", type=int, default=16)
    parser.add_argument("--overhead-trials", type=int, default=60)
    parser.add_argument("--round-trials", type=int, default=5,
                        help="trials per storage and setting of the round_reports part")
    parser.add_argument("--processes", type=int, default=2, help="outer folds in parallel")
    parser.add_argument("--ceiling-candidates", type=int, default=100,
                        help="random points of the tabular space scored by the ceiling part")
    parser.add_argument("--outer-seeds", default="0,1", type=_seed_list,
                        help="comma-separated seeds of the outer fold assignments, e.g. 0,1")
    parser.add_argument(
        "--parts", default="nested,ceiling,workers,overhead,round_reports",
        help="comma-separated parts to (re)run; the others are kept from the existing JSON",
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.worker_trials, args.overhead_trials = 4, 4, 10
        args.ceiling_candidates, args.round_trials = 3, 1
        args.outer_seeds = [0]
    parts = set(args.parts.split(","))
    start = time.perf_counter()
    result: dict[str, Any] = json.loads(OUT.read_text()) if OUT.is_file() else {}
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "optuna": optuna.__version__}
    result.setdefault("settings", {}).update(
        {"outer_folds": OUTER_FOLDS, "tuning_settings": "configs/tuning.yaml defaults"}
    )
    if "nested" in parts:
        result["settings"]["nested_trials"] = args.trials
        result["nested"] = nested(args.trials, args.processes, args.outer_seeds)
        print(json.dumps(result["nested"]["per_assignment"]))
        print(json.dumps(result["nested"]["mean_fold_gain_vs_default"]))
    if "ceiling" in parts:
        result["settings"]["ceiling_candidates"] = args.ceiling_candidates
        result["ceiling"] = ceiling(args.ceiling_candidates, args.processes, args.outer_seeds)
        print(json.dumps({k: v for k, v in result["ceiling"].items() if k != "candidates"}))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "workers" in parts:
            result["settings"]["worker_trials"] = args.worker_trials
            result["workers"] = workers(args.worker_trials, folder)
            print(json.dumps(result["workers"]))
        storages = {"journal": str(folder / "overhead.log"),
                    "sqlite": f"sqlite:///{folder}/overhead.db"}
        if os.environ.get("DEEPPCOS_TEST_POSTGRES_URL"):
            storages["postgresql"] = os.environ["DEEPPCOS_TEST_POSTGRES_URL"]
        if "overhead" in parts:
            objective_s = result["workers"]["1_worker"]["mean_trial_s"]
            result["settings"]["overhead_trials"] = args.overhead_trials
            result["overhead"] = overhead(storages, args.overhead_trials, objective_s)
            print(json.dumps(result["overhead"]["storages"]))
        if "round_reports" in parts:
            result["settings"]["round_trials"] = args.round_trials
            result["round_reports"] = round_reports(args.round_trials, storages)
            print(json.dumps(result["round_reports"]["storages"]))
    result["seconds_last_run"] = round(time.perf_counter() - start, 1)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT} in {result['seconds_last_run']} s")


if __name__ == "__main__":
    main()
