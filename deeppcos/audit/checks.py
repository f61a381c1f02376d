"""The leakage and shortcut audit: what in a cohort lets a model look good without learning the
disease.

``audit_cohort(cohort)`` reads every image once and runs six checks; each yields findings with a
severity (``ok`` < ``info`` < ``warning`` < ``high``), a plain-language verdict and its figures.

1. **Exact duplicates** (``exact.bytes``, ``exact.pixels``): identical files (SHA-256 of the
   bytes, per DICOM frame) and identical decoded pixels (the same image saved in another format;
   a grey image stored as RGB counts as the grey image). Clusters are counted, and those that span
   different patients, different labels (contradictory labels) or different split parts (train/test
   leakage).
2. **Near-duplicates** (``near.phash``): a 64-bit DCT perceptual hash; two images are
   near-duplicates when their hashes differ in at most ``near_duplicate_threshold`` bits. Clusters
   are the connected components of that relation (so they include the exact duplicates) and are
   counted like exact ones.
3. **Split straddling** (``split.straddle``): duplicate clusters whose images sit in different
   parts of a split (the ``assignments`` given, else the top folder of image-folder cohorts such
   as ``train/`` and ``test/``), and patients assigned to more than one part.
4. **Image shortcut probes** (``shortcut.*``): how well one trivial property of the file predicts
   the label: width, height, aspect ratio, file size, format, colour mode, channels, bit depth,
   mean intensity, padding fraction, every extra acquisition column of the images table, and all
   of them together.
5. **Tabular leakage** (``tabular.*``): how well each feature column alone predicts the label;
   constant and mostly-missing columns; ultrasound-derived columns (a model that sees them is
   partly reading the scan), with the all-column AUC with and without them.
6. **Label and group sanity** (``labels.*``): class balance, missing labels, and label rates per
   ``group`` (a site whose patients are all positive is a shortcut).

How predictiveness is measured
------------------------------
Cross-validated ROC AUC with 5 patient-grouped, label-stratified folds (``StratifiedGroupKFold``;
the groups are ``patient_groups``, so duplicates of one image never sit on both sides). Out-of-
fold scores are pooled into one AUC, reported *as is*: an AUC below 0.5 is not flipped, because
flipping would let noise look like signal. The 95% interval is a BCa bootstrap over patient
groups (200 resamples, drawn by ``deeppcos.stats`` like every interval of the toolkit). Models
are shallow on purpose: one numeric property, ``HistGradientBoostingClassifier(max_depth=3,
max_iter=100)`` (missing values handled natively);
one categorical property, logistic regression on its one-hot encoding; several, the same boosting
on numbers plus one-hot columns.

Verdicts
--------
Image properties and groups: AUC ≥ 0.75 ``high`` (a shortcut: this property alone predicts the
label), 0.65–0.75 ``warning``, below 0.65 ``ok``. Tabular columns: AUC ≥ 0.90 ``high`` (nearly
encodes the label: is it derived from the diagnosis?), 0.75–0.90 ``warning`` (a strong single
predictor: check it is a cause, not a consequence, of the diagnosis). Constant properties are
skipped with an ``info`` finding.

The perceptual hash and its threshold
-------------------------------------
Grey 8-bit image → 32×32 with ``INTER_AREA`` → ``cv2.dct`` → the top-left 8×8 block (64
coefficients, DC included) → bit = coefficient > median of the 63 AC coefficients. The DC term
(the mean brightness) is left out of the median because it dwarfs the others; its bit is then
always 1 and never contributes to a distance. With a median threshold exactly 31 of the 63 AC
bits are set, so distances between two hashes are always even.

``DEFAULT_NEAR_DUP_BITS = 2`` was chosen on the real data sets (``../shared/data``):

- Resizing (×0.75, ×0.5, ×0.25, to 224², ×2 up), JPEG re-encoding (quality 50–95), a colour tint
  and +20 brightness move the hash by ≤ 2 bits for 98.5–100% of 800 images of each set, and never
  by more than 4.
- Chest X-rays of *different* patients (1,860 images, 1.73 M pairs; no true duplicates) reach
  distance 4 (6 pairs, seen side by side: different people or a later visit), 6 (86 more pairs)
  and 8 (633 more); at 8 the near-duplicate clusters chain into one of 424 images. At ≤ 2 there
  are none.
- The PCOS ultrasound set is built from augmented copies of few scans; pairs at 2–12 bits, seen
  side by side, are the same scan shifted, zoomed or stretched. At 2 bits 3,848 of its 3,849
  images already sit in a duplicate cluster.

So 2 bits keeps every reported pair a true copy of the same scan (re-encoded, resized, retinted)
even on a modality as uniform as chest X-ray; 4 bits would catch the remaining ~1% of heavily
downsized copies but starts to match different patients' chest films. Shifted or cropped copies
(augmentations; a 2% crop moves the hash 4–12 bits) are beyond any safe 64-bit-hash threshold:
raise ``near_duplicate_threshold`` for a set known to be augmented and look at the example pairs
in the HTML report.

Where each part lives: the records and shared settings in :mod:`deeppcos.audit.base`, the
per-image pass and duplicate clusters in :mod:`~deeppcos.audit.images`, the probe models in
:mod:`~deeppcos.audit.probes`, checks 4–6 in :mod:`~deeppcos.audit.shortcuts`,
:mod:`~deeppcos.audit.tabular_leakage` and :mod:`~deeppcos.audit.labels`; this module runs them
(and checks 1–3: readability, duplicates, split straddling).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from deeppcos.audit.base import (
    DEFAULT_NEAR_DUP_BITS,
    N_BOOTSTRAP,
    N_FOLDS,
    AuditResult,
    Finding,
    Progress,
    _Context,
)
from deeppcos.audit.images import build_clusters, compute_image_features, group_patients
from deeppcos.audit.labels import _check_labels
from deeppcos.audit.rules import (
    Severity,
)
from deeppcos.audit.shortcuts import _check_image_shortcuts
from deeppcos.audit.tabular_leakage import _check_tabular
from deeppcos.data.cohort import Cohort

# --- the audit -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DuplicateLinks:
    """The audit's duplicate clustering, for the splitter: ``groups`` (patient_id -> group id;
    patients linked by an exact or near-duplicate image share one), the close ``pairs``
    (``image_a``, ``image_b``, ``distance`` in bits, ``exact``) and ``image_patients``
    (image_id -> patient_id)."""

    groups: pd.Series
    pairs: pd.DataFrame
    image_patients: pd.Series


def duplicate_links(
    cohort: Cohort,
    *,
    near_duplicate_threshold: int = DEFAULT_NEAR_DUP_BITS,
    progress: Progress | None = None,
) -> DuplicateLinks:
    """Only the duplicate clustering of the audit (see :class:`DuplicateLinks`); a cohort
    without images gives one group per patient and no pairs."""
    patient_ids = cohort.patients["patient_id"].astype(str)
    images = cohort.images.reset_index(drop=True)
    if images.empty:
        return DuplicateLinks(
            pd.Series(range(len(patient_ids)), index=pd.Index(patient_ids, name="patient_id")),
            pd.DataFrame(columns=["image_a", "image_b", "distance", "exact"]),
            pd.Series(dtype="string"),
        )
    features = compute_image_features(images, progress)
    clusters, pairs, _ = build_clusters(features, near_duplicate_threshold)
    return DuplicateLinks(
        group_patients(patient_ids, features, clusters["near_cluster"]),
        pairs,
        pd.Series(
            images["patient_id"].astype(str).to_numpy(),
            index=images["image_id"].astype(str).to_numpy(),
        ),
    )


def duplicate_patient_groups(
    cohort: Cohort,
    *,
    near_duplicate_threshold: int = DEFAULT_NEAR_DUP_BITS,
    progress: Progress | None = None,
) -> pd.Series:
    """patient_id -> duplicate group id (the ``groups`` of :func:`duplicate_links`)."""
    return duplicate_links(
        cohort, near_duplicate_threshold=near_duplicate_threshold, progress=progress
    ).groups


def audit_cohort(
    cohort: Cohort,
    *,
    near_duplicate_threshold: int = DEFAULT_NEAR_DUP_BITS,
    assignments: pd.Series | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> AuditResult:
    """Run every leakage and shortcut check on ``cohort`` (see the module docstring)."""
    started = time.perf_counter()
    images = cohort.images.reset_index(drop=True)
    if len(images):
        features = compute_image_features(images, progress)
        if "sha256" in images:
            features["sha256"] = images["sha256"].astype("string").values
        clusters, pairs, nearest = build_clusters(features, near_duplicate_threshold)
        features["nn_distance"] = nearest
    else:
        features = pd.DataFrame(columns=["image_id", "patient_id", "phash"])
        clusters = pd.DataFrame(
            columns=["image_id", "byte_cluster", "exact_cluster", "near_cluster"]
        )
        pairs = pd.DataFrame(columns=["image_a", "image_b", "distance", "exact"])
    groups = group_patients(
        cohort.patients["patient_id"].astype(str), features, clusters["near_cluster"]
    )
    parts, part_source = _image_parts(images, assignments)
    frame = _per_image_frame(cohort, images, features, clusters, groups, parts)
    ctx = _Context(cohort, frame, groups, part_source, seed, near_duplicate_threshold)
    findings: list[Finding] = []
    probes: list[dict[str, Any]] = []
    findings += _check_readable(ctx)
    findings += _check_exact(ctx)
    findings += _check_near(ctx, pairs)
    findings += _check_split(ctx, assignments)
    findings += _check_image_shortcuts(ctx, probes)
    findings += _check_tabular(ctx, probes)
    findings += _check_labels(ctx, probes, pairs)
    settings = {
        "cohort": cohort.spec.name,
        "label_name": cohort.spec.label_name,
        "near_duplicate_threshold": near_duplicate_threshold,
        "seed": seed,
        "folds": N_FOLDS,
        "bootstrap": N_BOOTSTRAP,
        "part_source": part_source,
        "images": len(images),
        "patients": len(cohort.patients),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    return AuditResult(
        findings=findings,
        image_features=frame.drop(columns=["pixel_hash"], errors="ignore"),
        duplicate_clusters=clusters,
        patient_groups=groups,
        probes=pd.DataFrame(probes),
        duplicate_pairs=pairs,
        settings=settings,
    )


def _image_parts(
    images: pd.DataFrame, assignments: pd.Series | None
) -> tuple[pd.Series, str | None]:
    """Split part of each image: from ``assignments`` (patient -> part), else the top folder."""
    if assignments is not None:
        first = assignments[~assignments.index.duplicated(keep="first")]
        first.index = first.index.astype(str)
        parts = (
            images["patient_id"].astype(str).map(first) if len(images) else pd.Series(dtype=object)
        )
        return parts.astype("string"), "assignments"
    if len(images) and "folder" in images:
        folder = images["folder"].astype("string")
        # Only "split/class" paths name a split; a bare class folder ("infected") does not.
        nested = folder.str.contains("/", regex=False).fillna(False)
        if nested.any():
            return folder.str.split("/").str[0].where(nested), "folder"
    return pd.Series(pd.NA, index=images.index, dtype="string"), None


def _per_image_frame(
    cohort: Cohort,
    images: pd.DataFrame,
    features: pd.DataFrame,
    clusters: pd.DataFrame,
    groups: pd.Series,
    parts: pd.Series,
) -> pd.DataFrame:
    frame = features.copy()
    for column in ("byte_cluster", "exact_cluster", "near_cluster"):
        frame[column] = clusters[column].values if len(clusters) else []
    frame["label"] = _image_labels(cohort, images)
    frame["part"] = parts.values if len(parts) else pd.Series(dtype="string")
    frame["group"] = frame["patient_id"].map(groups).values if len(frame) else []
    return frame


def _image_labels(cohort: Cohort, images: pd.DataFrame) -> pd.Series:
    """Image-level label where the images table has one, else the patient's label."""
    if not len(images):
        return pd.Series(dtype="Int8")
    patient_label = cohort.patients.set_index(cohort.patients["patient_id"].astype(str))
    by_patient = (
        images["patient_id"].astype(str).map(patient_label["label"])
        if "label" in patient_label
        else pd.Series(pd.NA, index=images.index)
    )
    if "label" in images:
        return (
            images["label"].astype("Int8").fillna(by_patient.astype("Int8")).reset_index(drop=True)
        )
    return by_patient.astype("Int8").reset_index(drop=True)


# --- checks: readability ---------------------------------------------------------------------


def _check_readable(ctx: _Context) -> list[Finding]:
    frame = ctx.frame
    if not len(frame):
        return [
            Finding(
                "images.none",
                "info",
                "No images",
                "The cohort has no images; only the tabular and label checks ran.",
            )
        ]
    bad = frame[~frame["readable"].astype(bool)]
    if not len(bad):
        return []
    return [
        Finding(
            "images.unreadable",
            "warning",
            f"{len(bad)} image(s) could not be decoded",
            "These images were left out of the duplicate checks and have no pixel statistics. "
            "Fix or remove the files; the first errors are listed in the figures.",
            {"unreadable": len(bad), "examples": bad["error"].head(5).tolist()},
        )
    ]


# --- checks 1 and 2: duplicates ---------------------------------------------------------------


def cluster_spans(frame: pd.DataFrame, column: str) -> dict[str, Any]:
    """How many multi-image clusters there are and how many cross patients, labels, parts."""
    multi = frame[frame[column].duplicated(keep=False)]
    if not len(multi):
        return {
            "clusters": 0,
            "images_involved": 0,
            "redundant_copies": 0,
            "spanning_patients": 0,
            "spanning_labels": 0,
            "spanning_parts": 0,
            "largest_cluster": 1 if len(frame) else 0,
        }
    grouped = multi.groupby(column)
    sizes = grouped.size()
    span_labels = grouped["label"].nunique(dropna=True) > 1
    span_parts = grouped["part"].nunique(dropna=True) > 1
    figures: dict[str, Any] = {
        "clusters": len(sizes),
        "images_involved": int(sizes.sum()),
        "redundant_copies": int(sizes.sum() - len(sizes)),
        "spanning_patients": int((grouped["patient_id"].nunique() > 1).sum()),
        "spanning_labels": int(span_labels.sum()),
        "images_in_label_conflicts": int(sizes[span_labels].sum()),
        "spanning_parts": int(span_parts.sum()),
        "largest_cluster": int(sizes.max()),
    }
    if span_parts.any():
        figures["images_with_copy_in_other_part"] = _copies_across_parts(frame, column)
    return figures


def _copies_across_parts(frame: pd.DataFrame, column: str) -> dict[str, dict[str, int]]:
    """Per part: images whose cluster also has an image in another part."""
    known = frame[frame["part"].notna()]
    parts_per_cluster = known.groupby(column)["part"].nunique()
    crossing = known[column].map(parts_per_cluster) > 1
    out = {}
    for part, rows in known.groupby("part"):
        out[str(part)] = {
            "images": len(rows),
            "with_copy_elsewhere": int(crossing[rows.index].sum()),
        }
    return out


def _duplicate_severity(figures: dict[str, Any]) -> Severity:
    if figures["clusters"] == 0:
        return "ok"
    if figures["spanning_labels"] or figures["spanning_parts"]:
        return "high"
    return "warning" if figures["spanning_patients"] else "info"


def _duplicate_detail(kind: str, figures: dict[str, Any]) -> str:
    if figures["clusters"] == 0:
        return f"No {kind} found."
    text = [
        f"{figures['clusters']} cluster(s) of {kind} hold {figures['images_involved']} images "
        f"({figures['redundant_copies']} redundant copies; largest cluster "
        f"{figures['largest_cluster']})."
    ]
    if figures["spanning_parts"]:
        crossing = figures.get("images_with_copy_in_other_part", {})
        listed = ", ".join(
            f"{c['with_copy_elsewhere']} of {c['images']} {p} images" for p, c in crossing.items()
        )
        text.append(
            f"{figures['spanning_parts']} cluster(s) span split parts ({listed} have a copy in "
            "another part): train/test leakage, any score on this split is inflated. Re-split "
            "with `patient_groups` so each cluster stays in one part."
        )
    if figures["spanning_labels"]:
        text.append(
            f"{figures['spanning_labels']} cluster(s) ({figures['images_in_label_conflicts']} "
            "images) carry both labels: the same image is labelled both ways. Resolve or drop "
            "them before training."
        )
    if figures["spanning_patients"]:
        text.append(
            f"{figures['spanning_patients']} cluster(s) span different patient ids: either one "
            "person under several ids or copied images. `patient_groups` links them so a "
            "splitter keeps them together."
        )
    if not (
        figures["spanning_parts"] or figures["spanning_labels"] or figures["spanning_patients"]
    ):
        text.append(
            "All copies belong to the same patient and label; they double-weight those "
            "images but do not leak."
        )
    return " ".join(text)


def _check_exact(ctx: _Context) -> list[Finding]:
    if not len(ctx.frame):
        return []
    findings = []
    for check, column, kind in (
        ("exact.bytes", "byte_cluster", "byte-identical files"),
        ("exact.pixels", "exact_cluster", "pixel-identical images (any encoding)"),
    ):
        figures = cluster_spans(ctx.frame, column)
        severity = _duplicate_severity(figures)
        title = (
            f"{figures['images_involved']} images in {figures['clusters']} clusters of {kind}"
            if figures["clusters"]
            else f"No {kind}"
        )
        findings.append(Finding(check, severity, title, _duplicate_detail(kind, figures), figures))
    return findings


def _check_near(ctx: _Context, pairs: pd.DataFrame) -> list[Finding]:
    frame = ctx.frame
    if not len(frame):
        return []
    figures = cluster_spans(frame, "near_cluster")
    beyond = frame["near_cluster"].duplicated(keep=False) & ~frame["exact_cluster"].duplicated(
        keep=False
    )
    nearest = frame["nn_distance"].dropna().astype(int)
    figures.update(
        {
            "threshold_bits": ctx.threshold,
            "pairs": len(pairs),
            "non_identical_pairs": int((~pairs["exact"].astype(bool)).sum()) if len(pairs) else 0,
            "images_only_near": int(beyond.sum()),
            # Evidence for the threshold: how close each image's nearest other image is.
            "nearest_neighbour_bits": {
                str(k): int(v)
                for k, v in nearest.clip(upper=17).value_counts().sort_index().items()
            },
        }
    )
    kind = f"near-duplicates (perceptual hash within {ctx.threshold} bits)"
    severity = _duplicate_severity(figures)
    title = (
        f"{figures['images_involved']} images in {figures['clusters']} near-duplicate clusters"
        if figures["clusters"]
        else "No near-duplicates"
    )
    detail = _duplicate_detail(kind, figures)
    if figures["clusters"]:
        detail += (
            f" {figures['images_only_near']} images are near but not exact copies "
            "(resized, re-encoded, retinted): the HTML report shows example pairs."
        )
    return [Finding("near.phash", severity, title, detail, figures)]


# --- check 3: split straddling ----------------------------------------------------------------


def _check_split(ctx: _Context, assignments: pd.Series | None) -> list[Finding]:
    frame = ctx.frame
    if ctx.part_source is None:
        return [
            Finding(
                "split.straddle",
                "info",
                "No split to check",
                "No assignments were given and the images have no split folders; pass "
                "assignments=<patient_id -> part> to check a split for leakage.",
            )
        ]
    several = _patients_in_several_parts(frame, assignments)
    spans: dict[str, Any] = (
        cluster_spans(frame, "near_cluster") if len(frame) else {"spanning_parts": 0}
    )
    images_per_part = frame["part"].value_counts().to_dict() if len(frame) else {}
    figures: dict[str, Any] = {
        "source": ctx.part_source,
        "images_per_part": {str(k): int(v) for k, v in images_per_part.items()},
        "patients_in_several_parts": len(several),
        "example_patients": several[:10],
        "clusters_spanning_parts": spans["spanning_parts"],
        "images_with_copy_in_other_part": spans.get("images_with_copy_in_other_part", {}),
    }
    if assignments is not None:
        patients_per_part = assignments[~assignments.index.duplicated()].value_counts()
        figures["patients_per_part"] = {str(k): int(v) for k, v in patients_per_part.items()}
    problems = []
    if several:
        problems.append(
            f"{len(several)} patient(s) sit in more than one part (e.g. {', '.join(several[:3])})."
        )
    if spans["spanning_parts"]:
        crossing = spans["images_with_copy_in_other_part"]
        listed = ", ".join(
            f"{c['with_copy_elsewhere']}/{c['images']} in {p}" for p, c in crossing.items()
        )
        problems.append(
            f"{spans['spanning_parts']} duplicate cluster(s) span parts ({listed} "
            "have an exact or near copy in another part)."
        )
    if not problems:
        return [
            Finding(
                "split.straddle",
                "ok",
                "No patient or duplicate straddles the split",
                f"Split from {ctx.part_source}: every patient and every duplicate cluster "
                "sits in one part.",
                figures,
            )
        ]
    detail = " ".join(problems) + (
        " Scores measured on this split are inflated by memorised copies. Re-split with "
        "deeppcos's grouped splitter (groups = AuditResult.patient_groups), or drop the copies."
    )
    return [Finding("split.straddle", "high", "The split leaks across parts", detail, figures)]


def _patients_in_several_parts(frame: pd.DataFrame, assignments: pd.Series | None) -> list[str]:
    if assignments is not None:
        per_patient = assignments.groupby(assignments.index.astype(str)).nunique()
    elif len(frame):
        per_patient = frame.groupby("patient_id")["part"].nunique()
    else:
        return []
    return sorted(per_patient[per_patient > 1].index.astype(str))
