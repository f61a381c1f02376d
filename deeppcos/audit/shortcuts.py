"""Check 4: image shortcut probes (acquisition properties that predict the label)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deeppcos.audit.base import _NOT_ACQUISITION, Finding, _Context
from deeppcos.audit.probes import (
    ProbeResult,
    fmt_auc,
    grouped_folds,
    probe_auc,
    probe_figures,
    severity_for_auc,
)
from deeppcos.audit.rules import (
    SHORTCUT_HIGH,
    SHORTCUT_WARNING,
    Severity,
    json_safe,
)

# --- check 4: image shortcut probes -----------------------------------------------------------

_IMAGE_NUMERIC = (
    "width",
    "height",
    "aspect_ratio",
    "file_bytes",
    "channels",
    "bit_depth",
    "mean_intensity",
    "padding_fraction",
)
_IMAGE_CATEGORICAL = ("file_format", "color_mode")


def _shortcut_table(ctx: _Context) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """Per image: the trivial properties; names of numeric, categorical and acquisition ones."""
    images = ctx.cohort.images.reset_index(drop=True)
    frame = ctx.frame
    table = pd.DataFrame(index=frame.index)
    numeric, categorical = [], []
    for column in _IMAGE_NUMERIC:
        source = frame if column in frame else images
        if column in source:
            table[column] = pd.to_numeric(source[column], errors="coerce").astype("float64").values
            numeric.append(column)
    if "channels" not in table:
        table["channels"] = frame["decoded_channels"].astype("float64").values
        numeric.append("channels")
    for column in _IMAGE_CATEGORICAL:
        if column in images:
            table[column] = images[column].astype("string").fillna("missing").values
            categorical.append(column)
    acquisition = []
    for column in images.columns:
        if column in _NOT_ACQUISITION or column in table:
            continue
        values = images[column]
        as_number = pd.to_numeric(values, errors="coerce")
        # Numbers stay numbers (age, follow-up); anything with text is a category (view).
        if (
            values.notna().any()
            and as_number[values.notna()].notna().all()
            and values.dtype != bool
        ):
            table[column] = as_number.astype("float64").values
            numeric.append(column)
        else:
            table[column] = values.astype("string").fillna("missing").values
            categorical.append(column)
        acquisition.append(column)
    return table, numeric, categorical, acquisition


_PROPERTY_NAMES = {
    "width": "Image width",
    "height": "Image height",
    "aspect_ratio": "Aspect ratio",
    "file_bytes": "File size",
    "channels": "Number of channels",
    "bit_depth": "Bit depth",
    "mean_intensity": "Mean intensity",
    "padding_fraction": "Padding (letterbox) fraction",
    "file_format": "File format",
    "color_mode": "Colour mode",
}


def _check_image_shortcuts(ctx: _Context, probes: list[dict[str, Any]]) -> list[Finding]:
    frame = ctx.frame
    if not len(frame):
        return []
    labelled = frame["label"].notna().to_numpy()
    if not labelled.any():
        return [
            Finding(
                "shortcut.skipped",
                "info",
                "No labels: shortcut probes skipped",
                "No image has a label, so nothing can be predicted.",
            )
        ]
    table, numeric, categorical, acquisition = _shortcut_table(ctx)
    table = table[labelled].reset_index(drop=True)
    y = frame.loc[labelled, "label"].astype(int).to_numpy()
    groups = frame.loc[labelled, "group"].to_numpy()
    folds = grouped_folds(y, groups, ctx.seed)
    if not folds:
        return [
            Finding(
                "shortcut.skipped",
                "info",
                "Too few patients for shortcut probes",
                "Each class needs labelled images from at least two patient groups.",
            )
        ]
    findings = []
    for column in [*numeric, *categorical]:
        findings.append(
            _probe_one(
                ctx,
                table,
                column,
                column in categorical,
                y,
                groups,
                folds,
                probes,
                column in acquisition,
            )
        )
    image_props = [c for c in table.columns if c not in acquisition]
    findings += _probe_together(
        ctx,
        table,
        image_props,
        categorical,
        y,
        groups,
        folds,
        probes,
        "shortcut.all_image_properties",
        "All trivial image properties",
    )
    if acquisition:
        findings += _probe_together(
            ctx,
            table,
            list(table.columns),
            categorical,
            y,
            groups,
            folds,
            probes,
            "shortcut.all_properties",
            "All image and acquisition properties",
        )
    return findings


def _probe_one(
    ctx: _Context,
    table: pd.DataFrame,
    column: str,
    is_categorical: bool,
    y: np.ndarray,
    groups: np.ndarray,
    folds: list,
    probes: list[dict[str, Any]],
    acquisition: bool,
) -> Finding:
    name = _PROPERTY_NAMES.get(column, f"Acquisition column {column!r}")
    check = f"shortcut.{column}"
    values = table[column]
    if values.nunique(dropna=False) <= 1:
        only = values.iloc[0] if len(values) else None
        probes.append(
            {
                "kind": "image",
                "property": column,
                "auc": None,
                "severity": "info",
                "note": "constant",
            }
        )
        return Finding(
            check,
            "info",
            f"{name} is constant",
            f"Every image has the same {column} ({only}); it cannot be a shortcut here.",
            {"value": json_safe(only)},
        )
    x = values.to_numpy(dtype=object if is_categorical else np.float64).reshape(-1, 1)
    probe = probe_auc(x, y, groups, folds, "categorical" if is_categorical else "numeric", ctx.seed)
    severity = severity_for_auc(probe.auc, SHORTCUT_HIGH, SHORTCUT_WARNING)
    figures = probe_figures(probe) | _class_summary(values, y, is_categorical)
    probes.append(
        {
            "kind": "acquisition" if acquisition else "image",
            "property": column,
            **probe_figures(probe),
            "severity": severity,
        }
    )
    return Finding(
        check,
        severity,
        f"{name}: {fmt_auc(probe)}",
        _shortcut_detail(name, probe, severity),
        figures,
    )


def _class_summary(values: pd.Series, y: np.ndarray, is_categorical: bool) -> dict[str, Any]:
    """What the property looks like per class, so a reader sees *how* it separates them."""
    out: dict[str, Any] = {}
    for label in (0, 1):
        part = values[y == label]
        if is_categorical:
            out[f"class{label}_top"] = {
                str(k): int(v) for k, v in part.value_counts().head(4).items()
            }
        else:
            out[f"class{label}_median"] = (
                None if part.isna().all() else round(float(part.median()), 4)
            )
    return out


def _shortcut_detail(
    name: str, probe: ProbeResult, severity: Severity, verb: str = "alone predicts"
) -> str:
    base = (
        f"{name} {verb} the label with cross-validated {fmt_auc(probe)} over "
        f"{probe.n} images in {probe.n_groups} patient groups."
    )
    if severity == "high":
        what = "this property alone" if verb == "alone predicts" else "these trivial properties"
        return base + (
            f" Shortcut: {what} predict(s) the label, so a model can score well without looking "
            "at the anatomy. Normalise it away (resize, crop padding, convert to one format) or "
            "collect data where it does not differ between classes, and report results beside "
            "this finding."
        )
    if severity == "warning":
        return base + (
            " A partial shortcut: check that the classes come from the same "
            "source and acquisition, and normalise the property in preprocessing."
        )
    if severity == "info":
        return base
    return base + " No shortcut at the audit's thresholds."


def _probe_together(
    ctx: _Context,
    table: pd.DataFrame,
    columns: list[str],
    categorical: list[str],
    y: np.ndarray,
    groups: np.ndarray,
    folds: list,
    probes: list[dict[str, Any]],
    check: str,
    name: str,
) -> list[Finding]:
    varying = [c for c in columns if table[c].nunique(dropna=False) > 1]
    if len(varying) < 2:
        return []
    x = _mixed_matrix(table[varying], [c for c in varying if c in categorical])
    probe = probe_auc(x, y, groups, folds, "mixed", ctx.seed)
    severity = severity_for_auc(probe.auc, SHORTCUT_HIGH, SHORTCUT_WARNING)
    probes.append(
        {
            "kind": "combined",
            "property": check.split(".", 1)[1],
            **probe_figures(probe),
            "severity": severity,
        }
    )
    figures = probe_figures(probe) | {"properties": varying}
    return [
        Finding(
            check,
            severity,
            f"{name} together: {fmt_auc(probe)}",
            _shortcut_detail(f"{name} ({', '.join(varying)})", probe, severity, "together predict"),
            figures,
        )
    ]


def _mixed_matrix(table: pd.DataFrame, categorical: list[str]) -> np.ndarray:
    """Numbers as they are plus one-hot columns (the category vocabulary carries no label)."""
    numeric = table.drop(columns=categorical).astype("float64")
    dummies = (
        pd.get_dummies(table[categorical].astype(str), dtype="float64") if categorical else None
    )
    combined = numeric if dummies is None else pd.concat([numeric, dummies], axis=1)
    return combined.to_numpy(dtype=np.float64)
