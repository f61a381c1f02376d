"""Check 6: labels and groups (conflicting copies, balance, missing labels, label rate by group)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deeppcos.audit.base import Finding, _Context, worse
from deeppcos.audit.label_noise import group_label_consistency, noisy_groups
from deeppcos.audit.probes import fmt_auc, grouped_folds, probe_auc, probe_figures, severity_for_auc
from deeppcos.audit.rules import (
    LABEL_CONSISTENCY_HIGH,
    LABEL_CONSISTENCY_WARNING,
    NEAR_COPY_BITS,
    NEAR_COPY_MIN_PAIRS,
    SHORTCUT_HIGH,
    SHORTCUT_WARNING,
    Severity,
)

# --- check 6: labels and groups ---------------------------------------------------------------


def _check_labels(
    ctx: _Context, probes: list[dict[str, Any]], pairs: pd.DataFrame | None = None
) -> list[Finding]:
    patients = ctx.cohort.patients.reset_index(drop=True)
    if "label" not in patients:
        return [
            Finding(
                "labels.balance",
                "info",
                "No label column",
                "The cohort has no labels: only duplicate checks apply.",
            )
        ]
    findings = [_label_balance(ctx, patients), _label_missing(ctx, patients)]
    conflicts = _conflicting_copies(ctx)
    if conflicts is not None:
        findings.append(conflicts)
    near = _near_copy_labels(ctx, pairs) if pairs is not None else None
    if near is not None:
        findings.append(near)
    if "group" in patients and patients["group"].notna().any():
        findings.append(_label_groups(ctx, patients, probes))
    return findings


def _conflicting_copies(ctx: _Context) -> Finding | None:
    """Byte-identical files labelled both ways, as loading found them (``conflicting_copy``
    entries of the load report): they are gone from the cohort when the spec excludes them, so
    only the report still knows."""
    entries = [e for e in ctx.cohort.report if e.action == "conflicting_copy"]
    if not entries:
        return None
    excluded = sum(e.level == "excluded" for e in entries)
    kept = len(entries) - excluded
    title = f"{len(entries)} images are byte-identical copies of others with the opposite label"
    detail = (
        f"{len(entries)} image files are exact copies of another file of this cohort that "
        "carries the opposite label: label noise that no model can fit. "
        + (
            f"{excluded} were left out at load (images.conflicting_copies: exclude). "
            if excluded
            else ""
        )
        + (f"{kept} were kept as labelled (images.conflicting_copies: keep). " if kept else "")
        + "The load report lists each copy."
    )
    # High even when they were left out: files labelled both ways say the labelling itself is
    # unreliable here (their near copies may disagree too), which a reader must weigh.
    return Finding(
        "labels.conflicting_copies",
        "high",
        title,
        detail,
        figures={
            "images": len(entries),
            "excluded": excluded,
            "kept": kept,
            "examples": [e.found for e in entries[:10]],
        },
    )


def _near_copy_labels(ctx: _Context, pairs: pd.DataFrame) -> Finding | None:
    """Whether near-copies of different patients share their label (see the rules module):
    labels that near-copies do not share are noise that no model can fit, and they cap what a
    grouped evaluation can score."""
    frame = ctx.frame.drop_duplicates("image_id").set_index("image_id")
    close = pairs[pairs["distance"] <= NEAR_COPY_BITS]
    a, b = close["image_a"].to_numpy(), close["image_b"].to_numpy()
    label_a = frame["label"].reindex(a).to_numpy(dtype="float64", na_value=np.nan)
    label_b = frame["label"].reindex(b).to_numpy(dtype="float64", na_value=np.nan)
    other_patient = frame["patient_id"].reindex(a).to_numpy() != frame["patient_id"].reindex(
        b
    ).to_numpy()
    usable = ~np.isnan(label_a) & ~np.isnan(label_b) & other_patient
    labels = frame["label"].dropna().astype(float)
    positive = float(labels.mean()) if len(labels) else 0.0
    chance = 2 * positive * (1 - positive)
    if usable.sum() < NEAR_COPY_MIN_PAIRS or chance == 0:
        return None
    differ = float((label_a[usable] != label_b[usable]).mean())
    consistency = 1 - differ / chance
    severity: Severity = (
        "high"
        if consistency < LABEL_CONSISTENCY_HIGH
        else "warning"
        if consistency < LABEL_CONSISTENCY_WARNING
        else "info"
    )
    pairs_text = f"{int(usable.sum()):,} pairs of near-copies"
    detail = (
        f"{pairs_text} (images at most {NEAR_COPY_BITS} bits apart in the perceptual hash: the "
        "same picture re-encoded, or neighbouring frames of one video) belong to different "
        f"patients; {differ:.0%} of them carry opposite labels, where two images' labels differ "
        f"in {chance:.0%} of pairs by chance. Label consistency {consistency:.2f} (1: near-copies "
        "always agree; 0: their labels ignore the picture). "
    )
    if severity != "info":
        detail += (
            "Labels that near-copies do not share are noise no image model can fit: the "
            "grouped out-of-fold figure is capped by them, whatever the model. Check how the "
            "labels were given before tuning a model on them. "
        )
    noisy = _noisy_groups(ctx, pairs)
    if len(noisy):
        severity = worse(severity, "warning")
        detail += (
            f"{len(noisy)} duplicate group(s) of {int(noisy['patients'].sum()):,} patients "
            f"(grouped at this audit's {ctx.threshold} bits) are label noise on their own: "
            "inside each, near-copies disagree about as often as chance (label consistency "
            + ", ".join(f"{c:.2f}" for c in noisy["label_consistency"].head(5))
            + (", …" if len(noisy) > 5 else "")
            + "). split.label_noise: exclude sets such groups aside in training (judged on the "
            "split's own groups, split.near_duplicate_bits), and the run's load report lists "
            "their patients."
        )
    return Finding(
        "labels.near_copy_agreement",
        severity,
        f"Near-copies carry opposite labels in {differ:.0%} of {int(usable.sum()):,} pairs "
        f"({chance:.0%} by chance)"
        if severity != "info"
        else f"Near-copies share their labels (consistency {consistency:.2f})",
        detail,
        figures={
            "pairs": int(usable.sum()),
            "max_bits": NEAR_COPY_BITS,
            "labels_differ": round(differ, 4),
            "differ_by_chance": round(chance, 4),
            "label_consistency": round(consistency, 4),
            "noisy_groups": [
                {
                    "group": int(row.group),
                    "patients": int(row.patients),
                    "pairs": int(row.pairs),
                    "label_consistency": round(float(row.label_consistency), 4),
                }
                for row in noisy.itertuples(index=False)
            ],
        },
    )


def _noisy_groups(ctx: _Context, pairs: pd.DataFrame) -> pd.DataFrame:
    """The duplicate groups (at the audit's threshold) that are label noise on their own."""
    frame = ctx.frame.drop_duplicates("image_id")
    image_patients = pd.Series(
        frame["patient_id"].astype(str).to_numpy(), index=frame["image_id"].astype(str).to_numpy()
    )
    patients = ctx.cohort.patients
    labels = pd.Series(patients["label"].to_numpy(), index=patients["patient_id"].astype(str))
    groups = ctx.groups.copy()
    groups.index = groups.index.astype(str)
    return noisy_groups(group_label_consistency(pairs, image_patients, groups, labels))


def _label_balance(ctx: _Context, patients: pd.DataFrame) -> Finding:
    labels = patients["label"].dropna().astype(int)
    positives, total = int(labels.sum()), len(labels)
    figures: dict[str, Any] = {
        "patients_labelled": total,
        "positive": positives,
        "negative": total - positives,
    }
    frame = ctx.frame
    if len(frame) and frame["label"].notna().any():
        image_labels = frame["label"].dropna().astype(int)
        figures["images_positive"] = int(image_labels.sum())
        figures["images_negative"] = int(len(image_labels) - image_labels.sum())
        if frame["part"].notna().any():
            rate = (
                frame.dropna(subset=["label", "part"])
                .groupby("part")["label"]
                .agg(["size", "mean"])
            )
            figures["positive_rate_by_part"] = {
                str(p): round(float(r["mean"]), 4) for p, r in rate.iterrows()
            }
    if total == 0:
        return Finding(
            "labels.balance",
            "high",
            "No labelled patients",
            "No patient has a label: nothing can be trained or evaluated.",
            figures,
        )
    share = positives / total
    figures["positive_fraction"] = round(share, 4)
    minority = min(share, 1 - share)
    if minority == 0:
        severity: Severity = "high"
        detail = f"All {total} labelled patients are in one class: a classifier cannot be trained."
    elif minority < 0.1:
        severity = "warning"
        detail = (
            f"Only {minority:.1%} of labelled patients are in the minority class: accuracy "
            "is misleading; use stratified splits and report PR-AUC and sensitivity."
        )
    else:
        severity = "ok"
        detail = (
            f"{positives} positive and {total - positives} negative labelled patients "
            f"({share:.0%} positive)."
        )
    return Finding(
        "labels.balance",
        severity,
        f"Class balance: {share:.0%} positive of {total}",
        detail,
        figures,
    )


def _label_missing(ctx: _Context, patients: pd.DataFrame) -> Finding:
    missing = int(patients["label"].isna().sum())
    frame = ctx.frame
    missing_images = int(frame["label"].isna().sum()) if len(frame) else 0
    figures = {"patients_without_label": missing, "images_without_label": missing_images}
    conflicts = _image_patient_label_conflicts(ctx, patients)
    if conflicts is not None:
        figures["images_disagreeing_with_patient_label"] = conflicts
    if missing == 0 and missing_images == 0 and not conflicts:
        return Finding(
            "labels.missing",
            "ok",
            "Every patient and image has a label",
            "No missing labels.",
            figures,
        )
    parts = []
    if missing:
        parts.append(
            f"{missing} patient(s) have no label: they can be scored, not trained on or evaluated."
        )
    if missing_images:
        parts.append(f"{missing_images} image(s) have no label.")
    if conflicts:
        parts.append(
            f"{conflicts} image(s) carry an image-level label that disagrees with their "
            "patient's label; decide which one the model should learn."
        )
    severity: Severity = "warning" if conflicts else "info"
    return Finding(
        "labels.missing", severity, "Missing or conflicting labels", " ".join(parts), figures
    )


def _image_patient_label_conflicts(ctx: _Context, patients: pd.DataFrame) -> int | None:
    images = ctx.cohort.images
    if "label" not in images or not len(images):
        return None
    by_patient = (
        images["patient_id"]
        .astype(str)
        .map(patients.set_index(patients["patient_id"].astype(str))["label"])
    )
    both = images["label"].notna() & by_patient.notna()
    return int((images.loc[both, "label"].astype(int) != by_patient[both].astype(int)).sum())


def _label_groups(ctx: _Context, patients: pd.DataFrame, probes: list[dict[str, Any]]) -> Finding:
    labelled = patients[patients["label"].notna()]
    group = labelled["group"].astype("string").fillna("missing")
    rates = labelled.assign(group=group).groupby("group")["label"].agg(["size", "mean"])
    figures: dict[str, Any] = {
        "groups": {
            str(g): {"patients": int(r["size"]), "positive_rate": round(float(r["mean"]), 4)}
            for g, r in rates.iterrows()
        }
    }
    pure = rates[(rates["size"] >= 5) & rates["mean"].isin([0.0, 1.0])]
    figures["single_class_groups"] = [str(g) for g in pure.index]
    y = labelled["label"].astype(int).to_numpy()
    groups = labelled["patient_id"].astype(str).map(ctx.groups).to_numpy()
    folds = grouped_folds(y, groups, ctx.seed)
    severity: Severity = "ok"
    text = []
    if folds and rates.shape[0] > 1:
        x = group.to_numpy(dtype=object).reshape(-1, 1)
        probe = probe_auc(x, y, groups, folds, "categorical", ctx.seed)
        severity = severity_for_auc(probe.auc, SHORTCUT_HIGH, SHORTCUT_WARNING)
        figures |= probe_figures(probe)
        probes.append(
            {"kind": "group", "property": "group", **probe_figures(probe), "severity": severity}
        )
        text.append(f"The group alone predicts the label with {fmt_auc(probe)}.")
    if len(pure):
        severity = worse(severity, "warning")
        text.append(
            f"{len(pure)} group(s) with ≥5 patients are all one class "
            f"({', '.join(figures['single_class_groups'][:5])}): a model can learn the "
            "site instead of the disease; evaluate per group and hold out whole groups."
        )
    if severity == "ok":
        text.append("Label rates do not separate the groups at the audit's thresholds.")
    return Finding("labels.group", severity, "Label rate by group", " ".join(text), figures)
