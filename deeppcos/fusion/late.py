"""Late fusion: a logistic meta-learner stacked on the branches' out-of-fold probabilities.

Input: a frame with ``p_tabular`` and ``p_image`` (NaN, or the column absent, for a patient
missing that modality). The meta-learner's features are the branches' logits,
``logit_m = logit(clip(p_m, 1e-4, 1 − 1e-4))``, one per modality it was fitted with.

Why this design:

* **Only patients with every modality.** The model scores a patient who has all of its
  modalities and nobody else (NaN otherwise): a patient missing one is routed to the other
  branch alone by :mod:`deeppcos.fusion.routing`, because a missing scan is not evidence about
  PCOS and must not move anyone's score. It is fitted on such patients only, so its weights
  describe how the branches combine when both speak. In a run with one branch it is a logistic
  recalibration of that branch's logit.
* **Logits, not probabilities**, because a logistic model is additive on the logit scale: with
  calibrated branches that are conditionally independent given the label, the Bayes-optimal
  fusion is the sum of their logits minus the prior log-odds — this model with both weights 1;
  fitted weights below 1 discount correlated or over-confident branches. Clipping at 1e-4
  bounds a branch's influence (|logit| ≤ 9.2).
* **Plain L2 logistic regression** (``C`` = 1 by default, no class weighting so its
  probabilities stay on the cohort's prevalence; no feature scaling, so each weight multiplies a
  logit and the decomposition stays in the units a reader knows). Three parameters cannot
  overfit a few hundred patients the way a booster would.
* **Exact decomposition.** :meth:`LateFusion.contributions` splits each patient's logit into the
  intercept and one term per branch; the columns sum to :meth:`LateFusion.decision_function` —
  the whole explanation of the fusion step, no approximation.

**Leakage.** The meta-learner must be fitted on *out-of-fold* branch predictions
(``oof_predictions.csv``), never on predictions of branch models that saw the patient. Its own
performance then still needs a second level of cross-validation over that frame:
:func:`cross_val_fusion_oof` gives one out-of-fold fusion prediction per patient from meta-learners
that never saw her (and those are what a calibrator should be fitted on).

Persistence: :meth:`LateFusion.to_dict` holds a handful of floats in plain JSON;
:meth:`LateFusion.save` writes it as ``late_fusion.json``. No pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeppcos._version import __version__
from deeppcos.exceptions import (
    ConfigError,
    DataFileError,
    SchemaError,
    require_fitted,
)

__all__ = ["MODALITIES", "LateFusion", "cross_val_fusion_oof", "modality_label"]

MODALITIES: tuple[str, ...] = ("tabular", "image")
COLUMNS = {m: f"p_{m}" for m in MODALITIES}
# Coefficient names, in the order of the meta-learner's feature matrix.
TERMS: tuple[str, ...] = MODALITIES
CLIP = 1e-4
META_FILE = "late_fusion.json"
FORMAT = "deeppcos.late_fusion"
FORMAT_VERSION = 2  # 2: no missing-modality terms (routing scores those patients)


class LateFusion:
    """Stacking of the branches' probabilities by one logistic regression (see module notes).

    Fitted attributes: ``intercept_``, ``coef_`` (``{term: weight}`` over ``TERMS``; 0 for a
    modality the model does not use), ``modalities_`` (those present in at least one labelled
    training row; a row must have all of them to be scored), ``n_train_`` (rows used).
    """

    def __init__(self, C: float = 1.0, class_weight: str | None = None) -> None:
        self.C = C
        self.class_weight = class_weight

    def get_params(self) -> dict[str, Any]:
        return {"C": self.C, "class_weight": self.class_weight}

    def fit(self, frame: pd.DataFrame, y: Any) -> LateFusion:
        """Fit on the rows with a label and every modality (``y`` matched by position)."""
        _check_params(self.get_params())
        labels = as_labels(y, len(frame))
        seen = _present(frame)[~np.isnan(labels)].any(axis=0)
        # A branch absent from training (e.g. disabled) gets an all-zero column, hence a weight
        # of exactly 0 under L2.
        self.modalities_ = [m for m, s in zip(MODALITIES, seen, strict=True) if s]
        if not self.modalities_:
            raise SchemaError("late fusion needs at least one branch prediction among the rows")
        x, complete = _design(frame, self.modalities_)
        keep = ~np.isnan(labels) & complete
        labels = labels[keep]
        if len(np.unique(labels)) < 2:
            raise SchemaError(
                f"late fusion needs both classes among the rows with a label and every branch "
                f"prediction; {int(keep.sum())} such rows hold {np.unique(labels).tolist()}"
            )
        from sklearn.linear_model import LogisticRegression  # fitting only (see calibration)

        model = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=1000)
        model.fit(x[keep], labels.astype(int))
        self.intercept_ = float(model.intercept_[0])
        self.coef_ = {t: float(w) for t, w in zip(TERMS, model.coef_[0], strict=True)}
        self.n_train_ = int(keep.sum())
        return self

    # --- prediction --------------------------------------------------------------------------

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Additive terms of each row's logit: ``intercept``, ``tabular``, ``image``; rows sum
        to :meth:`decision_function`.

        All NaN for a row that lacks one of the model's modalities. Same index as ``frame``.
        """
        self._check_fitted()
        x, complete = _design(frame, self.modalities_)
        # "+ 0.0" turns the −0.0 of a negative weight times an absent term into a plain 0.
        terms = x * np.array([self.coef_[t] for t in TERMS]) + 0.0
        table = np.column_stack([np.full(len(x), self.intercept_), terms])
        table[~complete] = np.nan
        return pd.DataFrame(table, columns=["intercept", *TERMS], index=frame.index)

    def decision_function(self, frame: pd.DataFrame) -> np.ndarray:
        """The meta-learner's logit per row (NaN where a modality is missing)."""
        # Summed from the contributions themselves, so the decomposition is exact by construction.
        return self.contributions(frame).to_numpy().sum(axis=1)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """P(label = 1) per row; NaN where a modality is missing (routed elsewhere)."""
        return sigmoid(self.decision_function(frame))

    def _check_fitted(self) -> None:
        require_fitted(self, "coef_")

    # --- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters and coefficients (no pickle)."""
        self._check_fitted()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "deeppcos_version": __version__,
            "params": self.get_params(),
            "clip": CLIP,
            "modalities": list(self.modalities_),
            "intercept": self.intercept_,
            "coef": dict(self.coef_),
            "n_train": self.n_train_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LateFusion:
        """Rebuild what :meth:`to_dict` wrote."""
        check_format(data, FORMAT, FORMAT_VERSION, "late fusion")
        try:
            params = dict(data["params"])
            _check_params(params)
            model = cls(**params)
            model.modalities_ = [m for m in MODALITIES if m in data["modalities"]]
            model.intercept_ = float(data["intercept"])
            coef = data["coef"]
            model.coef_ = {t: float(coef[t]) for t in TERMS}
            model.n_train_ = int(data["n_train"])
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise SchemaError(f"invalid late fusion parameters: {exc!r}") from exc
        return model

    def save(self, folder: Path | str) -> Path:
        """Write ``late_fusion.json`` into ``folder``; return the folder."""
        write_json(Path(folder) / META_FILE, self.to_dict())
        return Path(folder)

    @classmethod
    def load(cls, folder: Path | str) -> LateFusion:
        """Load what :meth:`save` wrote (plain JSON)."""
        return load_json(Path(folder) / META_FILE, cls.from_dict, "LateFusion.save()")


# --- second-level cross-validation --------------------------------------------------------------


def cross_val_fusion_oof(
    frame: pd.DataFrame,
    y: Any,
    folds: Any,
    make_model: Callable[[], Any] = LateFusion,
) -> np.ndarray:
    """Out-of-fold predictions of a fusion model over the out-of-fold branch frame.

    For every fold value k in ``folds`` (one per row, e.g. the ``fold`` column of
    ``oof_predictions.csv``, so the second level reuses the patient-grouped split), a fresh
    ``make_model()`` is fitted on the rows of the other folds and predicts the rows of fold k.
    Use these — not in-sample fusion predictions — to report the fusion's metrics and to fit its
    calibrator. ``make_model`` returns anything with ``fit(frame, y)`` and
    ``predict_proba(frame) -> array``. NaN where the model gives no prediction.
    """
    labels = as_labels(y, len(frame))

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        model = make_model().fit(frame.iloc[train], labels[train])
        return np.asarray(model.predict_proba(frame.iloc[test]), dtype="float64")

    return out_of_fold(folds, len(frame), fit_predict)


def out_of_fold(
    folds: Any, n_rows: int, fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """Run ``fit_predict(train_positions, test_positions)`` per fold value; pool the outputs."""
    assignment = pd.Series(np.asarray(folds, dtype=object))
    if len(assignment) != n_rows:
        raise SchemaError(f"folds has {len(assignment)} entries for {n_rows} rows")
    if assignment.isna().any():
        raise SchemaError(
            f"{int(assignment.isna().sum())} row(s) have no fold; give every row a fold (drop "
            "the locked test rows before the second-level cross-validation)"
        )
    values = assignment.unique()
    if len(values) < 2:
        raise SchemaError(f"cross-validation needs at least 2 folds; got {values.tolist()}")
    out = np.full(n_rows, np.nan)
    for value in values:
        test = np.flatnonzero((assignment == value).to_numpy())
        train = np.flatnonzero((assignment != value).to_numpy())
        try:
            out[test] = fit_predict(train, test)
        except SchemaError as exc:  # e.g. one class left in the training folds: say which fold
            raise SchemaError(f"with fold {value!r} held out: {exc}") from exc
    return out


# --- helpers ------------------------------------------------------------------------------------


def modality_label(tabular: np.ndarray, image: np.ndarray) -> list[str]:
    """Routing labels from two boolean "present" vectors."""
    names = {
        (True, True): "tabular+image",
        (True, False): "tabular",
        (False, True): "image",
        (False, False): "none",
    }
    return [names[(bool(t), bool(i))] for t, i in zip(tabular, image, strict=True)]


def _design(frame: pd.DataFrame, modalities: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix (columns as ``TERMS``: logits, 0 for a modality not used) and whether each
    row has every modality in ``modalities``."""
    probabilities = _probability_matrix(frame)
    present = ~np.isnan(probabilities)
    used = np.array([m in modalities for m in MODALITIES])
    logits = np.where(present & used, _logit(np.where(present, probabilities, 0.5)), 0.0)
    complete = present[:, used].all(axis=1) if used.any() else np.zeros(len(frame), dtype=bool)
    return logits, complete


def _present(frame: pd.DataFrame) -> np.ndarray:
    """Rows × modality: whether the branch gave a probability."""
    return ~np.isnan(_probability_matrix(frame))


def _probability_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Rows × modality probabilities; a branch that was not trained (column absent) is a
    modality missing for everyone."""
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(f"late fusion expects a DataFrame; got {type(frame).__name__}")
    if not any(c in frame for c in COLUMNS.values()):
        raise SchemaError(
            f"the frame has none of the branch columns {list(COLUMNS.values())}; it has "
            f"{list(frame.columns)[:10]}"
        )
    return np.column_stack([_probabilities(frame, COLUMNS[m]) for m in MODALITIES])


def _probabilities(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.full(len(frame), np.nan)
    try:
        values = pd.to_numeric(frame[column]).astype("Float64").to_numpy("float64", na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{column} must hold probabilities (NaN for missing); {exc}") from exc
    finite = values[~np.isnan(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise SchemaError(
            f"{column} must lie in [0, 1] (NaN for missing); got {finite.min():g} to "
            f"{finite.max():g}"
        )
    return values


def as_labels(y: Any, n_rows: int) -> np.ndarray:
    """Labels as floats (NaN = missing), matched to the frame's rows by position."""
    series = y.reset_index(drop=True) if isinstance(y, pd.Series) else pd.Series(np.asarray(y))
    if len(series) != n_rows:
        raise SchemaError(f"y has {len(series)} labels for {n_rows} rows")
    try:
        labels = pd.to_numeric(series).astype("Float64").to_numpy("float64", na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"y must hold 0/1 labels (NaN for missing); {exc}") from exc
    bad = ~np.isnan(labels) & ~np.isin(labels, (0.0, 1.0))
    if bad.any():
        raise SchemaError(f"y must hold 0/1 labels; got {np.unique(labels[bad])[:10].tolist()}")
    return labels


def _check_params(params: dict[str, Any]) -> None:
    C = params["C"]
    if isinstance(C, bool) or not isinstance(C, int | float) or not C > 0:
        raise ConfigError(f"C must be a positive number; got {C!r}")
    if params["class_weight"] not in (None, "balanced"):
        raise ConfigError(
            f"class_weight must be None or 'balanced'; got {params['class_weight']!r}"
        )


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, CLIP, 1 - CLIP)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray) -> np.ndarray:
    # NaN in, NaN out (quietly: NaN means "no prediction" here); no overflow for large |z|.
    with np.errstate(invalid="ignore"):
        return np.exp(-np.logaddexp(0.0, -z))


def check_format(data: Any, expected: str, version: int, what: str) -> None:
    """Raise SchemaError unless ``data`` is a dict of format ``expected`` at ``version``."""
    if not isinstance(data, dict) or data.get("format") != expected:
        raise SchemaError(f"not {what} parameters (expected format {expected!r})")
    if data.get("format_version") != version:
        raise SchemaError(
            f"{what} format version {data.get('format_version')!r}; this deeppcos reads {version}"
        )


def write_json(path: Path, data: Any) -> None:
    """Write a model's parameters as indented JSON (its folder made when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def load_json(path: Path, from_dict: Callable[[Any], Any], writer: str) -> Any:
    """``from_dict`` of the JSON at ``path``; a bad file is a DataFileError naming it."""
    try:
        return from_dict(read_json(path, writer))
    except SchemaError as exc:
        raise DataFileError(f"{path}: {exc}") from exc


def read_json(path: Path, writer: str) -> Any:
    """The JSON document at ``path``; DataFileError when missing or unreadable."""
    if not path.is_file():
        raise DataFileError(f"{path}: not found; is this a folder written by {writer}?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(f"{path}: unreadable: {exc}") from exc
