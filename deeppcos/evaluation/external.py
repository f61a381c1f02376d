"""External validation: a trained run scored on another cohort, read with that cohort's own spec.

``deeppcos evaluate RUN --cohort OTHER_SPEC`` writes ``RUN/external/<cohort name>/`` (or
``--out``) and adds an "External validation" section to the run's model card. What it
measures, in the spirit of TRIPOD+AI's external validation items:

- **discrimination**: ROC AUC and PR AUC with patient-bootstrap 95% intervals, beside the run's
  internal figures (out-of-fold and, when evaluated, the locked test part);
- **calibration**: calibration in the large (the intercept of a logistic recalibration with the
  model's logit as offset: 0 is perfect, > 0 means the model under-predicts here) and the
  calibration slope (1 is perfect, < 1 means predictions too extreme), each with a bootstrap
  interval, and a reliability diagram;
- **the decision**: sensitivity, specificity, PPV, NPV at the run's threshold (with intervals),
  and the threshold these data would need for the run's target sensitivity;
- **net benefit** (decision-curve analysis) of the model against treating everyone and no one,
  over threshold probabilities 1–60%, externally and, when the run was evaluated, internally;
- **case mix**: each model input's mean, SD and missing share in the run's development cohort and
  here, with the standardised mean difference; model inputs this cohort lacks (scored as
  missing, listed); the modalities its patients have;
- **contamination**: when both cohorts have images, copies shared with the run's development
  cohort (:mod:`deeppcos.audit.cross`) — an external set that shares images measures
  memory, and the report says so first;
- **recalibration** (optional, ``recalibrate=FRACTION``, CLI ``--recalibrate``): the scored
  patients are split by patient (patients linked by duplicate images stay together), stratified
  by label, with the run's seed; a logistic recalibration ``logit P(y) = a + b·logit(risk)`` (the
  model behind the calibration slope) is fitted on that fraction and scored on the rest only:
  calibration in the large, slope, Brier, sensitivity and specificity at the run's threshold,
  before and after, with the same bootstrap intervals, a reliability diagram, and the threshold
  for the target sensitivity after recalibration (chosen on the fitting part, scored on the
  rest). A monotone recalibration leaves every patient's rank, hence ROC and PR AUC, unchanged:
  the report gives the rest's AUC once and says so. ``recalibration_split.csv`` lists which
  patients fitted it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from deeppcos.data.categorical import category_text
from deeppcos.evaluation.metrics import classification_metrics, threshold_for_sensitivity
from deeppcos.evaluation.model_card import with_ci
from deeppcos.exceptions import SchemaError
from deeppcos.runs.layout import ReportFiles, RunFiles
from deeppcos.runs.reader import Run
from deeppcos.stats import bootstrap_intervals

__all__ = ["external_validation", "net_benefit", "recalibration_split"]

DCA_THRESHOLDS = np.round(np.arange(0.01, 0.61, 0.01), 2)
N_BOOT = 1000
# Each part of a recalibration split needs this many patients of each class: fewer and the
# fitted slope, or the figures on the rest, are noise.
MIN_PER_CLASS = 10
RECALIBRATION_FILES = (ReportFiles.RECALIBRATION_SPLIT, ReportFiles.RECALIBRATION_RELIABILITY)
FIT, HELD_OUT = "fit", "held out"
SECTION_START = "<!-- external validation: {name} -->"
SECTION_END = "<!-- end external validation: {name} -->"


def external_validation(
    run: Path | str,
    cohort_spec: Path | str,
    out: Path | str | None = None,
    *,
    seed: int = 0,
    check_contamination: bool = True,
    recalibrate: float | None = None,
) -> dict[str, Any]:
    """Score ``run`` on the cohort of ``cohort_spec`` and write the report (see module notes).

    ``seed`` seeds the bootstrap; ``recalibrate`` (a fraction in (0, 1)) fits a logistic
    recalibration on that share of the scored patients, split with the run's own seed, and
    scores it on the rest.
    """
    from deeppcos.data.loaders import load_cohort
    from deeppcos.inference.predictor import load_run

    _check_fraction(recalibrate)
    run = Path(run)
    predictor = load_run(run)
    external = load_cohort(cohort_spec)
    if not external.has_labels:
        raise SchemaError(
            f"{cohort_spec}: the cohort has no labels; external validation needs the outcome "
            "(name its column as label_column in the spec)"
        )
    internal = predictor.cohort()
    absent = _add_absent_inputs(external, _model_inputs(predictor))
    predictions = predictor.predict(external)
    labels = external.patients.set_index("patient_id")["label"]
    predictions.insert(1, "label", labels.reindex(predictions["patient_id"]).to_numpy())
    # The split is made, and refused, before anything is written.
    split = _split(predictions, predictor, external, run, recalibrate) if recalibrate else None
    folder = Path(out) if out else Run(run).external_folder(_folder_name(external.spec.name))
    result = {
        "run": str(run),
        "folder": str(folder),
        "cohort": external.spec.name,
        "cohort_spec": str(cohort_spec),
        "patients": len(external.patients),
        "contamination": _contamination(internal, external) if check_contamination else None,
        "scored": int(predictions["risk"].notna().sum()),
        "internal": _internal_figures(predictor),
        **_performance(predictions, predictor, seed),
        "case_mix": _case_mix(internal, external, _model_inputs(predictor), absent),
        "modalities": predictions["modalities"].value_counts().to_dict(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    result["net_benefit"] = _decision_curves(folder, predictions, run)
    for name in RECALIBRATION_FILES:  # an earlier report's, in the same folder
        (folder / name).unlink(missing_ok=True)
    if split is not None:
        result["recalibration"] = _recalibration(folder, split, predictor, seed)
    _write(folder, result, predictions)
    _model_card(run, folder, result)
    return result


# --- inputs ------------------------------------------------------------------------------------


def _model_inputs(predictor: Any) -> list[str]:
    tabular = predictor.branches.get("tabular")
    return list(tabular.feature_names_) if tabular is not None else []


def _add_absent_inputs(cohort: Any, inputs: list[str]) -> list[str]:
    """Model inputs the cohort lacks become missing values (XGBoost's missing branch), listed;
    derived ones are computed from their parts when those are there."""
    from deeppcos.tabular.features import DERIVED_BY_NAME

    absent = [
        name for name in inputs if name not in cohort.patients and name not in DERIVED_BY_NAME
    ]
    for name in absent:
        cohort.patients[name] = np.nan
    cohort.feature_columns = list(dict.fromkeys([*cohort.feature_columns, *absent]))
    return absent


# --- performance -------------------------------------------------------------------------------


def _performance(predictions: pd.DataFrame, predictor: Any, seed: int) -> dict[str, Any]:
    scored = predictions["risk"].notna() & predictions["label"].notna()
    y = predictions.loc[scored, "label"].astype(int).to_numpy()
    risk = predictions.loc[scored, "risk"].to_numpy(dtype="float64")
    if len(np.unique(y)) < 2:
        raise SchemaError(
            f"the external cohort has {len(y)} scored patients of one class only; discrimination "
            "and calibration need both"
        )
    threshold = float(predictor.threshold)
    target = float(predictor.config.fusion.target_sensitivity)
    return {
        "at_run_threshold": classification_metrics(y, risk, threshold, seed=seed),
        "calibration": _calibration(y, risk, seed),
        "threshold_for_target_sensitivity": {
            "target": target,
            "run_threshold": threshold,
            "threshold_here": threshold_for_sensitivity(y, risk, target),
        },
    }


def _calibration(y: np.ndarray, risk: np.ndarray, seed: int) -> dict[str, Any]:
    """Calibration in the large and slope, each with its patient-bootstrap BCa interval.

    Resampled by the shared core (``deeppcos.stats.bootstrap_intervals``): each resample is a
    weight per patient, and the logistic fits take those weights as frequency weights (the same
    fit as on the resampled rows). A resample that drew one class only defines neither figure.
    """
    logit = _logit(risk)
    positives = np.asarray(y, dtype="float64")

    def statistic(weights: np.ndarray) -> dict[str, np.ndarray]:
        out = {key: np.full(len(weights), np.nan) for key in ("in_the_large", "slope")}
        for row, w in enumerate(weights):
            if w @ positives == 0 or w @ (1 - positives) == 0:
                continue
            out["in_the_large"][row] = _intercept(y, logit, w)
            out["slope"][row] = _slope(y, logit, w)
        return out

    intervals = bootstrap_intervals(statistic, len(y), seed=seed, n_boot=N_BOOT)
    out: dict[str, Any] = {
        "observed_rate": round(float(y.mean()), 4),
        "mean_predicted": round(float(risk.mean()), 4),
    }
    for key, interval in intervals.items():
        out[key] = {
            "value": round(interval.value, 4),
            "ci": None if interval.ci is None else [round(c, 4) for c in interval.ci],
            **({"ci_note": interval.note} if interval.note else {}),
        }
    out["reading"] = (
        "in the large: 0 is perfect, > 0 the model under-predicts the risk here, < 0 it "
        "over-predicts; slope: 1 is perfect, < 1 predictions too extreme, > 1 too timid"
    )
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _intercept(y: np.ndarray, offset: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Maximum-likelihood a in logit P(y) = a + offset (Newton's method; 1 parameter).

    ``weights``: frequency weights (a bootstrap resample's counts); 1 each without. Each step is
    halved until it raises the likelihood: a plain Newton step from 0 overshoots to ±1e14 when
    most risks sit near 0 or 1 (a resample of a badly calibrated model)."""
    y = np.asarray(y, dtype="float64")
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype="float64")
    a, loss = 0.0, _log_loss(y, offset, w)
    for _ in range(100):
        p = expit(a + offset)
        step = (w * (y - p)).sum() / max((w * p * (1 - p)).sum(), 1e-12)
        scale = 1.0
        while scale > 1e-9:
            trial_loss = _log_loss(y, a + scale * step + offset, w)
            if trial_loss <= loss + 1e-12:
                break
            scale /= 2
        else:
            break
        a, loss = a + scale * step, trial_loss
        if abs(scale * step) < 1e-10:
            break
    return float(a)


def _slope(y: np.ndarray, logit: np.ndarray, weights: np.ndarray | None = None) -> float:
    """b in logit P(y) = a + b·logit(risk), unpenalised."""
    return _logistic(y, logit, weights)[1]


def _logistic(
    y: np.ndarray, logit: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """(a, b) of logit P(y) = a + b·logit(risk), unpenalised maximum likelihood.

    Newton's method on the two parameters (a thousand bootstrap fits take a tenth of a second,
    not the seconds of a general solver), started from the identity map (0, 1), with step
    halving whenever a step would lower the likelihood. Where the classes are separated the
    maximum lies at infinity: the fit stops after a fixed number of steps with a large slope.
    ``weights``: frequency weights (a bootstrap resample's counts); 1 each without.
    """
    y = np.asarray(y, dtype="float64")
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype="float64")
    design = np.column_stack([np.ones_like(logit), logit])
    beta = np.array([0.0, 1.0])
    loss = _log_loss(y, design @ beta, w)
    for _ in range(100):
        p = expit(design @ beta)
        curvature = w * p * (1 - p)
        gradient = design.T @ (w * (y - p))
        hessian = (design * curvature[:, None]).T @ design + 1e-12 * np.eye(2)
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            break
        scale = 1.0
        while scale > 1e-6:
            trial = beta + scale * step
            trial_loss = _log_loss(y, design @ trial, w)
            if trial_loss <= loss + 1e-12:
                break
            scale /= 2
        else:
            break
        beta, previous, loss = trial, loss, trial_loss
        if np.abs(scale * step).max() < 1e-9 or previous - loss < 1e-13:
            break
    return float(beta[0]), float(beta[1])


def _log_loss(y: np.ndarray, eta: np.ndarray, weights: np.ndarray) -> float:
    """Summed (weighted) negative log likelihood of the logistic model at predictor ``eta``."""
    return float(np.sum(weights * (np.logaddexp(0, eta) - y * eta)))


# --- recalibration -------------------------------------------------------------------------------


def _check_fraction(fraction: float | None) -> None:
    from deeppcos.exceptions import SplitError

    if fraction is None:
        return
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise SplitError(f"--recalibrate (recalibrate=): expected a fraction, got {fraction!r}")
    if not 0 < fraction < 1:
        raise SplitError(
            f"--recalibrate {fraction:g}: the share of the external cohort the recalibration "
            "is fitted on must lie strictly between 0 and 1 (e.g. 0.5); the rest scores it"
        )


def recalibration_split(
    labels: pd.Series,
    fraction: float,
    seed: int,
    groups: pd.Series | None = None,
) -> pd.Series:
    """``fit`` or ``held out`` per patient (``labels``: patient_id -> 0/1, every one labelled).

    By patient, stratified by label: in each class (a group of linked patients counts in the
    class of its most severe label) the units are shuffled with ``seed`` and taken into the
    fitting part until it holds ``round(fraction × patients of the class)``. ``groups`` maps
    patient_id to a group id; linked patients land in one part together.
    """
    from deeppcos.exceptions import SplitError

    _check_fraction(fraction)
    ids = labels.index.astype(str)
    y = labels.astype(int).to_numpy()
    group_of = pd.Series(ids, index=ids) if groups is None else _groups_for(ids, groups)
    frame = pd.DataFrame({"group": group_of.to_numpy(), "label": y}, index=ids)
    units = frame.groupby("group", sort=True)["label"].agg(["max", "size"])
    rng = np.random.default_rng(seed)
    fitting: set[str] = set()
    for label in (0, 1):
        stratum = units[units["max"] == label]
        wanted = int(np.floor(fraction * stratum["size"].sum() + 0.5))
        taken = 0
        for unit in rng.permutation(stratum.index.to_numpy()):
            if taken >= wanted:
                break
            fitting.add(unit)
            taken += int(stratum.loc[unit, "size"])
    parts = pd.Series(
        np.where(frame["group"].isin(fitting), FIT, HELD_OUT), index=ids, name="part"
    ).rename_axis("patient_id")
    counts = {
        part: [int(((parts == part) & (frame["label"] == c)).sum()) for c in (1, 0)]
        for part in (FIT, HELD_OUT)
    }
    short = [part for part, (pos, neg) in counts.items() if min(pos, neg) < MIN_PER_CLASS]
    if short:
        raise SplitError(
            f"--recalibrate {fraction:g}: the fitting part would hold {counts[FIT][0]} positive "
            f"and {counts[FIT][1]} negative patients, the held-out rest {counts[HELD_OUT][0]} and "
            f"{counts[HELD_OUT][1]}; each part needs at least {MIN_PER_CLASS} of each class "
            "(a fraction nearer 0.5, or a larger external cohort)"
        )
    return parts


def _groups_for(ids: pd.Index, groups: pd.Series) -> pd.Series:
    mapped = pd.Series(ids, index=ids).map(groups.astype(str).to_dict())
    # Patients the grouping does not know stand alone, under an id no real group can have.
    return mapped.fillna(pd.Series("__self__" + ids, index=ids))


def _linked_patients(external: Any, predictor: Any) -> pd.Series | None:
    """Patients of the external cohort linked by duplicate images (as the run's own split
    grouped them), or None when the cohort has no images or the run did not group."""
    split = predictor.config.split
    if not (len(external.images) and split.group_duplicates):
        return None
    from deeppcos.audit.checks import duplicate_patient_groups

    return duplicate_patient_groups(external, near_duplicate_threshold=split.near_duplicate_bits)


def _run_seed(predictor: Any) -> tuple[int, str]:
    """The seed training used (its metrics record it), else its config's."""
    metrics = predictor.metrics
    if metrics is not None and metrics.seed is not None:
        return metrics.seed, RunFiles.METRICS
    return int(predictor.config.seed), RunFiles.CONFIG


@dataclass(frozen=True)
class _Split:
    """The scored, labelled patients and the part each is in."""

    fraction: float
    labels: pd.Series  # patient_id -> 0/1
    risk: np.ndarray
    parts: pd.Series  # patient_id -> FIT / HELD_OUT
    groups: pd.Series | None
    seed: int
    seed_source: str
    not_scored: int


def _split(
    predictions: pd.DataFrame, predictor: Any, external: Any, run: Path, fraction: float
) -> _Split:
    scored = predictions[predictions["risk"].notna() & predictions["label"].notna()]
    labels = scored.set_index(scored["patient_id"].astype(str))["label"].astype(int)
    seed, source = _run_seed(predictor)
    groups = _linked_patients(external, predictor)
    parts = recalibration_split(labels, fraction, seed, groups)
    risk = scored["risk"].to_numpy(dtype="float64")
    return _Split(
        fraction, labels, risk, parts, groups, seed, source, len(predictions) - len(scored)
    )


def _recalibration(folder: Path, split: _Split, predictor: Any, seed: int) -> dict[str, Any]:
    """Fit the recalibration on the split's fitting part; score it on the rest."""
    from deeppcos.evaluation.plots import plot_reliability
    from deeppcos.runs.csvsafe import write_csv

    labels, parts, groups, risk = split.labels, split.parts, split.groups, split.risk
    fraction, split_seed, seed_source = split.fraction, split.seed, split.seed_source
    y = labels.to_numpy()
    fit = (parts == FIT).to_numpy()
    intercept, slope = _logistic(y[fit], _logit(risk[fit]))
    recalibrated = _apply(intercept, slope, risk)
    held = ~fit
    threshold = float(predictor.threshold)
    target = float(predictor.config.fusion.target_sensitivity)
    before = classification_metrics(y[held], risk[held], threshold, seed=seed)
    after = classification_metrics(y[held], recalibrated[held], threshold, seed=seed)
    chosen = threshold_for_sensitivity(y[fit], recalibrated[fit], target)
    at_chosen = classification_metrics(y[held], recalibrated[held], chosen, seed=seed)
    linked = (
        int(_groups_for(labels.index, groups).duplicated(keep=False).sum())
        if groups is not None
        else 0
    )
    table = pd.DataFrame(
        {
            "patient_id": labels.index,
            "label": y,
            "part": parts.to_numpy(),
            "risk": risk.round(6),
            "risk_recalibrated": recalibrated.round(6),
        }
    )
    write_csv(table, folder / ReportFiles.RECALIBRATION_SPLIT, index=False)
    plot_reliability(
        {"before": (y[held], risk[held]), "after recalibration": (y[held], recalibrated[held])},
        folder / ReportFiles.RECALIBRATION_RELIABILITY,
        title=f"Held-out {int(held.sum())} patients, before and after recalibration",
    )
    decision_keys = ("sensitivity", "specificity", "ppv", "npv", "brier", "ece")
    counts = ("threshold", "n", "positives", "tp", "fp", "tn", "fn")
    return {
        "fraction": float(fraction),
        "model": "logit P(y) = a + b·logit(risk), unpenalised maximum likelihood on the fitting "
        "part (the model of the calibration slope)",
        "coefficients": {"intercept": round(intercept, 4), "slope": round(slope, 4)},
        "split": {
            "unit": "patient",
            "linked_patients": linked,
            "linked_by": "duplicate images (kept in one part)" if groups is not None else None,
            "stratified_by": "label",
            "seed": split_seed,
            "seed_source": seed_source,
            FIT: {"patients": int(fit.sum()), "positives": int(y[fit].sum())},
            HELD_OUT: {"patients": int(held.sum()), "positives": int(y[held].sum())},
            "not_scored": int(split.not_scored),
            "ids_file": ReportFiles.RECALIBRATION_SPLIT,
        },
        "held_out": {
            "discrimination": {
                "roc_auc": before["roc_auc"],
                "pr_auc": before["pr_auc"],
                "note": (
                    "unchanged by the recalibration, a monotone map of the risk that keeps "
                    "every patient's rank: ROC and PR AUC are the same before and after"
                    if slope > 0
                    else f"not repaired by the recalibration: its fitted slope is {slope:.3f} "
                    "(≤ 0), the model does not rank these patients the right way round"
                ),
            },
            "before": {
                "calibration": _calibration(y[held], risk[held], seed),
                **{k: before[k] for k in (*decision_keys, *counts)},
            },
            "after": {
                "calibration": _calibration(y[held], recalibrated[held], seed),
                **{k: after[k] for k in (*decision_keys, *counts)},
            },
            "threshold_for_target_sensitivity": {
                "target": target,
                "chosen_on_fitting_part": round(chosen, 4),
                "sensitivity": at_chosen["sensitivity"],
                "specificity": at_chosen["specificity"],
                "held_out_would_need": round(
                    threshold_for_sensitivity(y[held], recalibrated[held], target), 4
                ),
                "run_threshold_after_recalibration": round(
                    float(_apply(intercept, slope, np.array([threshold]))[0]), 4
                ),
                "reading": "the threshold is chosen on the fitting part's recalibrated risks "
                "and scored on the held-out rest; the run's threshold mapped through the "
                "recalibration gives the run's own decisions",
            },
            "bootstrap": before["bootstrap"],
        },
        "reliability_plot": ReportFiles.RECALIBRATION_RELIABILITY,
    }


def _linked_text(split: dict[str, Any]) -> str:
    if not split.get("linked_by"):
        return ""
    linked = split.get("linked_patients") or 0
    return (
        f" ({linked} patients linked by duplicate images, each link kept in one part)"
        if linked
        else " (no patients linked by duplicate images)"
    )


def _apply(intercept: float, slope: float, risk: np.ndarray) -> np.ndarray:
    return expit(intercept + slope * _logit(risk))


# --- net benefit -------------------------------------------------------------------------------


def net_benefit(y: np.ndarray, risk: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """Net benefit of treating when risk ≥ t, of treating everyone, and of no one (= 0)."""
    y = np.asarray(y, dtype=int)
    risk = np.asarray(risk, dtype="float64")
    n, prevalence = len(y), y.mean()
    odds = thresholds / (1 - thresholds)
    called = risk[None, :] >= thresholds[:, None]
    tp = (called & (y[None, :] == 1)).sum(axis=1) / n
    fp = (called & (y[None, :] == 0)).sum(axis=1) / n
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "model": tp - fp * odds,
            "treat_all": prevalence - (1 - prevalence) * odds,
            "treat_none": 0.0,
        }
    )


def _decision_curves(folder: Path, predictions: pd.DataFrame, run: Path) -> dict[str, Any]:
    from deeppcos.evaluation.plots import plot_decision_curves

    curves = {"external": _labelled(predictions)}
    internal = Run(run).test_predictions()
    if internal is not None:
        curves["internal (locked test part)"] = _labelled(internal)
    tables = {name: net_benefit(y, p, DCA_THRESHOLDS) for name, (y, p) in curves.items()}
    plot_decision_curves(tables, folder / ReportFiles.DECISION_CURVE)
    return {
        name: table.round(4).to_dict("list")
        | {"prevalence": round(float(curves[name][0].mean()), 4)}
        for name, table in tables.items()
    }


def _labelled(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    keep = frame["risk"].notna() & frame["label"].notna()
    return (
        frame.loc[keep, "label"].astype(int).to_numpy(),
        frame.loc[keep, "risk"].to_numpy(dtype="float64"),
    )


# --- case mix ----------------------------------------------------------------------------------


def _case_mix(internal: Any, external: Any, inputs: list[str], absent: list[str]) -> dict:
    from deeppcos.tabular.features import derive_features

    inside = derive_features(internal.patients)
    outside = derive_features(external.patients)
    rows = []
    for name, a, b in _compared_columns(inside, outside, inputs):
        pooled = (
            np.sqrt((a.var() + b.var()) / 2)
            if a.notna().sum() > 1 and b.notna().sum() > 1
            else np.nan
        )
        smd = (b.mean() - a.mean()) / pooled if pooled and pooled > 0 else np.nan
        rows.append(
            {
                "feature": name,
                "internal_mean": _r(a.mean()),
                "internal_sd": _r(a.std()),
                "internal_missing": _r(a.isna().mean() if len(a) else 1.0),
                "external_mean": _r(b.mean()),
                "external_sd": _r(b.std()),
                "external_missing": _r(b.isna().mean() if len(b) else 1.0),
                "standardised_difference": _r(smd),
                "absent_here": name.split("=")[0] in absent,
            }
        )
    table = pd.DataFrame(rows)
    shifted = table.loc[table["standardised_difference"].abs() > 0.5, "feature"].tolist()
    return {
        "table": table.to_dict("records"),
        "absent_inputs": absent,
        "large_shifts": shifted,
        "rule": "|standardised mean difference| > 0.5 counts as a large shift",
        "label_rate": {
            "internal": _r(pd.to_numeric(internal.patients["label"]).mean()),
            "external": _r(pd.to_numeric(external.patients["label"]).mean()),
        },
    }


def _compared_columns(
    inside: pd.DataFrame, outside: pd.DataFrame, inputs: list[str]
) -> list[tuple[str, pd.Series, pd.Series]]:
    """(name, internal values, external values) per input; a categorical input becomes one 0/1
    column per category (``blood_group=O+``), whose mean is the category's share and whose
    standardised difference is the usual one for a proportion."""
    out = []
    for name in inputs:
        a = inside[name] if name in inside else pd.Series(dtype=float)
        b = outside[name] if name in outside else pd.Series(dtype=float)
        if not any(isinstance(v.dtype, pd.CategoricalDtype) for v in (a, b)):
            out.append((name, pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")))
            continue
        texts = (category_text(v) for v in (*a.dropna().unique(), *b.dropna().unique()))
        labels = {text for text in texts if text is not None}
        for label in sorted(labels):
            out.append((f"{name}={label}", _indicator(a, label), _indicator(b, label)))
    return out


def _indicator(values: pd.Series, label: str) -> pd.Series:
    text = values.astype(object).map(category_text)
    return pd.Series(np.where(text.isna(), np.nan, (text == label) * 1.0), dtype="float64")


def _r(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


# --- contamination -------------------------------------------------------------------------------


def _contamination(internal: Any, external: Any) -> dict[str, Any] | None:
    if not len(internal.images) or not len(external.images):
        return None
    from deeppcos.audit.cross import cross_audit

    summary = cross_audit(external, internal).summary()
    shared = summary["images_of_a_with_a_copy_in_b"]
    summary["warning"] = (
        f"{shared} images of this cohort are copies of images the run was developed on: "
        "figures on them measure memory, not generalisation"
        if shared
        else None
    )
    return summary


# --- the run's own figures, and writing ---------------------------------------------------------


_INTERNAL_FIGURES = ("roc_auc", "pr_auc", "brier", "sensitivity")


def _internal_figures(predictor: Any) -> dict[str, Any]:
    """The run's own ROC AUC, PR AUC, Brier and sensitivity, out of fold and on the locked test
    part, from its model-card summary (``{"value", "ci"}`` each)."""
    from deeppcos.explain.card import model_card_summary

    card = model_card_summary(predictor)
    out: dict[str, Any] = {}
    for part in ("out_of_fold", "locked_test"):
        figures = card.get(part) or {}
        kept = {k: figures[k] for k in _INTERNAL_FIGURES if k in figures}
        if kept:
            out[part] = kept
    return out


def _write(folder: Path, result: dict[str, Any], predictions: pd.DataFrame) -> None:
    from deeppcos.evaluation.plots import plot_reliability, plot_roc
    from deeppcos.runs.csvsafe import write_csv

    write_csv(predictions, folder / ReportFiles.PREDICTIONS, index=False)
    write_csv(
        pd.DataFrame(result["case_mix"]["table"]), folder / ReportFiles.CASE_MIX, index=False
    )
    y, p = _labelled(predictions)
    plot_roc({"external": (y, p)}, folder / "roc.png", title=f"ROC, {result['cohort']}")
    plot_reliability({"external": (y, p)}, folder / "reliability.png", title="Reliability here")
    (folder / ReportFiles.METRICS).write_text(json.dumps(result, indent=1, default=str) + "\n")


def _model_card(run: Path, folder: Path, result: dict[str, Any]) -> None:
    """The section, in the external folder and in the run's model card (replacing an earlier
    section for the same cohort)."""
    section = _section(result)
    (folder / ReportFiles.MODEL_CARD).write_text(section, encoding="utf-8")
    card = Run(run).model_card_file
    if not card.is_file():
        return
    name = result["cohort"]
    start, end = SECTION_START.format(name=name), SECTION_END.format(name=name)
    text = card.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end) + "\n?", re.S)
    text = pattern.sub("", text).rstrip("\n") + f"\n\n{start}\n{section}{end}\n"
    card.write_text(text, encoding="utf-8")


def _section(result: dict[str, Any]) -> str:
    at = result["at_run_threshold"]
    cal = result["calibration"]
    cut = result["threshold_for_target_sensitivity"]
    mix = result["case_mix"]
    lines = [f"## External validation: {result['cohort']}", ""]
    contamination = result.get("contamination") or {}
    if contamination.get("warning"):
        lines += [f"**Warning:** {contamination['warning']}.", ""]
    lines += [
        f"- Patients: {result['patients']}, scored {result['scored']} "
        f"(label rate {mix['label_rate']['external']} here, {mix['label_rate']['internal']} in "
        "development).",
        f"- ROC AUC {with_ci(at['roc_auc'])}; PR AUC {with_ci(at['pr_auc'])}"
        + _internal_line(result.get("internal", {})),
        f"- Calibration in the large {with_ci(cal['in_the_large'])}, slope "
        f"{with_ci(cal['slope'])} (observed rate {cal['observed_rate']}, "
        f"mean predicted {cal['mean_predicted']}).",
        f"- At the run's threshold {cut['run_threshold']:.3f}: sensitivity "
        f"{with_ci(at['sensitivity'])}, specificity "
        f"{with_ci(at['specificity'])}; these data would need "
        f"{cut['threshold_here']:.3f} for {cut['target']:.0%} sensitivity.",
    ]
    if mix["absent_inputs"]:
        lines.append(
            f"- Model inputs absent here (scored as missing): {', '.join(mix['absent_inputs'])}."
        )
    if mix["large_shifts"]:
        lines.append(f"- Large case-mix shifts (|SMD| > 0.5): {', '.join(mix['large_shifts'])}.")
    lines.append("- Decision curve: decision_curve.png; case mix: case_mix.csv.")
    if result.get("recalibration"):
        lines += ["", *_recalibration_lines(result["recalibration"])]
    return "\n".join(lines) + "\n"


def _recalibration_lines(recal: dict[str, Any]) -> list[str]:
    split, held = recal["split"], recal["held_out"]
    fit, rest = split[FIT], split[HELD_OUT]
    before, after = held["before"], held["after"]
    cut = held["threshold_for_target_sensitivity"]
    coef = recal["coefficients"]

    def change(key: str) -> str:
        one, two = (part["calibration"][key] for part in (before, after))
        return f"{with_ci(one)} → {with_ci(two)}"

    def pair(key: str) -> str:
        return f"{with_ci(before[key])} → {with_ci(after[key])}"

    return [
        f"### Logistic recalibration, fitted on {recal['fraction']:.0%} of the scored patients",
        "",
        f"- Fitted on {fit['patients']} patients ({fit['positives']} positive), scored on the "
        f"held-out {rest['patients']} ({rest['positives']} positive); split by patient"
        f"{_linked_text(split)}, stratified by label, with the run's seed {split['seed']} (from "
        f"{split['seed_source']}); "
        f"the fitting patients are listed in {split['ids_file']}.",
        f"- Recalibrated risk: logit = {coef['intercept']:.3f} + {coef['slope']:.3f} × "
        "logit(risk).",
        f"- On the held-out part, before → after: calibration in the large "
        f"{change('in_the_large')}; slope {change('slope')}; Brier {pair('brier')}.",
        f"- At the run's threshold {before['threshold']:.3f}: sensitivity {pair('sensitivity')}, "
        f"specificity {pair('specificity')}.",
        f"- For {cut['target']:.0%} sensitivity after recalibration: threshold "
        f"{cut['chosen_on_fitting_part']:.3f} (chosen on the fitting part), giving sensitivity "
        f"{with_ci(cut['sensitivity'])} and specificity {with_ci(cut['specificity'])} on the "
        f"held-out part.",
        f"- ROC AUC on the held-out part {with_ci(held['discrimination']['roc_auc'])}, PR AUC "
        f"{with_ci(held['discrimination']['pr_auc'])}; {held['discrimination']['note']}.",
        f"- Reliability before and after: {recal['reliability_plot']}.",
    ]


def _internal_line(internal: dict[str, Any]) -> str:
    parts = []
    if "out_of_fold" in internal:
        parts.append(f"out-of-fold {with_ci(internal['out_of_fold'].get('roc_auc'))}")
    if "locked_test" in internal:
        parts.append(f"locked test {with_ci(internal['locked_test'].get('roc_auc'))}")
    return f" (internal ROC AUC: {', '.join(parts)})." if parts else "."


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "cohort"
