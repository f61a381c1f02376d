"""Data helpers behind the pages: error kinds, metrics at a threshold, cohort summaries, the
lab form's features and range checks. No Streamlit here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.evaluation.metrics import METRICS, classification_metrics
from deeppcos.knowledge.ranges import catalog_rule, format_range

# The order the Patient page offers them in: the costly mistakes first.
ERROR_KINDS = ("false negative", "false positive", "true positive", "true negative")
METRIC_NAMES = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "accuracy": "accuracy",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1",
    "brier": "Brier score",
    "ece": "ECE (calibration error)",
}


def read_predictions(path: Any) -> pd.DataFrame:
    """``test_predictions.csv`` with string ids and a nullable boolean decision."""
    frame = pd.read_csv(path, dtype={"patient_id": str})
    if "decision" in frame:
        frame["decision"] = frame["decision"].map(_as_bool).astype("boolean")
    return frame


def _as_bool(value: Any) -> Any:
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower(), pd.NA)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return pd.NA
    return bool(value)


def scored(predictions: pd.DataFrame) -> pd.DataFrame:
    """Rows with both a label and a calibrated risk."""
    keep = predictions["risk"].notna() & predictions["label"].notna()
    return predictions[keep]


def error_kind(label: int, decision: bool) -> str:
    if label == 1:
        return "true positive" if decision else "false negative"
    return "false positive" if decision else "true negative"


def patients_by_kind(predictions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Scored test patients per kind, in ``ERROR_KINDS`` order; inside a kind the most
    confident call first (a false negative with the lowest risk leads)."""
    frame = scored(predictions).copy()
    frame = frame[frame["decision"].notna()]
    frame["kind"] = [
        error_kind(int(y), bool(d)) for y, d in zip(frame["label"], frame["decision"], strict=True)
    ]
    out = {}
    for kind in ERROR_KINDS:
        part = frame[frame["kind"] == kind]
        ascending = kind in ("false negative", "true negative")
        out[kind] = part.sort_values("risk", ascending=ascending).reset_index(drop=True)
    return out


def at_threshold(predictions: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Counts and rates of the calibrated risk at ``threshold`` (no bootstrap: it is live)."""
    frame = scored(predictions)
    y = frame["label"].astype(int).to_numpy()
    p = frame["risk"].to_numpy(dtype="float64")
    metrics = classification_metrics(y, p, threshold, n_boot=0)
    out = {name: metrics[name]["value"] for name in METRICS}
    out.update({k: metrics[k] for k in ("tp", "fp", "tn", "fn", "n", "positives")})
    out["threshold"] = float(threshold)
    return out


def metrics_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per metric of ``classification_metrics``: value and its 95% interval."""
    rows = []
    for key in METRICS:
        entry = metrics.get(key) or {}
        ci = entry.get("ci") or [None, None]
        rows.append(
            {
                "metric": METRIC_NAMES[key],
                "value": entry.get("value"),
                "95% CI low": ci[0],
                "95% CI high": ci[1],
                "interval": entry.get("ci_method", "bootstrap" if entry.get("ci") else ""),
            }
        )
    return pd.DataFrame(rows)


def branches_table(result: dict[str, Any]) -> pd.DataFrame:
    """Fusion against each branch alone on the locked test part (ROC AUC, PR AUC, Brier)."""
    fusion = result.get("fusion", {})
    rows = [
        {
            "model": f"{result.get('fusion_method', '')} fusion (calibrated)".strip(),
            "n": fusion.get("n"),
            "ROC AUC": _value(fusion.get("roc_auc")),
            "ROC AUC 95% CI": _ci_text(_ci(fusion.get("roc_auc"))),
            "PR AUC": _value(fusion.get("pr_auc")),
            "Brier": _value(fusion.get("brier")),
        }
    ]
    for name, entry in result.get("branches", {}).items():
        rows.append(
            {
                "model": f"{name} branch alone",
                "n": entry.get("n"),
                "ROC AUC": entry.get("roc_auc"),
                "ROC AUC 95% CI": _ci_text(entry.get("roc_auc_ci")),
                "PR AUC": entry.get("pr_auc"),
                "Brier": entry.get("brier"),
            }
        )
    return pd.DataFrame(rows)


def _value(entry: Any) -> Any:
    return entry.get("value") if isinstance(entry, dict) else entry


def _ci(entry: Any) -> Any:
    return entry.get("ci") if isinstance(entry, dict) else None


def _ci_text(ci: Any) -> str:
    if not ci or None in ci:
        return "–"
    return f"{ci[0]:.3f}–{ci[1]:.3f}"


def subgroup_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The evaluation's subgroup records as a readable table (value, interval, gap)."""
    rows = []
    for r in records:
        row = {"subgroup": r.get("group"), "level": r.get("level"), "n": r.get("n")}
        row["positives"] = r.get("positives")
        for key in ("roc_auc", "sensitivity", "specificity"):
            name = METRIC_NAMES[key]
            row[name] = r.get(key)
            row[f"{name} 95% CI"] = _ci_text([r.get(f"{key}_low"), r.get(f"{key}_high")])
            row[f"{name} gap"] = r.get(f"{key}_gap")
        row["note"] = r.get("note", "")
        rows.append(row)
    return pd.DataFrame(rows)


def oof_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Out-of-fold figures from training's ``metrics.json`` (for a run not evaluated yet)."""
    rows = []
    for name, entry in metrics.get("branches", {}).items():
        oof = entry.get("oof", {})
        rows.append(_oof_row(f"{name} branch", oof))
    fusion = metrics.get("fusion", {})
    if fusion.get("oof"):
        rows.append(_oof_row(f"{fusion.get('method', '')} fusion (calibrated)", fusion["oof"]))
    return pd.DataFrame(rows)


def _oof_row(name: str, oof: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": name,
        "n": oof.get("n"),
        "ROC AUC": _value(oof.get("roc_auc")),
        "ROC AUC 95% CI": _ci_text(oof.get("roc_auc_ci") or _ci(oof.get("roc_auc"))),
        "PR AUC": _value(oof.get("pr_auc")),
        "Brier": _value(oof.get("brier")),
    }


# --- cohort ------------------------------------------------------------------------------------


def label_counts(patients: pd.DataFrame, label_name: str) -> pd.DataFrame:
    labels = patients["label"] if "label" in patients else pd.Series(dtype="Int8")
    names = {1: label_name, 0: f"no {label_name}"}
    counts = labels.map(lambda v: names.get(int(v)) if pd.notna(v) else "unlabelled")
    table = counts.value_counts().rename_axis("label").reset_index(name="patients")
    table["share"] = table["patients"] / max(len(patients), 1)
    return table


def severity_counts(patients: pd.DataFrame) -> pd.DataFrame:
    """Patients per severity grade in the grades' own order (mild before moderate), then the
    ungraded; empty when the cohort has no grades."""
    if "severity" not in patients or patients["severity"].isna().all():
        return pd.DataFrame(columns=["grade", "patients"])
    grades = patients["severity"]
    if not isinstance(grades.dtype, pd.CategoricalDtype):
        grades = grades.astype("category")
    table = grades.value_counts(sort=False).rename_axis("grade").reset_index(name="patients")
    table["grade"] = table["grade"].astype(str)
    ungraded = int(grades.isna().sum())
    if ungraded:
        table.loc[len(table)] = ["ungraded", ungraded]
    return table


def missingness(patients: pd.DataFrame, features: Iterable[str]) -> pd.DataFrame:
    """Fraction missing per feature, most missing first."""
    columns = [c for c in features if c in patients]
    share = patients[columns].isna().mean() if columns else pd.Series(dtype="float64")
    table = share.rename("missing").rename_axis("feature").reset_index()
    return table.sort_values("missing", ascending=False, ignore_index=True)


def correlations(patients: pd.DataFrame, features: Iterable[str], limit: int = 30) -> pd.DataFrame:
    """Spearman correlations of the features at most half missing (``limit`` most complete)."""
    columns = [c for c in features if c in patients and patients[c].notna().mean() >= 0.5]
    # A category's labels have no order to rank: Spearman is for numbers only.
    columns = [c for c in columns if pd.api.types.is_numeric_dtype(patients[c])]
    columns = [c for c in columns if patients[c].nunique(dropna=True) > 1]
    columns = sorted(columns, key=lambda c: patients[c].isna().mean())[:limit]
    if len(columns) < 2:
        return pd.DataFrame()
    return patients[columns].astype("float64").corr(method="spearman", min_periods=10)


def gallery_rows(
    images: pd.DataFrame,
    patients: pd.DataFrame,
    labels: list[Any] | None = None,
    sides: list[str] | None = None,
    groups: list[str] | None = None,
) -> pd.DataFrame:
    """Images with their patient's label and site, filtered by label, side and site."""
    extra = [c for c in ("label", "group") if c in patients]
    table = images.merge(patients[["patient_id", *extra]], on="patient_id", how="left")
    if labels:
        table = table[table["label"].isin(labels)] if "label" in table else table
    if sides and "side" in table:
        table = table[table["side"].astype("string").isin(sides)]
    if groups and "group" in table:
        table = table[table["group"].astype("string").isin(groups)]
    return table.reset_index(drop=True)


# --- the lab form --------------------------------------------------------------------------------


def form_features(feature_names: Iterable[str]) -> list[str]:
    """The inputs a person types: the model's features less those computed from their parts
    (BMI from weight and height, ratios, HOMA-IR, …) when the parts are inputs too."""
    from deeppcos.tabular.features import DERIVED_BY_NAME

    names = list(feature_names)
    present = set(names)
    return [
        n
        for n in names
        if not (n in DERIVED_BY_NAME and all(p in present for p in DERIVED_BY_NAME[n].parts))
    ]


def unit_of(name: str) -> str:
    """The catalog's unit as people write it (µIU/mL, not u[IU]/mL); "" for flags and ratios."""
    from deeppcos.explain.wording import display_unit

    unit = display_unit(name)
    return "" if unit in ("1", "") else unit


def range_text(name: str, pcos: bool = True) -> str:
    """The range a value of ``name`` is checked against ('' when none), for a PCOS cohort
    (its catalog range) or another (the catalog's plausible limit only)."""
    rule = catalog_rule(name, pcos=pcos)
    return "" if rule is None else format_range(rule.low, rule.high, unit_of(name))


def range_warning(name: str, value: float | None, pcos: bool = True) -> str | None:
    """A warning naming the plausible range when ``value`` lies outside it (else None)."""
    rule = catalog_rule(name, pcos=pcos)
    if value is None or rule is None or not rule.outside(value):
        return None
    unit = unit_of(name)
    shown = f"{value:g}" + (f" {unit}" if unit else "")
    from deeppcos.explain.wording import feature_label

    return (
        f"{feature_label(name)}: {shown} is outside the plausible range "
        f"{range_text(name, pcos)}; "
        "check the unit and the keying (the model will treat it as missing)."
    )


def patient_table(patient_id: str, values: dict[str, float | str | None], features: list[str]):
    """A one-row patients table in canonical column names; blanks are missing values (the
    loader, not this table, sets out-of-range values missing and reports them); a categorical
    input keeps its label."""
    row: dict[str, Any] = {"patient_id": patient_id}
    for name in features:
        value = values.get(name)
        row[name] = np.nan if value is None else value if isinstance(value, str) else float(value)
    return pd.DataFrame([row])
