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
  cohort (:mod:`deeppcos.data.cross_audit`) — an external set that shares images measures
  memory, and the report says so first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.evaluation.metrics import classification_metrics, threshold_for_sensitivity
from deeppcos.evaluation.model_card import with_ci
from deeppcos.exceptions import SchemaError
from deeppcos.stats import bootstrap_interval

__all__ = ["external_validation", "net_benefit"]

DCA_THRESHOLDS = np.round(np.arange(0.01, 0.61, 0.01), 2)
N_BOOT = 1000
SECTION_START = "<!-- external validation: {name} -->"
SECTION_END = "<!-- end external validation: {name} -->"


def external_validation(
    run: Path | str,
    cohort_spec: Path | str,
    out: Path | str | None = None,
    *,
    seed: int = 0,
    check_contamination: bool = True,
) -> dict[str, Any]:
    """Score ``run`` on the cohort of ``cohort_spec`` and write the report (see module notes)."""
    from deeppcos.data.cohort import load_cohort
    from deeppcos.predictor import load_run

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
    folder = Path(out) if out else run / "external" / _folder_name(external.spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    result = {
        "run": str(run),
        "folder": str(folder),
        "cohort": external.spec.name,
        "cohort_spec": str(cohort_spec),
        "patients": len(external.patients),
        "contamination": _contamination(internal, external) if check_contamination else None,
        "scored": int(predictions["risk"].notna().sum()),
        "internal": _internal_figures(run),
        **_performance(predictions, predictor, seed),
        "case_mix": _case_mix(internal, external, _model_inputs(predictor), absent),
        "modalities": predictions["modalities"].value_counts().to_dict(),
    }
    result["net_benefit"] = _decision_curves(folder, predictions, run)
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
    logit = _logit(risk)
    estimate = {"in_the_large": _intercept(y, logit), "slope": _slope(y, logit)}
    rng = np.random.default_rng(seed)
    draws = {key: np.empty(N_BOOT) for key in estimate}
    for b in range(N_BOOT):
        rows = rng.integers(0, len(y), len(y))
        if y[rows].min() == y[rows].max():
            draws["in_the_large"][b] = draws["slope"][b] = np.nan
            continue
        draws["in_the_large"][b] = _intercept(y[rows], logit[rows])
        draws["slope"][b] = _slope(y[rows], logit[rows])
    out: dict[str, Any] = {
        "observed_rate": round(float(y.mean()), 4),
        "mean_predicted": round(float(risk.mean()), 4),
    }
    for key, value in estimate.items():
        interval = bootstrap_interval(value, draws[key], bounds=(-np.inf, np.inf))
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


def _intercept(y: np.ndarray, offset: np.ndarray) -> float:
    """Maximum-likelihood a in logit P(y) = a + offset (Newton's method; 1 parameter)."""
    a = 0.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-(a + offset)))
        step = (y - p).sum() / max((p * (1 - p)).sum(), 1e-12)
        a += step
        if abs(step) < 1e-10:
            break
    return float(a)


def _slope(y: np.ndarray, logit: np.ndarray) -> float:
    """b in logit P(y) = a + b·logit(risk), unpenalised."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=np.inf, max_iter=1000).fit(logit.reshape(-1, 1), y)  # unpenalised
    return float(model.coef_[0, 0])


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
    internal_file = run / "evaluation" / "test_predictions.csv"
    if internal_file.is_file():
        curves["internal (locked test part)"] = _labelled(pd.read_csv(internal_file))
    tables = {name: net_benefit(y, p, DCA_THRESHOLDS) for name, (y, p) in curves.items()}
    plot_decision_curves(tables, folder / "decision_curve.png")
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
    for name in inputs:
        a = (
            pd.to_numeric(inside[name], errors="coerce")
            if name in inside
            else pd.Series(dtype=float)
        )
        b = (
            pd.to_numeric(outside[name], errors="coerce")
            if name in outside
            else pd.Series(dtype=float)
        )
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
                "absent_here": name in absent,
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


def _r(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


# --- contamination -------------------------------------------------------------------------------


def _contamination(internal: Any, external: Any) -> dict[str, Any] | None:
    if not len(internal.images) or not len(external.images):
        return None
    from deeppcos.data.cross_audit import cross_audit

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


def _internal_figures(run: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    metrics = _read(run / "metrics.json")
    oof = (metrics.get("fusion") or {}).get("oof") or {}
    if oof:
        out["out_of_fold"] = {k: oof.get(k) for k in ("roc_auc", "roc_auc_ci", "pr_auc", "brier")}
    evaluation = _read(run / "evaluation" / "metrics.json")
    fusion = evaluation.get("fusion") or {}
    if fusion:
        out["locked_test"] = {k: fusion.get(k) for k in ("roc_auc", "pr_auc", "sensitivity")}
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write(folder: Path, result: dict[str, Any], predictions: pd.DataFrame) -> None:
    from deeppcos.csvsafe import write_csv
    from deeppcos.evaluation.plots import plot_reliability, plot_roc

    write_csv(predictions, folder / "predictions.csv", index=False)
    write_csv(pd.DataFrame(result["case_mix"]["table"]), folder / "case_mix.csv", index=False)
    y, p = _labelled(predictions)
    plot_roc({"external": (y, p)}, folder / "roc.png", title=f"ROC, {result['cohort']}")
    plot_reliability({"external": (y, p)}, folder / "reliability.png", title="Reliability here")
    (folder / "metrics.json").write_text(json.dumps(result, indent=1, default=str) + "\n")


def _model_card(run: Path, folder: Path, result: dict[str, Any]) -> None:
    """The section, in the external folder and in the run's model card (replacing an earlier
    section for the same cohort)."""
    section = _section(result)
    (folder / "model_card.md").write_text(section, encoding="utf-8")
    card = run / "evaluation" / "model_card.md"
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
    return "\n".join(lines) + "\n"


def _internal_line(internal: dict[str, Any]) -> str:
    parts = []
    if "out_of_fold" in internal:
        oof = internal["out_of_fold"]
        parts.append(
            f"out-of-fold {with_ci({'value': oof.get('roc_auc'), 'ci': oof.get('roc_auc_ci')})}"
        )
    if "locked_test" in internal:
        parts.append(f"locked test {with_ci(internal['locked_test'].get('roc_auc'))}")
    return f" (internal ROC AUC: {', '.join(parts)})." if parts else "."


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "cohort"
