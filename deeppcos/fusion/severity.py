"""An ordinal severity head: K ordered grades as K − 1 cumulative binary problems.

Frank & Hall (2001), "A simple approach to ordinal classification": for grades
``0 < 1 < … < K−1`` train one binary classifier per threshold ``k`` on the target
``grade > k``; the class probabilities follow from the cumulative ones,

    P(grade = 0) = 1 − P(>0),  P(grade = k) = P(>k−1) − P(>k),  P(grade = K−1) = P(>K−2).

Design choices, and why:

* **Independent thresholds, then made monotone.** The K − 1 classifiers are fitted separately, so
  nothing stops P(>1) from exceeding P(>0) for some patient, which would give a negative class
  probability. The cumulative probabilities are therefore clipped to [0, 1] and replaced by their
  running minimum over k, which makes them non-increasing; the differences are then ≥ 0 and sum
  to 1 up to rounding (a telescoping sum).
* **Two kinds.** ``"xgboost"``: shallow boosted trees (depth 3, 200 rounds at learning rate 0.05,
  one thread) with XGBoost's native handling of missing values, as in the tabular branch.
  ``"logistic"``: L2 logistic regression on median-imputed, standardised inputs, for small inputs
  (a handful of branch outputs, or a few hundred patients) where trees overfit.
* **Only graded rows train.** A row whose grade is missing (``NaN``/``None``/``<NA>``) is
  dropped from every threshold problem; it can still be scored.
* **A threshold with one class only** (e.g. no ``severe`` patient in a training fold) gets a
  constant probability, the observed rate (0 or 1), rather than an error, so cross-validation
  folds with a rare grade still fit; ``constant_thresholds_`` lists them.
* **Safe persistence.** ``save`` writes XGBoost's own UBJ format per threshold plus one JSON file
  (the logistic coefficients and imputation values live in the JSON); nothing is pickled.
  Predictions before and after a save/load round trip are identical, because both paths use the
  same arrays and boosters.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xgboost as xgb

from deeppcos.exceptions import (
    ConfigError,
    DataFileError,
    SchemaError,
    require_fitted,
)
from deeppcos.runs.persist import read_meta, write_meta

__all__ = ["OrdinalHead"]

Kind = Literal["xgboost", "logistic"]
KINDS: tuple[str, ...] = ("xgboost", "logistic")
META_FILE = "ordinal_head.json"
FORMAT = "deeppcos.ordinal_head"
FORMAT_VERSION = 1


# --- one threshold's model -------------------------------------------------------------------


class _Constant:
    """P(grade > k) when the training rows hold one side of the threshold only."""

    def __init__(self, p: float) -> None:
        self.p = float(p)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.p)

    def to_json(self, folder: Path, k: int) -> dict[str, Any]:
        return {"type": "constant", "p": self.p}


class _Boosted:
    def __init__(self, booster: xgb.Booster) -> None:
        self.booster = booster

    def predict(self, x: np.ndarray) -> np.ndarray:
        # In place: no DMatrix to build (the same trees and missing-value handling).
        return np.asarray(self.booster.inplace_predict(x, missing=np.nan), dtype="float64")

    def to_json(self, folder: Path, k: int) -> dict[str, Any]:
        name = f"threshold_{k}.ubj"
        self.booster.save_model(folder / name)
        return {"type": "xgboost", "file": name}


class _Linear:
    """Logistic model on inputs already imputed and standardised by :class:`_Standardiser`."""

    def __init__(self, coef: np.ndarray, intercept: float) -> None:
        self.coef = np.asarray(coef, dtype="float64")
        self.intercept = float(intercept)

    def predict(self, x: np.ndarray) -> np.ndarray:
        # Logistic sigmoid without overflow (scipy's expit, with numpy only).
        return np.exp(-np.logaddexp(0.0, -(x @ self.coef + self.intercept)))

    def to_json(self, folder: Path, k: int) -> dict[str, Any]:
        return {"type": "logistic", "coef": self.coef.tolist(), "intercept": self.intercept}


class _Standardiser:
    """Median imputation then z-scores, learned on the graded training rows."""

    def __init__(self, medians: np.ndarray, means: np.ndarray, scales: np.ndarray) -> None:
        self.medians = np.asarray(medians, dtype="float64")
        self.means = np.asarray(means, dtype="float64")
        self.scales = np.asarray(scales, dtype="float64")

    @classmethod
    def fit(cls, x: np.ndarray) -> _Standardiser:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled next
            medians = np.nanmedian(x, axis=0)
        medians = np.where(np.isnan(medians), 0.0, medians)  # a column never observed
        filled = np.where(np.isnan(x), medians, x)
        scales = filled.std(axis=0)
        # A constant column carries nothing; scale 1 keeps it at 0 instead of dividing by 0.
        return cls(medians, filled.mean(axis=0), np.where(scales > 0, scales, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.where(np.isnan(x), self.medians, x) - self.means) / self.scales

    def to_json(self) -> dict[str, list[float]]:
        return {
            "medians": self.medians.tolist(),
            "means": self.means.tolist(),
            "scales": self.scales.tolist(),
        }


# --- the head ----------------------------------------------------------------------------------


class OrdinalHead:
    """Ordinal classifier for K ordered grades (sklearn-style; fitted attributes end in ``_``).

    Fitted attributes: ``levels_`` (the grades, lowest first), ``n_classes_``,
    ``feature_names_`` (column names when fitted on a DataFrame, else ``None``),
    ``n_features_in_``, ``n_train_`` (graded rows used), ``class_counts_`` (per grade),
    ``thresholds_`` (K − 1 fitted models for P(grade > k)), ``constant_thresholds_`` (the k whose
    model is a constant) and, for ``kind="logistic"``, ``standardiser_``.
    """

    def __init__(
        self,
        kind: Kind = "xgboost",
        *,
        n_estimators: int = 200,
        max_depth: int = 3,
        learning_rate: float = 0.05,
        C: float = 1.0,
        n_jobs: int = 1,
        seed: int = 0,
    ) -> None:
        self.kind = kind
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.C = C
        self.n_jobs = n_jobs
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "C": self.C,
            "n_jobs": self.n_jobs,
            "seed": self.seed,
        }

    # --- fitting -----------------------------------------------------------------------------

    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        y: pd.Series | Sequence[Any] | np.ndarray,
        levels: Sequence[Any] | None = None,
    ) -> OrdinalHead:
        """Fit on the rows of ``X`` whose grade ``y`` is present.

        ``y``: an ordered categorical (its categories are the grades), integer codes
        ``0 … K−1``, or any labels together with ``levels`` (the grades, lowest first).
        """
        _check_params(self.get_params())
        x, names = _as_matrix(X)
        codes, grade_levels = _encode_grades(y, levels, len(x))
        graded = codes >= 0
        if not graded.any():
            raise SchemaError("no row has a grade: nothing to fit (missing grades are skipped)")
        x, codes = x[graded], codes[graded]
        self.levels_ = grade_levels
        self.n_classes_ = len(grade_levels)
        self.feature_names_ = names
        self.n_features_in_ = x.shape[1]
        self.n_train_ = len(codes)
        self.class_counts_ = [int((codes == k).sum()) for k in range(self.n_classes_)]
        if self.kind == "logistic":
            self.standardiser_ = _Standardiser.fit(x)
            x = self.standardiser_.transform(x)
        self.thresholds_ = [
            self._fit_threshold(x, (codes > k).astype("float64"))
            for k in range(self.n_classes_ - 1)
        ]
        self.constant_thresholds_ = [
            k for k, m in enumerate(self.thresholds_) if isinstance(m, _Constant)
        ]
        return self

    def _fit_threshold(self, x: np.ndarray, target: np.ndarray) -> Any:
        if target.min() == target.max():
            return _Constant(target[0])
        if self.kind == "logistic":
            from sklearn.linear_model import LogisticRegression  # fitting only

            model = LogisticRegression(C=self.C, max_iter=2000)
            model.fit(x, target.astype(int))
            return _Linear(model.coef_[0], model.intercept_[0])
        params = {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "nthread": self.n_jobs,
            "seed": self.seed,
            "tree_method": "hist",
        }
        train = xgb.DMatrix(x, label=target, missing=np.nan)
        return _Boosted(xgb.train(params, train, num_boost_round=self.n_estimators))

    # --- prediction --------------------------------------------------------------------------

    def predict_cumulative(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """``(n, K − 1)``: P(grade > k) for k = 0 … K − 2, non-increasing along each row."""
        self._check_fitted()
        x, _ = _as_matrix(X, self.feature_names_, self.n_features_in_)
        if self.kind == "logistic":
            x = self.standardiser_.transform(x)
        raw = np.column_stack([m.predict(x) for m in self.thresholds_])
        return np.minimum.accumulate(np.clip(raw, 0.0, 1.0), axis=1)

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """``(n, K)`` class probabilities, each ≥ 0, rows summing to 1, columns as ``levels_``."""
        cumulative = self.predict_cumulative(X)
        n = len(cumulative)
        upper = np.hstack([np.ones((n, 1)), cumulative])
        lower = np.hstack([cumulative, np.zeros((n, 1))])
        return upper - lower

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The most probable grade of each row (values from ``levels_``)."""
        best = self.predict_proba(X).argmax(axis=1)
        return np.asarray(self.levels_, dtype=object)[best]

    def predict_expected(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The expected grade index, Σ k · P(grade = k), a float in [0, K − 1]."""
        return self.predict_proba(X) @ np.arange(self.n_classes_, dtype="float64")

    def _check_fitted(self) -> None:
        require_fitted(self, "thresholds_")

    # --- persistence -------------------------------------------------------------------------

    def save(self, folder: Path | str) -> Path:
        """Write ``ordinal_head.json`` (+ ``threshold_<k>.ubj`` for XGBoost); return the folder."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fields = {
            "xgboost_version": xgb.__version__,
            "params": self.get_params(),
            "levels": self.levels_,
            "feature_names": self.feature_names_,
            "n_features_in": self.n_features_in_,
            "n_train": self.n_train_,
            "class_counts": self.class_counts_,
            "thresholds": [m.to_json(folder, k) for k, m in enumerate(self.thresholds_)],
        }
        if self.kind == "logistic":
            fields["standardiser"] = self.standardiser_.to_json()
        write_meta(folder / META_FILE, FORMAT, FORMAT_VERSION, fields)
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> OrdinalHead:
        """Load what :meth:`save` wrote (plain JSON and XGBoost UBJ; no pickle)."""
        folder = Path(folder)
        meta = _read_meta(folder / META_FILE)
        try:
            params = dict(meta["params"])
            _check_params(params)
            head = cls(**params)
            head.levels_ = list(meta["levels"])
            head.n_classes_ = len(head.levels_)
            names = meta["feature_names"]
            head.feature_names_ = None if names is None else [str(n) for n in names]
            head.n_features_in_ = int(meta["n_features_in"])
            head.n_train_ = int(meta["n_train"])
            head.class_counts_ = [int(c) for c in meta["class_counts"]]
            if head.kind == "logistic":
                head.standardiser_ = _Standardiser(**meta["standardiser"])
            entries = list(meta["thresholds"])
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise DataFileError(
                f"{folder / META_FILE}: invalid ordinal head metadata: {exc}"
            ) from exc
        if len(entries) != head.n_classes_ - 1:
            raise DataFileError(
                f"{folder / META_FILE}: {head.n_classes_} grades need {head.n_classes_ - 1} "
                f"threshold models; found {len(entries)}"
            )
        head.thresholds_ = [_load_threshold(folder, entry, head.n_jobs) for entry in entries]
        head.constant_thresholds_ = [
            k for k, m in enumerate(head.thresholds_) if isinstance(m, _Constant)
        ]
        return head


# --- helpers -----------------------------------------------------------------------------------


def _check_params(params: dict[str, Any]) -> None:
    if params["kind"] not in KINDS:
        raise ConfigError(f"kind must be one of {list(KINDS)}; got {params['kind']!r}")
    for name in ("n_estimators", "max_depth", "n_jobs"):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    for name in ("learning_rate", "C"):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{name} must be a positive number; got {value!r}")
    if isinstance(params["seed"], bool) or not isinstance(params["seed"], int):
        raise ConfigError(f"seed must be an integer; got {params['seed']!r}")


def _as_matrix(
    X: pd.DataFrame | np.ndarray,
    names: list[str] | None = None,
    n_features: int | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    """Float matrix (NaN = missing); a DataFrame is matched to the fitted columns by name."""
    if isinstance(X, pd.DataFrame) and names is not None and list(X.columns) == names:
        try:  # the columns the head was fitted on, in its order: the common case, checked once
            matrix = X.to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError):
            matrix = None
        if matrix is not None:
            if np.isinf(matrix).any():
                raise SchemaError("X holds ±inf; use NaN for missing values")
            return matrix, list(names)
    if isinstance(X, pd.DataFrame):
        if names is not None:
            missing = [c for c in names if c not in X]
            if missing:
                raise SchemaError(f"X lacks the columns the head was fitted on: {missing}")
            X = X[names]
        bad = [str(c) for c, kind in X.dtypes.items() if not pd.api.types.is_numeric_dtype(kind)]
        if bad:
            raise SchemaError(f"X columns must be numeric; not numeric: {bad}")
        found_names: list[str] | None = [str(c) for c in X.columns]
        # to_numpy maps pandas' NA to NaN itself: no per-column astype (most of a small
        # prediction's cost).
        matrix = X.to_numpy(dtype="float64", na_value=np.nan)
    else:
        found_names = None
        try:
            matrix = np.asarray(X, dtype="float64")
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"X must be numeric; {exc}") from exc
    if matrix.ndim != 2:
        raise SchemaError(f"X must be 2-dimensional (rows × features); got shape {matrix.shape}")
    if n_features is not None and matrix.shape[1] != n_features:
        raise SchemaError(f"X has {matrix.shape[1]} features; the head was fitted on {n_features}")
    if np.isinf(matrix).any():
        raise SchemaError("X holds ±inf; use NaN for missing values")
    return matrix, found_names


def _encode_grades(
    y: pd.Series | Sequence[Any] | np.ndarray, levels: Sequence[Any] | None, n_rows: int
) -> tuple[np.ndarray, list[Any]]:
    """Grade codes 0 … K−1 (−1 where the grade is missing) and the grade levels."""
    # Positional: grade i belongs to row i of X, whatever the index says.
    series = y.reset_index(drop=True) if isinstance(y, pd.Series) else pd.Series(y)
    if len(series) != n_rows:
        raise SchemaError(f"y has {len(series)} grades for {n_rows} rows of X")
    grade_levels = _grade_levels(series, levels)
    if len(grade_levels) < 2:
        raise ConfigError(f"an ordinal head needs at least 2 grades; got {grade_levels}")
    if len(set(grade_levels)) != len(grade_levels):
        raise ConfigError(f"grade levels must be distinct; got {grade_levels}")
    index = {level: k for k, level in enumerate(grade_levels)}
    values = series.astype("object").tolist()
    codes = np.array([-1 if _missing(v) else index.get(v, -2) for v in values], dtype="int64")
    unknown = sorted({str(v) for v, c in zip(values, codes, strict=True) if c == -2})
    if unknown:
        raise SchemaError(f"grades {unknown[:10]} are not among the levels {grade_levels}")
    return codes, grade_levels


def _grade_levels(series: pd.Series, levels: Sequence[Any] | None) -> list[Any]:
    if levels is not None:
        return list(levels)
    if isinstance(series.dtype, pd.CategoricalDtype):
        if not series.cat.ordered:
            raise ConfigError(
                "y is an unordered categorical: make it ordered, or pass levels=[...] lowest first"
            )
        return series.cat.categories.tolist()
    present = series[~series.map(_missing)]
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.isna().any() or not (numbers == numbers.round()).all() or (numbers < 0).any():
        raise ConfigError(
            "y must be an ordered categorical, integer grade codes 0…K−1, or labels with "
            f"levels=[...] lowest first; got values like {present.head(3).tolist()}"
        )
    return list(range(int(numbers.max()) + 1)) if len(numbers) else []


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _read_meta(path: Path) -> dict[str, Any]:
    return read_meta(path, FORMAT, FORMAT_VERSION, "ordinal head")


def _load_threshold(folder: Path, entry: dict[str, Any], n_jobs: int) -> Any:
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind == "constant":
        return _Constant(float(entry["p"]))
    if kind == "logistic":
        return _Linear(np.asarray(entry["coef"], dtype="float64"), float(entry["intercept"]))
    if kind == "xgboost":
        name = str(entry.get("file", ""))
        if Path(name).name != name or not name.endswith(".ubj"):
            # Only a plain file name inside the folder: never follow a path out of it.
            raise DataFileError(f"{folder / META_FILE}: bad threshold model file name {name!r}")
        booster = xgb.Booster()
        try:
            booster.load_model(folder / name)
        except xgb.core.XGBoostError as exc:
            raise DataFileError(f"{folder / name}: not a readable XGBoost model: {exc}") from exc
        booster.set_param({"nthread": n_jobs})
        return _Boosted(booster)
    raise DataFileError(f"{folder / META_FILE}: unknown threshold model entry {entry!r}")
