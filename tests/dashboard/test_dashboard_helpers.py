"""The dashboard's logic without Streamlit: run checks, error kinds, live threshold metrics,
lab ranges, the form's features, upload checks and the explanation charts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboards import analysis, figures, runinfo, uploads
from deeppcos.exceptions import ImageError, SchemaError


def _predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d", "e", "f", "g"],
            "label": [1, 1, 0, 0, 1, 0, np.nan],
            "risk": [0.9, 0.05, 0.7, 0.1, 0.02, 0.2, 0.5],
            "decision": pd.array([True, False, True, False, False, False, True], "boolean"),
        }
    )


def test_error_kinds_lead_with_false_negatives_most_confident_first() -> None:
    kinds = analysis.patients_by_kind(_predictions())
    assert list(kinds) == ["false negative", "false positive", "true positive", "true negative"]
    assert kinds["false negative"]["patient_id"].tolist() == ["e", "b"]  # lowest risk first
    assert kinds["false positive"]["patient_id"].tolist() == ["c"]
    assert kinds["true negative"]["patient_id"].tolist() == ["d", "f"]
    assert sum(len(v) for v in kinds.values()) == 6  # the unlabelled patient is left out


def test_metrics_at_a_threshold_match_the_counts() -> None:
    live = analysis.at_threshold(_predictions(), 0.15)
    assert (live["tp"], live["fn"], live["fp"], live["tn"]) == (1, 2, 2, 1)
    assert live["sensitivity"] == pytest.approx(1 / 3)
    assert live["specificity"] == pytest.approx(1 / 3)
    assert analysis.at_threshold(_predictions(), 0.0)["sensitivity"] == 1.0


def test_range_warning_names_the_plausible_range_and_unit() -> None:
    assert analysis.range_warning("lh_iu_l", 12.0) is None
    assert analysis.range_warning("lh_iu_l", None) is None
    warning = analysis.range_warning("lh_iu_l", 400.0)
    assert warning is not None and "0–250 IU/L" in warning and "400" in warning
    assert analysis.range_warning("not_a_feature", 1e9) is None


def test_form_leaves_out_features_computed_from_their_parts() -> None:
    names = ["weight_kg", "height_cm", "bmi_kg_m2", "lh_iu_l", "lh_fsh_ratio", "homa_ir"]
    assert analysis.form_features(names) == ["weight_kg", "height_cm", "lh_iu_l", "lh_fsh_ratio",
                                             "homa_ir"]  # fmt: skip
    table = analysis.patient_table("p1", {"weight_kg": 70.0}, ["weight_kg", "height_cm"])
    assert table.loc[0, "weight_kg"] == 70.0 and np.isnan(table.loc[0, "height_cm"])


def test_run_checks_say_what_is_wrong(tmp_path: Path) -> None:
    assert not runinfo.check_run("").ok
    assert "not found" in runinfo.check_run(tmp_path / "nope").problem
    (tmp_path / ".half.partial").mkdir()
    assert "half-written" in runinfo.check_run(tmp_path / "half").problem
    assert "half-written" in runinfo.check_run(tmp_path / ".half.partial").problem
    (tmp_path / "empty").mkdir()
    check = runinfo.check_run(tmp_path / "empty")
    assert "run.json" in check.problem and "deeppcos train" in check.hint


def test_uploads_are_trusted_by_content_and_cleaned_up(tmp_path: Path) -> None:
    import cv2

    ok, png = cv2.imencode(".png", np.zeros((20, 30), np.uint8))
    assert ok
    assert uploads.check_upload(uploads.Upload("scan.jpg", png.tobytes())) == "PNG"
    with pytest.raises(ImageError, match="not an image"):
        uploads.check_upload(uploads.Upload("scan.png", b"%PDF-1.4 not an image"))
    with pytest.raises(ImageError, match="empty"):
        uploads.check_upload(uploads.Upload("scan.png", b""))
    with pytest.raises(ImageError, match="limit"):
        big = b"\x89PNG" + b"0" * uploads.MAX_UPLOAD_BYTES
        uploads.check_upload(uploads.Upload("big.png", big))
    with pytest.raises(SchemaError, match="patient id"):
        uploads.check_patient_id("has space")
    truncated = uploads.Upload("cut.png", png.tobytes()[:40])  # a PNG signature, broken body
    with pytest.raises(ImageError, match=r"cut\.png"):
        uploads.write_patient("p1", None, [truncated], root=tmp_path)
    assert not list(tmp_path.iterdir()), "a failed upload leaves nothing behind"
    patient = uploads.write_patient("p1", None, [uploads.Upload("a.jpg", png.tobytes())], tmp_path)
    assert [p.name for p in patient.images] == ["p1_1.png"]
    patient.remove()
    assert not patient.folder.exists()


class _Effect:
    def __init__(self, name: str, logit: float, measured: bool = True) -> None:
        self.name, self.label, self.value_text, self.logit = name, name, "1", logit
        self.measured = measured
        self.display = f"{name} = 1" if measured else f"{name}: not measured"


class _Explanation:
    """The fields of a PatientExplanation the charts read."""

    def __init__(self) -> None:
        self.features = [_Effect("a", 0.8), _Effect("b", -0.3, False), _Effect("c", 0.01)]
        self.shares = {"bias": -0.5, "ultrasound": 0.4, "tabular": 0.51}
        self.prediction = {"p_image": 0.6}
        self.logit = -0.5 + 0.4 + 0.51

    def top_features(self, k: int) -> list[_Effect]:
        return self.features[:k]


def test_waterfall_adds_up_to_the_score() -> None:
    expl = _Explanation()
    trace = figures.waterfall_figure(expl, top=2).data[0]  # type: ignore[arg-type]
    assert list(trace.y) == ["baseline", "ultrasound images", "a = 1", "b: not measured",
                             "all other tabular inputs", "score"]  # fmt: skip
    steps = np.array(trace.x[:-1], dtype=float)
    assert steps.sum() == pytest.approx(expl.logit)
    assert trace.measure[-1] == "total"
    # A patient without images has no ultrasound step at all (not a "no scan" one).
    del expl.shares["ultrasound"]
    expl.logit -= 0.4
    trace = figures.waterfall_figure(expl, top=2).data[0]  # type: ignore[arg-type]
    assert "ultrasound images" not in list(trace.y)
    assert np.array(trace.x[:-1], dtype=float).sum() == pytest.approx(expl.logit)
