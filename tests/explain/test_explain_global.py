"""The global view: importance, beeswarm, dependence and modality-share figures, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from deeppcos.cli import app
from deeppcos.explain.global_view import global_explanation, write_global_view

runner = CliRunner()


@pytest.fixture(scope="module")
def explanation(predictor: Any, cohort: Any) -> Any:
    return global_explanation(predictor, cohort)


def test_importance_and_shares(explanation: Any, predictor: Any) -> None:
    table = explanation.importance()
    assert "ultrasound" in table.index
    assert set(predictor.branches["tabular"].feature_names_) <= set(table.index)
    fused = table["mean_abs_fused"].to_numpy()
    assert np.all(np.diff(fused) <= 0)  # sorted
    # A feature's contribution is the late fusion's tabular weight times its SHAP value for a
    # patient with images too, the SHAP value itself for one scored by the labs alone; the mean
    # is over the patients who have labs (a patient without labs has no tabular term at all).
    branch = explanation.tabular_shap
    routes = explanation.explained.predictions["modalities"]
    with_labs = routes[explanation.explained.predictions["p_tabular"].notna()].to_numpy()
    weight = np.where(with_labs == "tabular+image", abs(predictor.fusion.coef_["tabular"]), 1.0)
    assert (with_labs == "tabular").any()
    expected = (np.abs(np.asarray(branch.values)) * weight[:, None]).mean(axis=0)
    np.testing.assert_allclose(
        table.loc[list(branch.feature_names), "mean_abs_fused"], expected, rtol=1e-9
    )
    summary = explanation.modality_summary()
    assert summary["patients"] == len(explanation.labels) == 80
    assert sum(summary["modalities"].values()) == 80
    # The images' share of |image| + |tabular| logit points, patient by patient, summarised.
    shares = explanation.explained.attribution.modality_shares().dropna(subset=["logit"])
    both = shares.dropna(subset=["ultrasound", "tabular"])
    own = (both["ultrasound"].abs() / (both["ultrasound"].abs() + both["tabular"].abs())).dropna()
    assert summary["ultrasound_fraction"]["median"] == pytest.approx(float(own.median()))
    low, high = summary["ultrasound_fraction"]["quartiles"]
    assert low <= summary["ultrasound_fraction"]["median"] <= high


def test_figures_are_written_and_closed(explanation: Any, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    written = write_global_view(explanation, tmp_path, top=2)
    assert {"importance", "beeswarm", "modality_shares", "json"} <= set(written)
    dependence = [k for k in written if k.startswith("dependence_")]
    assert len(dependence) == 2
    for name, path in written.items():
        if name != "json":
            assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 5000
    data = json.loads(written["json"].read_text())
    assert data["fusion_method"] == "late" and data["importance"][0]["input"]
    assert plt.get_fignums() == []


def test_part_and_cli(predictor: Any, cohort: Any, run_dir: Path, tmp_path: Path) -> None:
    test = global_explanation(predictor, cohort, part="test")
    split = json.loads((run_dir / "split.json").read_text())["assignments"]
    assert set(test.explained.predictions.index) == {p for p, s in split.items() if s == "test"}
    result = runner.invoke(
        app, ["explain", str(run_dir), "--global", "--out", str(tmp_path / "g"), "--top", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g" / "beeswarm.png").is_file() and (
        tmp_path / "g" / "global.json"
    ).is_file()
    bad = runner.invoke(
        app, ["explain", str(run_dir), "--global", "--out", str(tmp_path), "--part", "x"]
    )
    assert bad.exit_code == 2
