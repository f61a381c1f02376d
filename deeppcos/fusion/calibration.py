"""Probability calibration of a fused score: isotonic, Platt, or none.

A ranking can be excellent and its probabilities wrong (the tabular branch balances its classes
on purpose, which inflates P(PCOS)); a clinician reads "0.8" as "8 in 10 such women have PCOS",
so the fusion's output is recalibrated on **out-of-fold** predictions (never on predictions of a
model that saw the patient: those are over-confident and would teach the calibrator the wrong
map).

Methods, and why:

* ``"platt"``: ``p_cal = sigmoid(a · logit(p) + b)`` — two parameters, so it cannot overfit a
  small set; it fixes a score that is too confident or too timid (``a``) and shifted (``b``).
  Fitted by Newton's method on Platt's smoothed targets (``(N₊ + 1)/(N₊ + 2)`` for positives,
  ``1/(N₋ + 2)`` for negatives), which keeps ``a`` finite even on separable data. ``a`` is kept
  ≥ 0 (a negative slope would turn a ranking upside down; ``a = 0`` then gives the base rate).
* ``"isotonic"``: the best non-decreasing step map (pool-adjacent-violators), linear between its
  thresholds and flat beyond them. It fixes any monotone distortion, but with one free value
  per step it overfits small sets and can output exactly 0 or 1.
* ``"none"``: the identity, for a score that is already calibrated or to switch calibration off.

Every map is non-decreasing, so calibration never changes the ranking (nor the ROC AUC); NaN in
(a patient with no prediction) stays NaN out.

:func:`choose_calibrator` — the rule:

1. A **small** set — fewer than ``SMALL_ROWS`` (200) scored rows or fewer than
   ``SMALL_CLASS`` (30) patients in the rarer class — gets Platt outright: isotonic's step map
   would follow the noise of a few dozen patients.
2. Otherwise both methods are cross-validated (stratified ``n_folds``, seeded) on the given
   out-of-fold predictions, and isotonic is chosen only when its pooled held-out **Brier score
   and log loss are both lower** than Platt's; any tie or split verdict goes to Platt, the
   simpler map. The scores are kept in ``Calibrator.selection_``.

Persistence: :meth:`Calibrator.to_dict` is plain JSON (Platt: ``a``, ``b``; isotonic: the
threshold arrays ``x`` and ``y``); no pickle. Transforming uses those numbers only, so a
calibrator and its round trip through JSON give identical outputs.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from deeppcos.exceptions import ConfigError, SchemaError, require_fitted

__all__ = ["METHODS", "Calibrator", "choose_calibrator"]

Method = Literal["isotonic", "platt", "none"]
METHODS: tuple[str, ...] = ("isotonic", "platt", "none")
FORMAT = "deeppcos.calibrator"
FORMAT_VERSION = 1
CANDIDATES: tuple[Method, ...] = ("platt", "isotonic")
SMALL_ROWS = 200
SMALL_CLASS = 30
# Probabilities are clipped before the logit so that 0 and 1 map to finite values.
EPS = 1e-6


class Calibrator:
    """A monotone map from a score in [0, 1] to a calibrated probability.

    Fitted attributes: ``n_train_`` (rows used), ``a_`` and ``b_`` (Platt), ``x_`` and ``y_``
    (isotonic thresholds), and ``selection_`` (set by :func:`choose_calibrator`: the rule that
    applied and the cross-validated scores, else ``None``).
    """

    def __init__(self, method: Method = "platt") -> None:
        if method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}; got {method!r}")
        self.method = method
        self.selection_: dict[str, Any] | None = None

    def fit(self, y: Any, p: Any) -> Calibrator:
        """Learn the map from labels ``y`` (0/1) and scores ``p``; rows missing either are
        skipped."""
        if self.method == "none":  # nothing to learn: accept any labels, as a switch-off should
            self.n_train_ = int(np.sum(~np.isnan(_as_probabilities(p, "p"))))
            return self
        labels, scores = _clean(y, p)
        if self.method == "platt":
            self.a_, self.b_ = _fit_platt(labels, scores)
        elif self.method == "isotonic":
            self.x_, self.y_ = _fit_isotonic(labels, scores)
        self.n_train_ = len(labels)
        return self

    def transform(self, p: Any) -> np.ndarray:
        """Calibrated probabilities, same shape as ``p``; NaN stays NaN."""
        self._check_fitted()
        scores = _as_probabilities(p, "p")
        out = np.full(scores.shape, np.nan)
        scored = ~np.isnan(scores)
        out[scored] = self._map(scores[scored])
        return out

    def _map(self, p: np.ndarray) -> np.ndarray:
        if self.method == "platt":
            return _sigmoid(self.a_ * _logit(p) + self.b_)
        if self.method == "isotonic":
            # np.interp holds the end values beyond the thresholds, as isotonic "clip" does.
            return np.interp(p, self.x_, self.y_)
        return p.copy()

    def _check_fitted(self) -> None:
        require_fitted(
            self, "n_train_", "call fit(), choose_calibrator() or Calibrator.from_dict() first"
        )

    # --- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters (floats only; no pickle)."""
        self._check_fitted()
        out: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "n_train": self.n_train_,
            "selection": self.selection_,
        }
        if self.method == "platt":
            out.update(a=self.a_, b=self.b_)
        elif self.method == "isotonic":
            out.update(x=self.x_.tolist(), y=self.y_.tolist())
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        """Rebuild what :meth:`to_dict` wrote."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SchemaError(f"not a calibrator dictionary (expected format {FORMAT!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise SchemaError(
                f"calibrator format version {data.get('format_version')!r}; this deeppcos reads "
                f"{FORMAT_VERSION}"
            )
        try:
            calibrator = cls(data["method"])
            calibrator.n_train_ = int(data["n_train"])
            calibrator.selection_ = data.get("selection")
            if calibrator.method == "platt":
                calibrator.a_, calibrator.b_ = float(data["a"]), float(data["b"])
            elif calibrator.method == "isotonic":
                calibrator.x_, calibrator.y_ = _thresholds(data["x"], data["y"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"invalid calibrator dictionary: {exc!r}") from exc
        return calibrator


def choose_calibrator(y: Any, p: Any, seed: int = 0, n_folds: int = 5) -> Calibrator:
    """Pick Platt or isotonic by the rule in the module notes, fitted on all of ``(y, p)``.

    ``p`` must be out-of-fold predictions (see the module notes).
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ConfigError(f"n_folds must be an integer ≥ 2; got {n_folds!r}")
    labels, scores = _clean(y, p)
    positives = int(labels.sum())
    rarer = min(positives, len(labels) - positives)
    selection: dict[str, Any] = {"n": len(labels), "positives": positives}
    if len(labels) < SMALL_ROWS or rarer < SMALL_CLASS:
        method: Method = "platt"
        selection["rule"] = (
            f"small set (< {SMALL_ROWS} rows or < {SMALL_CLASS} in the rarer class): Platt"
        )
    else:
        scores_cv = {m: _cross_validated(m, labels, scores, seed, n_folds) for m in CANDIDATES}
        iso, platt = scores_cv["isotonic"], scores_cv["platt"]
        better = iso["brier"] < platt["brier"] and iso["log_loss"] < platt["log_loss"]
        method = "isotonic" if better else "platt"
        selection.update(cv=scores_cv, n_folds=n_folds, seed=seed)
        selection["rule"] = (
            "isotonic: lower cross-validated Brier and log loss than Platt"
            if better
            else "Platt: isotonic not lower on both cross-validated Brier and log loss"
        )
    calibrator = Calibrator(method).fit(labels, scores)
    calibrator.selection_ = selection
    return calibrator


# --- fitting ---------------------------------------------------------------------------------


def _fit_platt(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Minimise the log loss of sigmoid(a·logit(p) + b) against Platt's smoothed targets."""
    positives = y.sum()
    negatives = len(y) - positives
    target = np.where(y == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    x = np.column_stack([_logit(p), np.ones(len(p))])
    w = np.array([1.0, 0.0])  # start from the identity map
    loss = _platt_loss(x, w, target)
    for _ in range(100):
        mu = _sigmoid(x @ w)
        gradient = x.T @ (mu - target)
        # A tiny ridge keeps the 2 × 2 Hessian invertible when every score is the same.
        hessian = (x * (mu * (1 - mu))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w, new_loss = _backtrack(x, w, step, target, loss)
        if loss - new_loss < 1e-12 * max(1.0, abs(loss)):
            break
        loss = new_loss
    if w[0] < 0:  # the score ranks backwards: do not reverse it, fall back to the base rate
        return 0.0, float(_logit(np.array([target.mean()]))[0])
    return float(w[0]), float(w[1])


def _backtrack(
    x: np.ndarray, w: np.ndarray, step: np.ndarray, target: np.ndarray, loss: float
) -> tuple[np.ndarray, float]:
    """Halve the Newton step until the loss does not rise (the loss is convex, so this ends)."""
    scale = 1.0
    for _ in range(30):
        candidate = w - scale * step
        candidate_loss = _platt_loss(x, candidate, target)
        if candidate_loss <= loss:
            return candidate, candidate_loss
        scale /= 2
    return w, loss


def _platt_loss(x: np.ndarray, w: np.ndarray, target: np.ndarray) -> float:
    eta = x @ w
    # log(1 + e^η) − t·η, the Bernoulli log loss written without overflow.
    return float(np.sum(np.logaddexp(0.0, eta) - target * eta))


def _fit_isotonic(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # scikit-learn is imported where a calibrator is fitted: a loaded run's calibrators are
    # plain arrays, and the import costs about a second of every cold prediction.
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(p, y.astype("float64"))
    return _thresholds(model.X_thresholds_, model.y_thresholds_)


def _thresholds(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    if xs.ndim != 1 or xs.shape != ys.shape or len(xs) == 0:
        raise ValueError(f"isotonic thresholds x and y must be equal-length lists; got {xs.shape}")
    if np.any(np.diff(xs) < 0) or np.any(np.diff(ys) < 0):
        raise ValueError("isotonic thresholds must be non-decreasing")
    return xs, ys


def _cross_validated(
    method: Method, y: np.ndarray, p: np.ndarray, seed: int, n_folds: int
) -> dict[str, float]:
    """Pooled held-out Brier score and log loss of ``method`` over stratified folds."""
    held_out = np.empty(len(y))
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(p, y):
        held_out[test] = Calibrator(method).fit(y[train], p[train]).transform(p[test])
    return {"brier": _brier(y, held_out), "log_loss": _log_loss(y, held_out)}


# --- small numerics ----------------------------------------------------------------------------


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    # Clipped: an isotonic 0 for a held-out positive costs a lot (it should) but not infinity.
    q = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, EPS, 1 - EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _as_probabilities(p: Any, name: str) -> np.ndarray:
    try:
        values = np.asarray(p, dtype="float64")
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{name} must be numeric probabilities; {exc}") from exc
    finite = values[~np.isnan(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise SchemaError(
            f"{name} must lie in [0, 1] (NaN for missing); got values from {finite.min():g} "
            f"to {finite.max():g}"
        )
    return values


def _clean(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """1-D labels (0/1) and scores of the rows where both are present."""
    scores = _as_probabilities(p, "p").ravel()
    try:
        labels = np.asarray(y, dtype="float64").ravel()
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"y must be 0/1 labels (NaN for missing); {exc}") from exc
    if labels.shape != scores.shape:
        raise SchemaError(f"y has {labels.size} labels for {scores.size} scores")
    keep = ~np.isnan(labels) & ~np.isnan(scores)
    labels, scores = labels[keep], scores[keep]
    if not np.isin(labels, (0.0, 1.0)).all():
        raise SchemaError(f"y must hold 0/1 labels; got values {np.unique(labels)[:10]}")
    if len(np.unique(labels)) < 2:
        raise SchemaError(
            f"calibration needs both classes; the {len(labels)} scored rows hold one class only"
        )
    return labels, scores
