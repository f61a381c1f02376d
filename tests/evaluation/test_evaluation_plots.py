from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from deeppcos.evaluation.plots import (
    plot_confidence_histograms,
    plot_confusion_matrix,
    plot_pr,
    plot_reliability,
    plot_roc,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)

    def model(strength: float) -> np.ndarray:
        return 1 / (1 + np.exp(-(strength * (y - 0.5) * 3 + rng.normal(0, 1, 200))))

    return {"tabular": (y, model(0.8)), "image": (y, model(0.5)), "fusion": (y, model(1.2))}


def assert_png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 5_000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert plt.get_fignums() == []  # the figure was closed


def test_roc_and_pr_with_several_models_and_an_operating_point(models, tmp_path: Path) -> None:
    thresholds = {"fusion": 0.4}
    assert_png(plot_roc(models, tmp_path / "roc.png", thresholds=thresholds, n_boot=100))
    assert_png(plot_pr(models, tmp_path / "sub" / "pr.png", thresholds=thresholds, n_boot=100))


def test_reliability_for_one_and_several_models(models, tmp_path: Path) -> None:
    assert_png(plot_reliability(models, tmp_path / "reliability.png"))
    assert_png(plot_reliability({"fusion": models["fusion"]}, tmp_path / "one.png", n_bins=5))


def test_confusion_matrices_binary_and_ordinal(tmp_path: Path) -> None:
    assert_png(plot_confusion_matrix([[50, 5], [3, 42]], tmp_path / "binary.png",
                                     labels=["no PCOS", "PCOS"]))  # fmt: skip
    ordinal = [[30, 4, 0, 0], [5, 20, 6, 1], [0, 4, 15, 3], [0, 0, 0, 0]]  # an empty true grade
    labels = ["none", "mild", "moderate", "severe"]
    assert_png(plot_confusion_matrix(ordinal, tmp_path / "grades.png", labels=labels))
    with pytest.raises(ValueError, match="label"):
        plot_confusion_matrix([[1, 2], [3, 4]], tmp_path / "bad.png", labels=["a"])


def test_confidence_histograms(models, tmp_path: Path) -> None:
    y, p = models["fusion"]
    assert_png(plot_confidence_histograms(y, p, tmp_path / "hist.png", threshold=0.3,
                                          class_names=("no PCOS", "PCOS")))  # fmt: skip
    assert_png(plot_confidence_histograms(y, p, tmp_path / "plain.png"))


def test_a_failing_plot_still_closes_its_figure(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plot_roc({"bad": ([0, 1], [0.2, 7.0])}, tmp_path / "bad.png")
    assert plt.get_fignums() == []
    assert not (tmp_path / "bad.png").exists()
