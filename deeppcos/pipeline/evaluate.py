"""``deeppcos evaluate RUN``: score the locked test part once, with confidence intervals, plots,
subgroups and a model card, written into ``RUN/evaluation/``.

The test part was never seen by training, tuning, fusion, calibration or the threshold choice.
It is scored once: a second call returns the stored result (``force`` recomputes it, and says so
in the result — ``rescored`` is true when an earlier evaluation was replaced — so a re-scored
test set is never silent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.evaluation import plots
from deeppcos.evaluation.metrics import (
    binary_confusion_matrix,
    binary_metrics,
    classification_metrics,
)
from deeppcos.evaluation.model_card import write_model_card
from deeppcos.evaluation.subgroups import age_band, bmi_band, subgroup_metrics
from deeppcos.exceptions import RunError
from deeppcos.explain.wording import CohortWords, run_words
from deeppcos.fusion.stage import fusion_method
from deeppcos.inference.predictor import Predictor, load_run
from deeppcos.runs.csvsafe import write_csv
from deeppcos.runs.folder import publish_folder, run_title, staging_folder
from deeppcos.runs.layout import ReportFiles
from deeppcos.runs.reader import Run


def intended_use(words: CohortWords | None = None) -> str:
    """The model card's intended use, in the cohort's words (its label and images)."""
    words = words or CohortWords()
    if words.pcos and words.image_modality.lower() == "ultrasound":
        source = "ovarian ultrasound and laboratory results"
    else:
        source = f"{words.images} and {words.table}"
    return (
        f"Research and decision support for clinicians assessing {words.label} from {source}; "
        "a flag to look closer, tuned for high sensitivity. It is decision support, not a "
        "diagnosis, and is not validated for clinical use."
    )


INTENDED_USE = intended_use()


def evaluate_run(run: Path | str, *, force: bool = False) -> dict[str, Any]:
    folder = Run(Path(run))
    run = folder.path
    stored = folder.evaluation_metrics_file
    if stored.is_file() and not force:
        return json.loads(stored.read_text(encoding="utf-8"))
    rescored = stored.is_file()
    predictor = load_run(run)
    assert predictor.threshold is not None  # load_run always sets it (fusion/decision.json)
    cohort = predictor.cohort()
    split = folder.split()
    if not split.test_ids:
        raise RunError(f"{run}: the run has no locked test part (test_fraction was 0)")
    predictions = predictor.predict(cohort, split.test_ids)
    labels = cohort.patients.set_index("patient_id")["label"]
    predictions.insert(1, "label", labels.reindex(predictions["patient_id"]).to_numpy())
    result = _metrics(predictor, predictions, rescored)
    severity = _severity(run, predictor, predictions)
    if severity is not None:
        result["severity"] = severity
    partial = staging_folder(folder.evaluation_folder)
    write_csv(predictions, partial / ReportFiles.TEST_PREDICTIONS, index=False)
    result["subgroups"] = _subgroups(cohort.patients, predictions, predictor.threshold)
    _plots(partial, predictions, predictor)
    if severity is not None:
        plots.plot_confusion_matrix(
            np.array(severity["confusion"]),
            partial / "severity_confusion.png",
            labels=severity["labels"],
            title="Severity grade, locked test part",
        )
    _card(partial, run, cohort, predictor, result)
    (partial / ReportFiles.METRICS).write_text(json.dumps(result, indent=1, default=str) + "\n")
    publish_folder(partial, folder.evaluation_folder)
    return result


def _metrics(predictor: Predictor, predictions: pd.DataFrame, rescored: bool) -> dict[str, Any]:
    scored = predictions["risk"].notna() & predictions["label"].notna()
    y = predictions.loc[scored, "label"].astype(int).to_numpy()
    risk = predictions.loc[scored, "risk"].to_numpy()
    seed = predictor.config.seed
    assert predictor.threshold is not None  # a loaded run's
    fusion = classification_metrics(y, risk, predictor.threshold, seed=seed)
    raw = predictions.loc[scored, "probability"].to_numpy()
    # ECE does not depend on the threshold; 0.5 is only there to satisfy the signature.
    raw_ece = classification_metrics(y, raw, 0.5, seed=seed)["ece"]
    return {
        "test_patients": len(predictions),
        "scored": int(scored.sum()),
        "no_prediction": int(predictions["risk"].isna().sum()),
        "rescored": rescored,
        "threshold": predictor.threshold,
        "fusion_method": predictor.fusion_method,
        "fusion": fusion,
        "calibration_ece": {"before": raw_ece, "after": fusion["ece"]},
        "fusion_uncalibrated": binary_metrics(
            y, predictions.loc[scored, "probability"].to_numpy(), seed=seed
        ),
        "branches": {
            name: binary_metrics(y, predictions.loc[scored, f"p_{name}"].to_numpy(), seed=seed)
            for name in predictor.branches
        },
        "modalities": predictions["modalities"].value_counts().to_dict(),
        "routes": {
            route: predictor.router.describe(route, predictor.fusion_method)
            for route in predictor.router.routes
        },
    }


def _severity(run: Path, predictor: Predictor, predictions: pd.DataFrame) -> dict | None:
    """Quadratic weighted kappa and macro F1 of the reported grades (``none`` unless flagged)
    on the graded test patients, against the grades training used (the cohort's column or the
    criteria labeller's, stored in ``severity/grades.csv``); the head's own figures on the
    patients labelled PCOS; and the decision against the grade."""
    if predictor.severity is None:
        return None
    from deeppcos.evaluation.metrics import ordinal_metrics
    from deeppcos.pipeline.training import presence_agreement

    levels = predictor.severity_levels()
    truth = Run(run).severity_grades()
    true = truth.set_index("patient_id")["severity"].reindex(predictions["patient_id"])
    predictions.insert(2, "severity_true", true.to_numpy())
    graded = true.notna().to_numpy() & predictions["severity"].notna().to_numpy()
    if graded.sum() == 0:
        return {"note": "no graded patient in the locked test part", "n": 0}
    kind = pd.CategoricalDtype(levels, ordered=True)
    seed = predictor.config.seed
    result = ordinal_metrics(
        true[graded].astype(kind).reset_index(drop=True),
        predictions.loc[graded, "severity"].astype(kind).reset_index(drop=True),
        len(levels),
        seed=seed,
    )
    return {
        **result,
        "source": predictor.severity_info.get("source"),
        "given_pcos": _given_pcos(predictions, true, levels, seed, run_words(run).label),
        "presence_agreement": presence_agreement(
            predictions["severity"], predictions["decision"], levels
        ),
    }


def _given_pcos(
    predictions: pd.DataFrame, true: pd.Series, levels: list[str], seed: int, label: str = "PCOS"
) -> dict[str, Any]:
    """The head's most probable grade given the condition (the cohort's ``label``: PCOS) against
    the truth, on the test patients labelled with it and graded (whatever the decision)."""
    from deeppcos.evaluation.metrics import ordinal_metrics

    pcos = levels[1:]
    # A risk of 0 (isotonic) or none at all leaves no grade shares to read the head from.
    scored = (predictions["risk"] > 0).fillna(False).to_numpy()
    rows = (predictions["label"] == 1).to_numpy() & true.isin(pcos).to_numpy() & scored
    if not rows.any():
        return {"note": f"no test patient labelled {label} with a {label} grade", "n": 0}
    columns = [f"p_severity_{g}" for g in pcos]
    best = predictions.loc[rows, columns].to_numpy(dtype="float64").argmax(axis=1)
    kind = pd.CategoricalDtype(pcos, ordered=True)
    return ordinal_metrics(
        true[rows].astype(kind).reset_index(drop=True),
        pd.Series(pd.Categorical.from_codes(best, dtype=kind)),
        len(pcos),
        seed=seed,
    )


def _subgroups(
    patients: pd.DataFrame, predictions: pd.DataFrame, threshold: float
) -> list[dict[str, Any]]:
    table = predictions.merge(patients, on="patient_id", how="left", suffixes=("", "_cohort"))
    columns = []
    for source, band, name in (
        ("age_years", age_band, "age band"),
        ("patient_age", age_band, "age band"),
        ("bmi_kg_m2", bmi_band, "BMI band"),
    ):
        if source in table and name not in table:
            table[name] = band(table[source])
            columns.append(name)
    if "group" in table:
        columns.append("group")
    if predictions["modalities"].nunique() > 1:  # how each route does: a check on the routing
        columns.append("modalities")
    table = table[table["risk"].notna() & table["label"].notna()]
    if not columns or table.empty:
        return []
    table = table.assign(label=table["label"].astype(int))
    frame = subgroup_metrics(table, columns, "label", "risk", threshold, n_boot=500)
    return json.loads(frame.to_json(orient="records"))


def _plots(folder: Path, predictions: pd.DataFrame, predictor: Predictor) -> None:
    scored = predictions[predictions["risk"].notna() & predictions["label"].notna()]
    y = scored["label"].astype(int).to_numpy()
    curves = {name: (y, scored[f"p_{name}"].to_numpy()) for name in predictor.branches}
    # A branch scores only the patients with its modality; its curve uses just those.
    curves = {k: (yy[~np.isnan(p)], p[~np.isnan(p)]) for k, (yy, p) in curves.items()}
    curves["fusion (calibrated)"] = (y, scored["risk"].to_numpy())
    assert predictor.threshold is not None  # a loaded run's
    threshold = {"fusion (calibrated)": predictor.threshold}
    plots.plot_roc(curves, folder / "roc.png", thresholds=threshold, title="ROC, locked test part")
    plots.plot_pr(curves, folder / "pr.png", thresholds=threshold, title="PR, locked test part")
    plots.plot_reliability(
        {
            "uncalibrated": (y, scored["probability"].to_numpy()),
            "calibrated": (y, scored["risk"].to_numpy()),
        },
        folder / "calibration.png",
    )
    metrics = classification_metrics(y, scored["risk"].to_numpy(), predictor.threshold, n_boot=0)
    plots.plot_confusion_matrix(
        binary_confusion_matrix(metrics), folder / "confusion.png", labels=["negative", "positive"]
    )
    plots.plot_confidence_histograms(
        y, scored["risk"].to_numpy(), folder / "confidence.png", threshold=predictor.threshold
    )


def _label_noise_limits(predictor: Predictor) -> list[str]:
    """What the split set aside as label noise (``split.label_noise: exclude``): every figure of
    the card describes the patients that remain."""
    noise = predictor.metrics.details.get("label_noise") if predictor.metrics else None
    if not noise:
        return []
    groups = noise["groups"]
    consistency = ", ".join(f"{g['label_consistency']:.2f}" for g in groups)
    return [
        f"{noise['patients_set_aside']:,} patients in {len(groups)} duplicate group(s) were set "
        "aside before the split (split.label_noise: exclude): inside each group, near-copies "
        f"carry opposite labels about as often as chance (label consistency {consistency}), "
        "so no image model can rank them. They were neither trained on nor evaluated: every "
        "figure here describes the remaining patients. The run's load report lists each one."
    ]


def _routing_limits(predictor: Predictor, words: CohortWords) -> list[str]:
    """How patients missing a modality are scored, and whether missingness differs by label."""
    from deeppcos.fusion.routing import missingness_sentence

    if len(predictor.router.routes) < 2:
        return []
    text = [
        f"A missing modality is not evidence: a patient without {words.images} is scored by the "
        f"tabular model alone and one without {words.table} by the image model alone, each "
        "with its own calibrator; only patients with both are scored by the fusion."
    ]
    fusion = predictor.metrics.fusion if predictor.metrics is not None else None
    nouns = {"image": words.images, "tabular": words.table}
    for modality, entry in (fusion.missing_modalities if fusion else {}).items():
        text.append(missingness_sentence(modality, entry, words.label, noun=nouns.get(modality)))
    return text


def _severity_limits(predictor: Predictor, words: CohortWords | None = None) -> list[str]:
    info = predictor.severity_info
    if not info:
        return []
    words = words or CohortWords()
    label, no_label = words.label, words.no_label
    levels = predictor.severity_levels()
    text = (
        f"Severity grade ({' < '.join(levels)}): '{levels[0]}' unless the decision is positive; "
        f"a flagged patient gets the most probable grade given {label} from an ordinal head "
        f"trained on the development patients labelled {label}. P({no_label}) = 1 − risk and "
        f"P(grade) = risk × P(grade | {label}), so presence and severity never disagree"
    )
    if info.get("source") == "criteria":
        text += (
            f"; the training grades were derived by the Rotterdam-criteria labeller "
            f"({info.get('guideline')}) from the phenotype, a convention, not a clinical grading; "
            f"the columns it read were removed from the head's inputs: "
            f"{', '.join(info.get('excluded_inputs', [])) or 'none'}"
        )
        if not words.pcos:
            text += f" (a PCOS rule: this cohort's label is {label}, not PCOS)"
    conflicts = info.get("label_grade_conflicts") or {}
    if any(conflicts.values()):
        text += (
            f". In the development data {conflicts.get('pcos_label_graded_none', 0)} patients "
            f"labelled {label} were graded '{levels[0]}' and "
            f"{conflicts.get('no_pcos_label_with_pcos_grade', 0)} without {label} had a "
            f"{label} grade; the head was not trained on them"
        )
    return [text + "."]


def _branch_details(predictor: Predictor, words: CohortWords | None = None) -> dict[str, str]:
    """What each branch is, in a line (the model card's "Model details")."""
    out = {}
    tabular = predictor.branches.get("tabular")
    if tabular is not None:
        out["Tabular branch"] = (
            f"XGBoost, {getattr(tabular, 'n_trees_', '?')} trees of depth "
            f"{tabular.params.max_depth}, on {len(tabular.feature_names_)} inputs"
        )
    image = predictor.branches.get("image")
    if image is not None:
        p = image.params
        backbone = f"{p.backbone}" + (f" (width {p.width:g})" if p.backbone == "mobilenet" else "")
        weights = {None: "random initialisation"}.get(p.weights, f"{p.weights} weights")
        how = {
            "frozen": f"frozen embeddings ({p.tta} view(s)) + a logistic head (C = {p.head_c:g})",
            "finetune": "a new head, then the top blocks fine-tuned",
            "scratch": "trained end to end from scratch",
        }[p.mode or "scratch"]
        out["Image branch"] = (
            f"{backbone}, {weights}, {p.image_size} px, on the {(words or CohortWords()).images}: "
            f"{how}"
        )
    if predictor.severity is not None:
        words = words or CohortWords()
        grades = ", ".join(predictor.severity_levels()[1:])
        out["Severity"] = (
            f"ordinal head for the grade given {words.label} ({grades}), combined with the "
            "presence risk"
            + (
                f"; guideline {predictor.config.severity.guideline}"
                if words.pcos or predictor.severity_info.get("source") == "criteria"
                else ""
            )
        )
    return out


def _summary_rows(summary: dict[str, Any], words: CohortWords) -> dict[str, Any]:
    """The cohort summary as the card shows it: a non-PCOS cohort's card leaves out the PCOS
    rows that say nothing about it (``pcos: False``, no ultrasound-derived columns)."""
    if words.pcos:
        return summary
    return {
        k: v
        for k, v in summary.items()
        if not (k == "pcos" and v is False) and not (k == "ultrasound_features" and not v)
    }


def _card(folder: Path, run: Path, cohort: Any, predictor: Predictor, result: dict) -> None:
    from deeppcos.audit.checks import audit_cohort

    findings = [
        {"severity": f.severity, "check": f.check, "title": f.title}
        for f in audit_cohort(cohort, seed=predictor.config.seed).findings
        if f.severity in ("warning", "high")
    ]
    words = run_words(run, cohort.spec)
    write_model_card(
        folder / ReportFiles.MODEL_CARD,
        run_name=run_title(run, predictor.record),
        cohort_summary=_summary_rows(cohort.summary(), words),
        provenance=cohort.spec.description or cohort.spec.name,
        intended_use=intended_use(words),
        label=words.label,
        metrics={
            f"{predictor.fusion_method} fusion (calibrated)": result["fusion"],
            **result["branches"],
            **(
                {"severity grade": result["severity"]}
                if "quadratic_kappa" in result.get("severity", {})
                else {}
            ),
        },
        subgroups=result["subgroups"],
        audit_findings=findings,
        details=_branch_details(predictor, words),
        limits=[
            f"Decision threshold {predictor.threshold:.3f} was chosen on out-of-fold development "
            "predictions for the target sensitivity; sensitivity on new data may be lower.",
            *_label_noise_limits(predictor),
            fusion_method(predictor.fusion_method).card_sentence,
            *_routing_limits(predictor, words),
            *_severity_limits(predictor, words),
        ],
    )
