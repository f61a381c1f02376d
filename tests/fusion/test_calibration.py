"""Calibration: Platt and isotonic maps, the choice between them, JSON round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deeppcos.exceptions import ConfigError, NotFittedError, SchemaError
from deeppcos.fusion.calibration import SMALL_CLASS, SMALL_ROWS, Calibrator, choose_calibrator


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True risk q, labels drawn from it, and the score q**3: well ranked, far too low."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.02, 0.98, size=n)
    return (rng.random(n) < q).astype(int), q**3


def _step(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Risk 0.1 below a score of 0.5 and 0.9 above: a shape no sigmoid of logit(p) can follow."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(size=n)
    return (rng.random(n) < np.where(s < 0.5, 0.1, 0.9)).astype(int), s


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        rows = index == b
        if rows.any():
            total += rows.mean() * abs(y[rows].mean() - p[rows].mean())
    return total


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_reduces_ece_and_brier_on_held_out_rows(method):
    y, p = _miscalibrated(3000, seed=0)
    y_test, p_test = _miscalibrated(3000, seed=1)
    calibrated = Calibrator(method).fit(y, p).transform(p_test)
    assert _ece(y_test, calibrated) < _ece(y_test, p_test) / 3
    assert _brier(y_test, calibrated) < _brier(y_test, p_test) - 0.03


@pytest.mark.parametrize("method", ["platt", "isotonic", "none"])
def test_monotone_and_nan_stays_nan(method):
    y, p = _miscalibrated(500, seed=2)
    calibrator = Calibrator(method).fit(y, p)
    grid = np.linspace(0, 1, 401)
    out = calibrator.transform(grid)
    assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1
    with_gaps = np.array([0.2, np.nan, 0.7, np.nan])
    mapped = calibrator.transform(with_gaps)
    assert np.isnan(mapped[[1, 3]]).all() and np.isfinite(mapped[[0, 2]]).all()
    if method == "none":
        np.testing.assert_array_equal(out, grid)


def test_platt_recovers_a_known_sigmoid():
    rng = np.random.default_rng(3)
    logit = rng.normal(scale=2.0, size=20000)
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(len(p)) < 1 / (1 + np.exp(-(0.5 * logit - 1.0)))).astype(int)
    calibrator = Calibrator("platt").fit(y, p)
    assert calibrator.a_ == pytest.approx(0.5, abs=0.05)
    assert calibrator.b_ == pytest.approx(-1.0, abs=0.08)


def test_platt_never_reverses_a_ranking():
    y, p = _miscalibrated(400, seed=4)
    calibrator = Calibrator("platt").fit(y, 1 - p)  # a score that ranks backwards
    assert calibrator.a_ == 0.0
    out = calibrator.transform(np.array([0.1, 0.5, 0.9]))
    assert np.ptp(out) == 0 and out[0] == pytest.approx(y.mean(), abs=0.01)


def test_small_sets_get_platt():
    y, p = _step(SMALL_ROWS - 1, seed=5)  # isotonic would suit the shape; the set is too small
    chosen = choose_calibrator(y, p)
    assert chosen.method == "platt" and "small" in chosen.selection_["rule"]
    assert "cv" not in chosen.selection_
    # Enough rows but too few in the rarer class: Platt too.
    rng = np.random.default_rng(6)
    p = rng.uniform(size=1000)
    y = np.zeros(1000, dtype=int)
    y[np.argsort(p)[-(SMALL_CLASS - 1) :]] = 1
    assert choose_calibrator(y, p).method == "platt"


def test_large_set_with_a_step_shaped_risk_gets_isotonic():
    y, p = _step(2000, seed=7)
    chosen = choose_calibrator(y, p, seed=0)
    cv = chosen.selection_["cv"]
    assert chosen.method == "isotonic"
    assert cv["isotonic"]["brier"] < cv["platt"]["brier"]
    assert cv["isotonic"]["log_loss"] < cv["platt"]["log_loss"]


@pytest.mark.parametrize("seed", [8, 9])
def test_large_set_choice_follows_the_rule(seed):
    """Isotonic iff lower on both cross-validated Brier and log loss."""
    y, p = _miscalibrated(600, seed=seed)
    chosen = choose_calibrator(y, p, seed=seed)
    cv = chosen.selection_["cv"]
    both = all(cv["isotonic"][k] < cv["platt"][k] for k in ("brier", "log_loss"))
    assert chosen.method == ("isotonic" if both else "platt")
    assert chosen.n_train_ == 600


def test_a_split_verdict_goes_to_platt():
    """Isotonic a little better on Brier but worse on log loss: the simpler map wins."""
    rng = np.random.default_rng(1)
    logit = rng.normal(scale=1.5, size=600)
    y = (rng.random(600) < 1 / (1 + np.exp(-(0.6 * logit + 0.3)))).astype(int)
    chosen = choose_calibrator(y, 1 / (1 + np.exp(-logit)), seed=1)
    cv = chosen.selection_["cv"]
    assert cv["isotonic"]["brier"] < cv["platt"]["brier"]
    assert cv["isotonic"]["log_loss"] > cv["platt"]["log_loss"]
    assert chosen.method == "platt"


@pytest.mark.parametrize("method", ["platt", "isotonic", "none"])
def test_json_round_trip_gives_identical_output(method):
    y, p = _miscalibrated(800, seed=10)
    calibrator = Calibrator(method).fit(y, p)
    again = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    probe = np.append(np.linspace(0, 1, 257), np.nan)
    np.testing.assert_array_equal(again.transform(probe), calibrator.transform(probe))
    chosen = choose_calibrator(y, p)
    reloaded = Calibrator.from_dict(json.loads(json.dumps(chosen.to_dict())))
    assert reloaded.selection_ == chosen.selection_


def test_errors_say_what_is_wrong():
    y, p = _miscalibrated(300, seed=11)
    with pytest.raises(ConfigError, match="method must be"):
        Calibrator("beta")  # type: ignore[arg-type]
    with pytest.raises(NotFittedError, match="not fitted"):
        Calibrator().transform(p)
    with pytest.raises(SchemaError, match="both classes"):
        Calibrator("isotonic").fit(np.ones(300), p)
    with pytest.raises(SchemaError, match=r"\[0, 1\]"):
        Calibrator().fit(y, p * 2 + 0.1)
    with pytest.raises(SchemaError, match="labels for"):
        Calibrator().fit(y[:10], p)
    with pytest.raises(SchemaError, match="0/1"):
        Calibrator().fit(y * 2, p)
    with pytest.raises(ConfigError, match="n_folds"):
        choose_calibrator(y, p, n_folds=1)
    with pytest.raises(SchemaError, match="format"):
        Calibrator.from_dict({"format": "pickle"})
