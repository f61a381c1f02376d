"""Check 5: tabular leakage (columns that give the label away)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from deeppcos.audit.base import MOSTLY_MISSING, Finding, _Context, worse
from deeppcos.audit.probes import (
    ModelKind,
    fmt_auc,
    grouped_folds,
    probe_auc,
    probe_figures,
    severity_for_auc,
)
from deeppcos.audit.rules import (
    TABULAR_HIGH,
    TABULAR_WARNING,
    Severity,
)
from deeppcos.knowledge.catalog import ultrasound_features

# --- check 5: tabular leakage -----------------------------------------------------------------


def _check_tabular(ctx: _Context, probes: list[dict[str, Any]]) -> list[Finding]:
    columns = list(ctx.cohort.feature_columns)
    if not columns:
        return []
    patients = ctx.cohort.patients.reset_index(drop=True)
    labels = patients["label"] if "label" in patients else pd.Series(pd.NA, index=patients.index)
    labelled = labels.notna().to_numpy()
    y = labels[labelled].astype(int).to_numpy()
    groups = patients.loc[labelled, "patient_id"].astype(str).map(ctx.groups).to_numpy()
    folds = grouped_folds(y, groups, ctx.seed) if labelled.any() else []
    ultrasound = set(ultrasound_features())
    findings, aucs = [], {}
    categorical = set(ctx.cohort.categorical_columns)
    for column in columns:
        values = (
            patients[column].astype(object)
            if column in categorical
            else pd.to_numeric(patients[column], errors="coerce").astype("float64")
        )
        finding, auc = _tabular_column(
            ctx, column, values, labelled, y, groups, folds, column in ultrasound, probes
        )
        aucs[column] = auc
        if finding is not None:
            findings.append(finding)
    findings += _tabular_summary(
        ctx, patients, columns, labelled, y, groups, folds, aucs, ultrasound, probes
    )
    return findings


def _tabular_column(
    ctx: _Context,
    column: str,
    values: pd.Series,
    labelled: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    folds: list,
    is_ultrasound: bool,
    probes: list[dict[str, Any]],
) -> tuple[Finding | None, float | None]:
    missing = float(values.isna().mean())
    figures: dict[str, Any] = {
        "missing_fraction": round(missing, 4),
        "ultrasound_derived": is_ultrasound,
    }
    notes: list[str] = []
    severity: Severity = "ok"
    if values.nunique() <= 1:
        probes.append(
            {
                "kind": "tabular",
                "property": column,
                "auc": None,
                "severity": "info",
                "note": "constant",
            }
        )
        return Finding(
            f"tabular.{column}",
            "info",
            f"{column} is constant",
            f"Column {column!r} has a single value (or none): it carries no information; drop it.",
            figures,
        ), None
    auc = None
    if folds:
        categorical = values.dtype == object
        x = values[labelled]
        if categorical:  # a probe on the categories themselves; missing is one of them
            x = x.where(x.notna(), "(missing)")
        kind: ModelKind = "categorical" if categorical else "numeric"
        probe = probe_auc(x.to_numpy().reshape(-1, 1), y, groups, folds, kind, ctx.seed)
        auc = probe.auc
        severity = severity_for_auc(probe.auc, TABULAR_HIGH, TABULAR_WARNING)
        figures |= probe_figures(probe)
        probes.append(
            {
                "kind": "tabular",
                "property": column,
                **probe_figures(probe),
                "severity": severity,
                "ultrasound_derived": is_ultrasound,
            }
        )
        if severity == "high":
            notes.append(
                f"Alone it predicts the label with {fmt_auc(probe)}: it nearly encodes "
                "the label. Is it derived from the diagnosis (recorded after it, or part "
                "of its definition)? If so, leave it out of the model."
            )
        elif severity == "warning":
            notes.append(
                f"Alone it predicts the label with {fmt_auc(probe)}: a strong single "
                "predictor. Check it is a cause, not a consequence, of the diagnosis."
            )
    if missing > MOSTLY_MISSING:
        severity = worse(severity, "warning")
        notes.append(
            f"{missing:.0%} of its values are missing; imputation will dominate it, "
            "and whether it was measured may itself follow the diagnosis."
        )
    if is_ultrasound:
        severity = worse(severity, "info")
        notes.append(
            "It is read off the ultrasound scan: a model that sees it is partly reading "
            "the scan, so an image+table model double-counts the scan and a table-only "
            "model is not image-free. Evaluate with and without it."
        )
    if not notes:
        return None, auc
    title = f"{column}: " + ("; ".join(_tabular_tags(severity, missing, is_ultrasound, auc)))
    return Finding(f"tabular.{column}", severity, title, " ".join(notes), figures), auc


def _tabular_tags(
    severity: Severity, missing: float, is_ultrasound: bool, auc: float | None
) -> list[str]:
    tags = []
    if auc is not None and auc >= TABULAR_WARNING:
        tags.append(f"single-column AUC {auc:.2f}")
    if missing > MOSTLY_MISSING:
        tags.append(f"{missing:.0%} missing")
    if is_ultrasound:
        tags.append("ultrasound-derived")
    return tags or [severity]


def _tabular_summary(
    ctx: _Context,
    patients: pd.DataFrame,
    columns: list[str],
    labelled: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    folds: list,
    aucs: dict[str, float | None],
    ultrasound: set[str],
    probes: list[dict[str, Any]],
) -> list[Finding]:
    ranked = sorted(
        ((c, a) for c, a in aucs.items() if a is not None and not math.isnan(a)),
        key=lambda item: -item[1],
    )
    figures: dict[str, Any] = {"single_column_auc": {c: round(a, 4) for c, a in ranked}}
    if not folds:
        return [
            Finding(
                "tabular.summary",
                "info",
                "Tabular probes skipped",
                "Each class needs labelled patients from at least two groups.",
                figures,
            )
        ]
    present = [c for c in columns if c in ultrasound]
    # Categories as their codes here: the trees of the joint probe split them like any value.
    matrix = (
        patients.loc[labelled, columns]
        .apply(lambda c: c.cat.codes.where(c.notna()) if c.dtype == "category" else c)
        .apply(pd.to_numeric, errors="coerce")
        .astype("float64")
    )
    everything = probe_auc(matrix.to_numpy(), y, groups, folds, "mixed", ctx.seed)
    figures["all_columns"] = probe_figures(everything)
    text = [f"All {len(columns)} feature columns together: {fmt_auc(everything)}."]
    if ranked:
        top = ", ".join(f"{c} {a:.2f}" for c, a in ranked[:5])
        text.append(f"Strongest single columns: {top}.")
    findings = [
        Finding(
            "tabular.summary",
            "info",
            f"Tabular features together: {fmt_auc(everything)}",
            " ".join(text),
            figures,
        )
    ]
    without = [c for c in columns if c not in ultrasound]
    if present and without:
        reduced = probe_auc(matrix[without].to_numpy(), y, groups, folds, "mixed", ctx.seed)
        probes.append(
            {
                "kind": "tabular",
                "property": "all_without_ultrasound",
                **probe_figures(reduced),
                "severity": "info",
            }
        )
        drop = everything.auc - reduced.auc
        severity: Severity = "warning" if drop >= 0.05 else "info"
        findings.append(
            Finding(
                "tabular.ultrasound_with_without",
                severity,
                f"Ultrasound-derived columns add {drop:+.2f} AUC",
                f"With the {len(present)} ultrasound-derived column(s) ({', '.join(present)}): "
                f"{fmt_auc(everything)}; without them: {fmt_auc(reduced)}. "
                + (
                    "Much of the table's signal is read off the scan: report the table-only model "
                    "without these columns, and do not count them as independent of the image."
                    if severity == "warning"
                    else "They add little beyond the other columns."
                ),
                {
                    "with": probe_figures(everything),
                    "without": probe_figures(reduced),
                    "ultrasound_columns": present,
                },
            )
        )
    return findings
