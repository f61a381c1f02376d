"""The leakage and shortcut audit on tiny synthetic cohorts (cv2-drawn images in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from sklearn.metrics import roc_auc_score

from deeppcos.audit.base import DEFAULT_NEAR_DUP_BITS, AuditResult
from deeppcos.audit.checks import audit_cohort
from deeppcos.audit.images import close_pairs, hamming_matrix, padding_fraction, phash64
from deeppcos.data.cohort import Cohort, probe_images
from deeppcos.data.report import LoadReport
from deeppcos.data.spec import spec_from_dict
from deeppcos.knowledge.catalog import ultrasound_features
from deeppcos.stats import weighted_auc

# --- building tiny cohorts -------------------------------------------------------------------


def scan(seed: int, width: int = 160, height: int = 128) -> np.ndarray:
    """A random grey 'scan': blobs and lines, different for every seed."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width), int(rng.integers(20, 80)), np.uint8)
    for _ in range(12):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(5, max(6, min(width, height) // 3)))
        cv2.circle(img, centre, radius, int(rng.integers(0, 256)), -1)
    for _ in range(4):
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(img, p1, p2, int(rng.integers(0, 256)), int(rng.integers(1, 6)))
    return cv2.GaussianBlur(img, (5, 5), 0)


def write(path: Path, pixels: np.ndarray, quality: int | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if quality else []
    assert cv2.imwrite(str(path), pixels, params)
    return str(path)


def make_cohort(
    rows: list[dict], patients: pd.DataFrame | None = None, features: list[str] | None = None
) -> Cohort:
    """Cohort from image rows (image_id, patient_id, path, optional label/folder/...)."""
    images = pd.DataFrame(rows)
    images["frame"] = pd.array([pd.NA] * len(images), dtype="Int64")
    if "label" in images:
        images["label"] = images["label"].astype("Int8")
    images = probe_images(images, LoadReport(), 60_000_000).reset_index(drop=True)
    if patients is None:
        first = images.groupby("patient_id", sort=False).first().reset_index()
        patients = pd.DataFrame({"patient_id": first["patient_id"].astype(str)})
        if "label" in first:
            patients["label"] = first["label"].astype("Int8")
    spec = spec_from_dict({"name": "synthetic", "format": "image-folder", "images": {}})
    return Cohort(spec=spec, patients=patients, images=images, feature_columns=features or [])


def table_cohort(patients: pd.DataFrame, features: list[str]) -> Cohort:
    spec = spec_from_dict({"name": "synthetic-table", "patients": {}})
    images = pd.DataFrame(columns=["image_id", "patient_id", "path", "frame"])
    return Cohort(spec=spec, patients=patients, images=images, feature_columns=features)


def finding(result: AuditResult, check: str):
    matches = [f for f in result.findings if f.check == check]
    assert matches, f"no finding {check!r}; have {[f.check for f in result.findings]}"
    return matches[0]


def distinct_rows(tmp_path: Path, count: int, start: int = 100, **extra) -> list[dict]:
    return [
        {
            "image_id": f"img{start + k}",
            "patient_id": f"p{start + k}",
            "path": write(tmp_path / f"img{start + k}.png", scan(start + k)),
            "label": k % 2,
            **extra,
        }
        for k in range(count)
    ]


# --- duplicates ------------------------------------------------------------------------------


def test_exact_duplicate_across_folders_and_labels(tmp_path: Path) -> None:
    original = write(tmp_path / "train/infected/a.png", scan(1))
    copy = tmp_path / "test/notinfected/a_copy.png"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(Path(original).read_bytes())
    rows = [
        {
            "image_id": "a",
            "patient_id": "pa",
            "path": original,
            "label": 1,
            "folder": "train/infected",
        },
        {
            "image_id": "a_copy",
            "patient_id": "pb",
            "path": str(copy),
            "label": 0,
            "folder": "test/notinfected",
        },
    ]
    for k, row in enumerate(distinct_rows(tmp_path, 6)):
        rows.append(row | {"folder": f"{'train' if k % 2 else 'test'}/x"})
    result = audit_cohort(make_cohort(rows))

    exact = finding(result, "exact.bytes")
    assert exact.severity == "high"
    assert exact.figures["clusters"] == 1
    assert exact.figures["spanning_patients"] == 1
    assert exact.figures["spanning_labels"] == 1
    assert exact.figures["spanning_parts"] == 1
    clusters = result.duplicate_clusters.set_index("image_id")
    assert clusters.loc["a", "exact_cluster"] == clusters.loc["a_copy", "exact_cluster"]
    assert clusters["exact_cluster"].nunique() == len(rows) - 1  # singletons get their own id
    straddle = finding(result, "split.straddle")
    assert straddle.severity == "high"
    assert straddle.figures["source"] == "folder"
    assert straddle.figures["clusters_spanning_parts"] == 1


def test_reencoded_and_resized_copies_are_near_duplicates(tmp_path: Path) -> None:
    pixels = scan(7, width=320, height=256)
    rows = [
        {"image_id": "png", "patient_id": "p1", "path": write(tmp_path / "o.png", pixels)},
        {
            "image_id": "jpeg",
            "patient_id": "p2",
            "path": write(tmp_path / "o.jpg", pixels, quality=95),
        },
        {
            "image_id": "half",
            "patient_id": "p3",
            "path": write(
                tmp_path / "half.png", cv2.resize(pixels, (160, 128), interpolation=cv2.INTER_AREA)
            ),
        },
        # Same pixels, different bytes (BMP): pixel-identical but not byte-identical.
        {"image_id": "bmp", "patient_id": "p4", "path": write(tmp_path / "o.bmp", pixels)},
    ]
    rows += [r | {"label": None} for r in distinct_rows(tmp_path, 6)]
    for row in rows:
        row["label"] = None
    result = audit_cohort(make_cohort(rows))
    clusters = result.duplicate_clusters.set_index("image_id")

    near = clusters["near_cluster"]
    assert near["png"] == near["jpeg"] == near["half"] == near["bmp"]
    others = near.drop(["png", "jpeg", "half", "bmp"])
    assert others.nunique() == len(others)
    assert near["png"] not in set(others)
    assert clusters.loc["png", "exact_cluster"] == clusters.loc["bmp", "exact_cluster"]
    assert clusters.loc["png", "byte_cluster"] != clusters.loc["bmp", "byte_cluster"]
    assert clusters.loc["png", "exact_cluster"] != clusters.loc["jpeg", "exact_cluster"]
    near_finding = finding(result, "near.phash")
    assert near_finding.figures["clusters"] == 1
    assert near_finding.figures["images_involved"] == 4
    assert near_finding.severity == "warning"  # four patient ids, no labels, no split
    assert finding(result, "exact.bytes").severity == "ok"


def test_patient_groups_merge_patients_sharing_a_duplicate(tmp_path: Path) -> None:
    a, b = scan(11), scan(12)
    rows = [
        {"image_id": "p1_a", "patient_id": "p1", "path": write(tmp_path / "1a.png", a)},
        {"image_id": "p2_a", "patient_id": "p2", "path": write(tmp_path / "2a.png", a)},
        {"image_id": "p2_b", "patient_id": "p2", "path": write(tmp_path / "2b.png", b)},
        {"image_id": "p3_b", "patient_id": "p3", "path": write(tmp_path / "3b.jpg", b, 95)},
        {"image_id": "p4_c", "patient_id": "p4", "path": write(tmp_path / "4c.png", scan(13))},
    ]
    patients = pd.DataFrame({"patient_id": ["p1", "p2", "p3", "p4", "p5_no_images"]})
    result = audit_cohort(make_cohort(rows, patients=patients))
    groups = result.patient_groups

    assert groups["p1"] == groups["p2"] == groups["p3"]  # linked through a chain of copies
    assert groups["p4"] != groups["p1"]
    assert groups["p5_no_images"] not in {groups["p1"], groups["p4"]}
    assert set(groups.index) == {"p1", "p2", "p3", "p4", "p5_no_images"}


def test_assignments_straddling_and_patients_in_two_parts(tmp_path: Path) -> None:
    rows = distinct_rows(tmp_path, 6)
    rows.append(rows[0] | {"image_id": "copy", "patient_id": "p_copy"})
    cohort = make_cohort(rows)
    assignments = pd.Series(
        ["fold0", "fold1", "fold0", "fold1", "fold0", "fold1", "fold1", "fold0"],
        index=["p100", "p101", "p102", "p103", "p104", "p105", "p_copy", "p105"],
    )
    result = audit_cohort(cohort, assignments=assignments)
    straddle = finding(result, "split.straddle")

    assert straddle.severity == "high"
    assert straddle.figures["source"] == "assignments"
    assert straddle.figures["clusters_spanning_parts"] == 1
    assert straddle.figures["patients_in_several_parts"] == 1
    assert straddle.figures["example_patients"] == ["p105"]


def test_clean_cohort_has_no_duplicate_findings(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    result = audit_cohort(
        make_cohort(distinct_rows(tmp_path, 12)), progress=lambda *c: calls.append(c)
    )
    assert calls[-1] == (12, 12)
    for check in ("exact.bytes", "exact.pixels", "near.phash"):
        assert finding(result, check).severity == "ok"
    assert result.patient_groups.nunique() == 12


# --- shortcuts -------------------------------------------------------------------------------


def sized_rows(tmp_path: Path, widths: list[int], labels: list[int]) -> list[dict]:
    return [
        {
            "image_id": f"s{k}",
            "patient_id": f"p{k}",
            "path": write(tmp_path / f"s{k}.png", scan(500 + k, width=w, height=120)),
            "label": y,
        }
        for k, (w, y) in enumerate(zip(widths, labels, strict=True))
    ]


def test_planted_width_shortcut_is_high(tmp_path: Path) -> None:
    labels = [k % 2 for k in range(60)]
    widths = [300 if y else 200 for y in labels]
    result = audit_cohort(make_cohort(sized_rows(tmp_path, widths, labels)))
    width = finding(result, "shortcut.width")

    assert width.severity == "high"
    assert width.figures["auc"] >= 0.95
    assert width.figures["ci_low"] <= width.figures["auc"] <= width.figures["ci_high"]
    assert finding(result, "shortcut.all_image_properties").severity == "high"
    assert finding(result, "shortcut.height").severity == "info"  # constant: skipped
    assert result.worst_severity == "high"


def test_random_sizes_are_not_a_shortcut(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = [k % 2 for k in range(60)]
    widths = [int(w) for w in rng.integers(150, 350, size=60)]
    result = audit_cohort(make_cohort(sized_rows(tmp_path, widths, labels)))
    width = finding(result, "shortcut.width")

    assert width.severity != "high"
    assert width.figures["auc"] < 0.75


def test_categorical_acquisition_column_is_probed(tmp_path: Path) -> None:
    rows = distinct_rows(tmp_path, 40)
    for row in rows:
        row["view_position"] = "PA" if row["label"] else "AP"
        row["scanner_age"] = 3.0  # constant numeric acquisition column
    result = audit_cohort(make_cohort(rows))

    assert finding(result, "shortcut.view_position").severity == "high"
    assert finding(result, "shortcut.scanner_age").severity == "info"
    assert finding(result, "shortcut.all_properties").severity == "high"
    assert "folder" not in {f.check.split(".", 1)[1] for f in result.by_check("shortcut")}


def test_group_that_is_all_positive_is_flagged(tmp_path: Path) -> None:
    rows = distinct_rows(tmp_path, 40)
    cohort = make_cohort(rows)
    cohort.patients["group"] = np.where(cohort.patients["label"] == 1, "siteA", "siteB")
    result = audit_cohort(cohort)
    group = finding(result, "labels.group")

    assert group.severity == "high"
    assert set(group.figures["single_class_groups"]) == {"siteA", "siteB"}


# --- tabular ---------------------------------------------------------------------------------


def tabular_patients(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 2
    return pd.DataFrame(
        {
            "patient_id": [f"t{k}" for k in range(n)],
            "label": pd.array(label, dtype="Int8"),
            "leaky": label + rng.normal(0, 0.1, n),
            "noise": rng.normal(0, 1, n),
            "constant": np.full(n, 2.0),
            "sparse": np.where(rng.random(n) < 0.7, np.nan, rng.normal(0, 1, n)),
            ultrasound_features()[0]: label * 3 + rng.normal(0, 2, n),
        }
    )


def test_tabular_leaky_column_is_high_and_noise_is_not() -> None:
    patients = tabular_patients()
    features = [c for c in patients.columns if c not in ("patient_id", "label")]
    result = audit_cohort(table_cohort(patients, features))

    leaky = finding(result, "tabular.leaky")
    assert leaky.severity == "high"
    assert leaky.figures["auc"] >= 0.9
    assert not result.by_check("tabular.noise")  # nothing to say about a plain column
    assert finding(result, "tabular.constant").severity == "info"
    sparse = finding(result, "tabular.sparse")
    assert sparse.severity == "warning"
    assert sparse.figures["missing_fraction"] > 0.5
    assert finding(result, "images.none").severity == "info"


def test_ultrasound_derived_column_is_flagged() -> None:
    patients = tabular_patients()
    column = ultrasound_features()[0]
    features = ["noise", column]
    result = audit_cohort(table_cohort(patients, features))

    flagged = finding(result, f"tabular.{column}")
    assert flagged.severity in ("info", "warning", "high")
    assert flagged.figures["ultrasound_derived"] is True
    assert "reading the scan" in flagged.detail
    with_without = finding(result, "tabular.ultrasound_with_without")
    assert with_without.figures["ultrasound_columns"] == [column]
    assert with_without.figures["with"]["auc"] > with_without.figures["without"]["auc"]


# --- reports ---------------------------------------------------------------------------------


def test_reports_are_written(tmp_path: Path) -> None:
    rows = distinct_rows(tmp_path, 10)
    rows.append(rows[0] | {"image_id": "dup", "patient_id": "pdup", "label": 1 - rows[0]["label"]})
    result = audit_cohort(make_cohort(rows))

    data = json.loads(result.to_json(tmp_path / "audit.json").read_text())
    assert data["worst_severity"] == "high"
    assert {f["check"] for f in data["findings"]} >= {"exact.bytes", "near.phash"}
    assert len(data["duplicate_clusters"]) == 2

    page = result.to_html(tmp_path / "audit.html").read_text()
    assert "<table class='verdicts'>" in page
    assert "exact.bytes" in page and "Example duplicate pairs" in page
    assert "data:image/png;base64," in page

    console = Console(record=True, width=160)
    result.print_rich(console)
    assert "exact.bytes" in console.export_text()


# --- building blocks -------------------------------------------------------------------------


def test_popcount_hamming_matches_naive() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=300, dtype=np.uint64) * np.uint64(2)
    hashes[5] = hashes[9]  # one exact pair
    hashes[7] = hashes[3] ^ np.uint64(0b101)  # one pair 2 bits apart
    naive = np.array([[bin(int(a) ^ int(b)).count("1") for b in hashes] for a in hashes])
    assert np.array_equal(hamming_matrix(hashes, hashes), naive)

    i, j, dist, nearest = close_pairs(hashes, max_bits=2, block=64)
    expected = {(a, b) for a in range(300) for b in range(a + 1, 300) if naive[a, b] <= 2}
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected
    assert all(naive[a, b] == d for a, b, d in zip(i, j, dist, strict=True))
    np.fill_diagonal(naive, 99)
    assert np.array_equal(nearest, naive.min(axis=1))


def test_phash_is_stable_under_resize_and_differs_between_images() -> None:
    pixels = scan(21, width=400, height=300)
    smaller = cv2.resize(pixels, (200, 150), interpolation=cv2.INTER_AREA)
    same = bin(phash64(pixels) ^ phash64(smaller)).count("1")
    other = bin(phash64(pixels) ^ phash64(scan(22, width=400, height=300))).count("1")
    assert same <= DEFAULT_NEAR_DUP_BITS < other


def test_weighted_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes ties
    assert weighted_auc(y, scores) == pytest.approx(roc_auc_score(y, scores))
    weights = rng.integers(0, 3, 200).astype(float)
    assert weighted_auc(y, scores, weights) == pytest.approx(
        roc_auc_score(y, scores, sample_weight=weights)
    )


def test_padding_fraction_measures_letterbox_bars() -> None:
    content = np.random.default_rng(0).integers(0, 255, (80, 100)).astype(np.uint8)
    boxed = cv2.copyMakeBorder(content, 10, 10, 0, 0, cv2.BORDER_CONSTANT, value=0)
    assert padding_fraction(content) == 0.0
    assert padding_fraction(boxed) == pytest.approx(20 / 100)
    assert padding_fraction(np.zeros((10, 10), np.uint8)) == 1.0


def test_unreadable_image_is_reported_not_fatal(tmp_path: Path) -> None:
    cohort = make_cohort(distinct_rows(tmp_path, 6))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    bad = cohort.images.iloc[[0]].assign(image_id="broken", path=str(broken), sha256="x")
    cohort.images = pd.concat([cohort.images, bad], ignore_index=True)
    result = audit_cohort(cohort)

    assert finding(result, "images.unreadable").figures["unreadable"] == 1
    features = result.image_features.set_index("image_id")
    assert pd.isna(features.loc["broken", "phash"])


def test_duplicate_patient_groups_matches_the_full_audit(tmp_path) -> None:
    from deeppcos.audit.checks import audit_cohort, duplicate_patient_groups
    from deeppcos.data import load_cohort
    from deeppcos.data.synthetic import generate_cohort

    cohort = load_cohort(generate_cohort(tmp_path, n_patients=20, seed=1, image_size=32))
    images = sorted((tmp_path / "images").glob("*.png"))
    other = next(i for i in images if i.name[:9] != images[0].name[:9])
    other.write_bytes(images[0].read_bytes())  # link two patients
    groups = duplicate_patient_groups(cohort)
    assert groups.nunique() == len(cohort.patients) - 1
    assert groups.equals(audit_cohort(cohort).patient_groups)


# --- labels of near-copies ---------------------------------------------------------------------


def near_copy_rows(tmp_path: Path, copy_labels: list[int], same_patient: bool = False) -> list:
    """Scan k (label k % 2) and a JPEG re-encoding of it labelled ``copy_labels[k]``; the copy
    belongs to another patient unless ``same_patient``."""
    rows = []
    for k, copy_label in enumerate(copy_labels):
        pixels = scan(500 + k)
        owner = f"p{k}"
        rows.append(
            {
                "image_id": f"a{k}",
                "patient_id": owner,
                "path": write(tmp_path / f"a{k}.png", pixels),
                "label": k % 2,
            }
        )
        rows.append(
            {
                "image_id": f"b{k}",
                "patient_id": owner if same_patient else f"q{k}",
                "path": write(tmp_path / f"b{k}.jpg", pixels, quality=90),
                "label": copy_label,
            }
        )
    return rows


def test_near_copies_labelled_at_random_are_a_high_finding(tmp_path: Path) -> None:
    """PCOSGen's neighbouring video frames: near-copies whose labels ignore the picture."""
    copy_labels = [(k % 2) if k % 4 < 2 else 1 - (k % 2) for k in range(40)]  # half flipped
    check = finding(
        audit_cohort(make_cohort(near_copy_rows(tmp_path, copy_labels))),
        "labels.near_copy_agreement",
    )
    assert check.severity == "high"
    assert check.figures["pairs"] == 40 and check.figures["labels_differ"] == 0.5
    assert check.figures["differ_by_chance"] == 0.5 and check.figures["label_consistency"] == 0
    assert "noise no image model can fit" in check.detail


def test_near_copies_sharing_labels_are_only_noted(tmp_path: Path) -> None:
    copy_labels = [k % 2 for k in range(40)]
    check = finding(
        audit_cohort(make_cohort(near_copy_rows(tmp_path, copy_labels))),
        "labels.near_copy_agreement",
    )
    assert check.severity == "info" and check.figures["label_consistency"] == 1


def test_near_copies_of_one_patient_or_too_few_pairs_are_not_judged(tmp_path: Path) -> None:
    flipped = [1 - (k % 2) for k in range(40)]
    one_patient = audit_cohort(make_cohort(near_copy_rows(tmp_path, flipped, same_patient=True)))
    assert not one_patient.by_check("labels.near_copy_agreement")
    few = audit_cohort(make_cohort(near_copy_rows(tmp_path / "few", flipped[:10])))
    assert not few.by_check("labels.near_copy_agreement")
