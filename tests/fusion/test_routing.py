"""Routing by the modalities a patient has: the fusion for those with all of them, a single
branch for those missing one, each route calibrated on its own out-of-fold scores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deeppcos.exceptions import DataFileError, SchemaError
from deeppcos.fusion.calibration import choose_calibrator
from deeppcos.fusion.routing import (
    Router,
    full_route,
    missingness_report,
    missingness_sentence,
    routes_of,
)


def _oof(n: int = 600, seed: int = 0, informative: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Out-of-fold branch scores; ~10% of patients lack images and ~8% lack labs. With
    ``informative``, patients without images are mostly positive."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * z))).astype(float)
    p_tab = 1 / (1 + np.exp(-(1.5 * z + rng.normal(size=n))))
    p_img = 1 / (1 + np.exp(-(z + rng.normal(scale=1.3, size=n))))
    no_image = rng.random(n) < 0.1
    if informative:
        no_image = (y == 1) & (rng.random(n) < 0.3)
    no_labs = ~no_image & (rng.random(n) < 0.08)
    p_img[no_image] = np.nan
    p_tab[no_labs] = np.nan
    frame = pd.DataFrame({"p_tabular": p_tab, "p_image": p_img})
    return frame, y


def _fused(frame: pd.DataFrame) -> np.ndarray:
    both = frame.notna().all(axis=1).to_numpy()
    logit = np.log(frame / (1 - frame)).sum(axis=1).to_numpy()
    return np.where(both, 1 / (1 + np.exp(-logit)), np.nan)


def test_routes_follow_the_modalities_present() -> None:
    frame = pd.DataFrame(
        {"p_tabular": [0.2, np.nan, 0.4, np.nan], "p_image": [0.3, 0.6, np.nan, np.nan]}
    )
    assert routes_of(frame, ["tabular", "image"]).tolist() == [
        "tabular+image",
        "image",
        "tabular",
        "none",
    ]
    # A tabular-only run ignores an image probability it has no model for.
    assert routes_of(frame, ["tabular"]).tolist() == ["tabular", "none", "tabular", "none"]
    assert full_route(["image", "tabular"]) == "tabular+image" and full_route(["image"]) == "image"


def test_a_single_modality_route_is_that_branch_calibrated_on_everyone_with_it() -> None:
    frame, y = _oof()
    router = Router.fit(frame, _fused(frame), y, ["tabular", "image"], seed=0)
    assert set(router.routes) == {"tabular+image", "tabular", "image"}
    tabular = router.routes["tabular"]
    # Fitted on every development patient with labs, not only those who lack images.
    assert tabular.n == int(frame["p_tabular"].notna().sum()) and tabular.scorer == "branch"
    reference = choose_calibrator(
        y[frame["p_tabular"].notna()], frame["p_tabular"].dropna().to_numpy()
    )
    routes = router.route(frame)
    probability = router.score(frame, _fused(frame), routes)
    risk = router.calibrate(probability, routes)
    no_images = routes == "tabular"
    np.testing.assert_array_equal(probability[no_images], frame["p_tabular"][no_images])
    np.testing.assert_allclose(
        risk[no_images], reference.transform(frame["p_tabular"][no_images]), atol=1e-12
    )
    both = routes == "tabular+image"
    np.testing.assert_array_equal(probability[both], _fused(frame)[both])
    assert router.routes["tabular+image"].n == int(both.sum())
    assert not np.isnan(risk).any()


def test_removing_a_modality_gives_the_other_routes_risk() -> None:
    frame, y = _oof()
    router = Router.fit(frame, _fused(frame), y, ["tabular", "image"], seed=0)
    both = frame.notna().all(axis=1)
    without_images = frame[both].assign(p_image=np.nan)
    routes = router.route(without_images)
    assert set(routes) == {"tabular"}
    risk = router.calibrate(router.score(without_images, _fused(without_images), routes), routes)
    expected = router.calibrator("tabular").transform(frame.loc[both, "p_tabular"])
    np.testing.assert_allclose(risk, expected, atol=1e-12)


def test_a_one_branch_run_has_only_the_full_route() -> None:
    frame, y = _oof()
    tab = frame[["p_tabular"]]
    router = Router.fit(tab, tab["p_tabular"].to_numpy(), y, ["tabular"], seed=0)
    assert list(router.routes) == ["tabular"] and router.routes["tabular"].scorer == "fusion"
    assert router.describe("tabular", "late") == "late fusion of tabular"


def test_round_trip_and_bad_files(tmp_path) -> None:
    frame, y = _oof()
    router = Router.fit(frame, _fused(frame), y, ["tabular", "image"], seed=0)
    again = Router.load(router.save(tmp_path).parent)
    routes = router.route(frame)
    p = router.score(frame, _fused(frame), routes)
    np.testing.assert_array_equal(router.calibrate(p, routes), again.calibrate(p, routes))
    assert json.loads((tmp_path / "routes.json").read_text())["full_route"] == "tabular+image"
    with pytest.raises(DataFileError, match="not found"):
        Router.load(tmp_path / "nowhere")
    (tmp_path / "routes.json").write_text(json.dumps({"format": "deeppcos.routes"}))
    with pytest.raises(DataFileError, match="version"):
        Router.load(tmp_path)
    with pytest.raises(SchemaError, match="one class only"):
        Router.fit(frame, _fused(frame), np.zeros(len(y)), ["tabular", "image"])


def test_missingness_is_measured_and_reported_never_used() -> None:
    frame, y = _oof(n=1500, seed=3)
    report = missingness_report(y, frame, ["tabular", "image"])
    assert report["image"]["informative"] is False and report["image"]["without"] > 100
    assert report["image"]["with"] + report["image"]["without"] == len(y)
    sentence = missingness_sentence("image", report["image"], "pcos")
    assert "no sign that having them is related" in sentence
    frame, y = _oof(n=1500, seed=3, informative=True)
    report = missingness_report(y, frame, ["tabular", "image"])
    image = report["image"]
    assert image["informative"] is True and image["positive_share_without"] == 1.0
    sentence = missingness_sentence("image", image, "pcos")
    assert "related to the label" in sentence and "does not use" in sentence
    assert missingness_report(y, frame[["p_tabular"]], ["tabular"]) == {}
