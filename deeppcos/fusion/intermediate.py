"""Intermediate fusion: reduced image embeddings joined with the tabular features in one booster.

Inputs: a tabular frame (one row per patient, numeric feature columns, NaN = not measured) and an
embeddings frame (columns ``img_emb_0 …``, one row per patient, an all-NaN row — or no row — for
a patient without images), matched **by index** (index both by ``patient_id``).

Design choices, and why:

* **PCA before the trees.** A backbone embedding has hundreds of correlated dimensions and a
  cohort a few hundred patients; shallow trees splitting on raw embedding coordinates would
  spend their splits on noise. The embeddings are standardised (so no dimension dominates by
  scale alone) and projected on their first ``n_components`` (8) principal axes, learned on the
  training rows that *have* embeddings (rows without images would otherwise drag the mean and
  the axes). The projection is unsupervised, so it cannot leak labels — but it must still be
  fitted inside each training fold when the fusion is cross-validated (``IntermediateFusion``
  does it in ``fit``, so :func:`cross_val_intermediate_oof` gets this for free).
* **One booster, native missing values.** A patient without images has NaN in every ``img_pc_*``
  column, one without labs NaN in every tabular column; XGBoost learns a default direction for
  NaN at every split, so one model serves every modality pattern, nothing is imputed, and
  "no scan" can itself carry information. A patient with neither gets NaN and the routing label
  ``"none"``: no prediction is possible.
* **Shallow and slow** (depth 3, 300 rounds at learning rate 0.05, row and column subsampling 0.8,
  as in the tabular branch) because cohorts are small; optional early stopping on a validation
  set (``eval``) that the caller carves from the training rows, never the rows being predicted.
  The booster is cut to its best round, so predictions, the saved file and TreeSHAP agree.
* **No class balancing by default**, so the probabilities stay on the cohort's prevalence; the
  calibration step (``deeppcos.fusion.calibration``) can still correct them.
* **Grouped explanation.** :meth:`IntermediateFusion.grouped_contributions` gives XGBoost's exact
  TreeSHAP values (``pred_contribs``) with the ``img_pc_*`` columns summed into one
  ``"ultrasound"`` contribution (the image embedding's share; scan-derived *table* columns such as
  follicle counts keep their own names) and the ``"bias"`` kept; each row sums to the margin
  (the logit). For a patient without images the ``"ultrasound"`` term is the effect of "no scan".
* **Safe persistence**: ``model.ubj`` (XGBoost's own format) and ``intermediate_fusion.json`` (the
  standardisation, the PCA mean and components, the feature names); no pickle. JSON floats
  round-trip exactly, so a loaded model predicts identically.

**Leakage.** Embeddings of different image models share no coordinate space, so out-of-fold
embeddings pooled from several fold models cannot train one booster. ``deeppcos train`` uses one
image model per fold for both the training rows and the predicted rows
(:mod:`deeppcos.fusion.stage`), and the final image model for the final booster; the rows being
predicted never influenced either model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from deeppcos.exceptions import (
    ConfigError,
    DataFileError,
    SchemaError,
    require_fitted,
)
from deeppcos.fusion.late import (
    as_labels,
    check_format,
    modality_label,
    out_of_fold,
    read_json,
    sigmoid,
)
from deeppcos.runs.persist import write_meta
from deeppcos.tabular.categories import CATEGORIES_ATTR, feature_types

__all__ = ["IMAGE_GROUP", "IntermediateFusion", "cross_val_intermediate_oof"]

EMBEDDING_PREFIX = "img_emb_"
PC_PREFIX = "img_pc_"
IMAGE_GROUP = "ultrasound"
BIAS = "bias"
MODEL_FILE = "model.ubj"
META_FILE = "intermediate_fusion.json"
FORMAT = "deeppcos.intermediate_fusion"
FORMAT_VERSION = 1
_EMBEDDING_COLUMN = re.compile(rf"^{EMBEDDING_PREFIX}(\d+)$")
_BAD_NAME = re.compile(r"[\[\]<]")  # XGBoost rejects these in feature names

Eval = tuple[pd.DataFrame, pd.DataFrame | None, Any]


class _Reducer:
    """Standardise, then project on the leading principal axes (all in plain arrays)."""

    def __init__(self, mean: Any, scale: Any, pca_mean: Any, components: Any) -> None:
        self.mean = np.asarray(mean, dtype="float64")
        self.scale = np.asarray(scale, dtype="float64")
        self.pca_mean = np.asarray(pca_mean, dtype="float64")
        self.components = np.asarray(components, dtype="float64").reshape(-1, len(self.mean))

    @classmethod
    def fit(cls, rows: np.ndarray, n_components: int, seed: int) -> tuple[_Reducer, list[float]]:
        mean = rows.mean(axis=0)
        scale = rows.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)  # a constant dimension stays 0, not ÷ 0
        k = min(n_components, rows.shape[0], rows.shape[1])
        from sklearn.decomposition import PCA  # fitting only: a loaded PCA is two arrays

        pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit((rows - mean) / scale)
        reducer = cls(mean, scale, pca.mean_, pca.components_)
        return reducer, [float(v) for v in pca.explained_variance_ratio_]

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        # A NaN row (no images) stays NaN in every component, which is what the booster wants.
        return ((embeddings - self.mean) / self.scale - self.pca_mean) @ self.components.T

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "pca_mean": self.pca_mean.tolist(),
            "components": self.components.tolist(),
        }


class IntermediateFusion:
    """Tabular features + PCA of image embeddings in one XGBoost booster (see module notes).

    Fitted attributes: ``tabular_names_``, ``embedding_columns_`` (``img_emb_*`` used, in order;
    empty when fitted without embeddings), ``n_components_`` (PCs kept; 0 without embeddings),
    ``explained_variance_ratio_``, ``feature_names_`` (tabular names + ``img_pc_0 …``),
    ``booster_`` (cut to the best round), ``best_iteration_``, ``n_trees_``, ``history_``,
    ``scale_pos_weight_``, ``n_train_``.
    """

    def __init__(
        self,
        n_components: int = 8,
        *,
        n_estimators: int = 300,
        max_depth: int = 3,
        learning_rate: float = 0.05,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        min_child_weight: float = 1.0,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int | None = 50,
        balance_classes: bool = False,
        n_jobs: int = 1,
        seed: int = 0,
    ) -> None:
        self.n_components = n_components
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.balance_classes = balance_classes
        self.n_jobs = n_jobs
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "reg_lambda": self.reg_lambda,
            "early_stopping_rounds": self.early_stopping_rounds,
            "balance_classes": self.balance_classes,
            "n_jobs": self.n_jobs,
            "seed": self.seed,
        }

    # --- fitting -----------------------------------------------------------------------------

    def fit(
        self,
        tabular: pd.DataFrame,
        embeddings: pd.DataFrame | None,
        y: Any,
        eval: Eval | None = None,
    ) -> IntermediateFusion:
        """Fit on the rows with a label and at least one modality.

        ``y`` is matched to ``tabular`` by position. ``eval`` — ``(tabular, embeddings, y)`` of
        validation patients carved from the training ones — turns on early stopping.
        """
        _check_params(self.get_params())
        self.tabular_names_ = _check_tabular_names(tabular)
        # Categorical inputs arrive as codes in the tabular branch's categories (its design
        # matrix carries them): the booster splits them as categories, not as quantities.
        self.categories_ = {
            c: list(v)
            for c, v in tabular.attrs.get(CATEGORIES_ATTR, {}).items()
            if c in self.tabular_names_
        }
        self.embedding_columns_ = _embedding_columns(embeddings)
        emb = _aligned_embeddings(embeddings, tabular.index, self.embedding_columns_)
        labels = as_labels(y, len(tabular))
        self._fit_reducer(emb)
        self.feature_names_ = self.tabular_names_ + [
            f"{PC_PREFIX}{k}" for k in range(self.n_components_)
        ]
        x, present = self._features(tabular, emb)
        keep = ~np.isnan(labels) & present.any(axis=1)
        if len(np.unique(labels[keep])) < 2:
            raise SchemaError(
                f"intermediate fusion needs both classes among the rows with a label and some "
                f"input; {int(keep.sum())} such rows hold {np.unique(labels[keep]).tolist()}"
            )
        y_train = labels[keep]
        positives = float(y_train.sum())
        self.scale_pos_weight_ = (
            (len(y_train) - positives) / positives if self.balance_classes else 1.0
        )
        evals = [(self._dmatrix(x[keep], y_train), "train")]
        if eval is not None:
            evals.append((self._eval_dmatrix(eval), "val"))
        self._train(evals, early_stop=eval is not None and self.early_stopping_rounds is not None)
        self.n_train_ = int(keep.sum())
        return self

    def _fit_reducer(self, emb: np.ndarray) -> None:
        """PCA on the training rows that have embeddings (fewer than 2: tabular only)."""
        rows = emb[_has_embedding(emb)]
        if len(rows) < 2:
            self.reducer_: _Reducer | None = None
            self.n_components_ = 0
            self.explained_variance_ratio_: list[float] = []
            return
        self.reducer_, self.explained_variance_ratio_ = _Reducer.fit(
            rows, self.n_components, self.seed
        )
        self.n_components_ = len(self.explained_variance_ratio_)

    def _eval_dmatrix(self, eval: Eval) -> xgb.DMatrix:
        tab, emb_frame, y = eval
        _check_tabular_names(tab)
        emb = _aligned_embeddings(emb_frame, tab.index, self.embedding_columns_)
        x, present = self._features(tab, emb)
        labels = as_labels(y, len(tab))
        keep = ~np.isnan(labels) & present.any(axis=1)
        if len(np.unique(labels[keep])) < 2:
            raise SchemaError(
                "the eval set needs both classes (its log loss would say little otherwise); "
                "carve it with a stratified split of the training patients"
            )
        return self._dmatrix(x[keep], labels[keep])

    def _train(self, evals: list[tuple[xgb.DMatrix, str]], early_stop: bool) -> None:
        history: dict[str, Any] = {}
        booster = xgb.train(
            self._xgb_params(),
            evals[0][0],
            num_boost_round=self.n_estimators,
            evals=evals,
            evals_result=history,
            early_stopping_rounds=self.early_stopping_rounds if early_stop else None,
            verbose_eval=False,
        )
        last = booster.num_boosted_rounds() - 1
        self.best_iteration_ = int(booster.best_iteration) if early_stop else last
        # Keep only the trees up to the best round, so nothing downstream needs an iteration range.
        self.booster_ = booster[: self.best_iteration_ + 1]
        self.n_trees_ = self.best_iteration_ + 1
        self.history_ = {
            part: {metric: [float(v) for v in values] for metric, values in metrics.items()}
            for part, metrics in history.items()
        }

    def _xgb_params(self) -> dict[str, Any]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "scale_pos_weight": self.scale_pos_weight_,
            "seed": self.seed,
            "nthread": self.n_jobs,
        }

    # --- prediction --------------------------------------------------------------------------

    def design_matrix(self, tabular: pd.DataFrame, embeddings: pd.DataFrame | None) -> pd.DataFrame:
        """The booster's input (tabular columns + ``img_pc_*``), indexed like ``tabular``."""
        self._check_fitted()
        emb = _aligned_embeddings(embeddings, tabular.index, self.embedding_columns_)
        x, _ = self._features(tabular, emb)
        return pd.DataFrame(x, columns=self.feature_names_, index=tabular.index)

    def predict_proba(self, tabular: pd.DataFrame, embeddings: pd.DataFrame | None) -> np.ndarray:
        """P(label = 1) per tabular row; NaN for a row with neither labs nor images."""
        return sigmoid(self.decision_function(tabular, embeddings))

    def decision_function(
        self, tabular: pd.DataFrame, embeddings: pd.DataFrame | None
    ) -> np.ndarray:
        """The booster's margin (logit) per row; NaN where no modality is present."""
        x, present = self._inputs(tabular, embeddings)
        out = np.full(len(x), np.nan)
        scored = present.any(axis=1)
        if scored.any():
            margin = self.booster_.predict(self._dmatrix(x[scored]), output_margin=True)
            out[scored] = margin.astype("float64")
        return out

    def modalities_used(self, tabular: pd.DataFrame, embeddings: pd.DataFrame | None) -> list[str]:
        """Per row: ``"tabular+image"``, ``"tabular"``, ``"image"`` or ``"none"``."""
        present = self._inputs(tabular, embeddings)[1]
        return modality_label(present[:, 0], present[:, 1])

    def grouped_contributions(
        self,
        tabular: pd.DataFrame,
        embeddings: pd.DataFrame | None,
        group_tabular: bool = False,
    ) -> pd.DataFrame:
        """TreeSHAP values per row: one column per tabular feature (or one ``"tabular"`` column
        when ``group_tabular``), ``"ultrasound"`` (all ``img_pc_*`` summed) and ``"bias"``.

        Rows sum to :meth:`decision_function` (up to float32 rounding); NaN rows where no
        modality is present. Indexed like ``tabular``.
        """
        x, present = self._inputs(tabular, embeddings)
        shap = np.full((len(x), len(self.feature_names_) + 1), np.nan)
        scored = present.any(axis=1)
        if scored.any():
            values = self.booster_.predict(self._dmatrix(x[scored]), pred_contribs=True)
            shap[scored] = values.astype("float64")
        n_tab = len(self.tabular_names_)
        tab = shap[:, :n_tab]
        columns: dict[str, np.ndarray] = (
            {"tabular": tab.sum(axis=1)}
            if group_tabular
            else dict(zip(self.tabular_names_, tab.T, strict=True))
        )
        columns[IMAGE_GROUP] = shap[:, n_tab:-1].sum(axis=1)  # 0 when fitted without images
        columns[BIAS] = shap[:, -1]
        out = pd.DataFrame(columns, index=tabular.index)
        out.loc[~scored] = np.nan  # sums of NaN are 0; a row without inputs explains nothing
        return out

    def _inputs(
        self, tabular: pd.DataFrame, embeddings: pd.DataFrame | None
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        emb = _aligned_embeddings(embeddings, tabular.index, self.embedding_columns_)
        return self._features(tabular, emb)

    def _features(self, tabular: pd.DataFrame, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Booster input and the "present" matrix (rows × [tabular, image])."""
        tab = _tabular_matrix(tabular, self.tabular_names_)
        has_image = _has_embedding(emb)
        if self.reducer_ is None:
            pcs = np.empty((len(tab), 0))
            has_image = np.zeros(len(tab), dtype=bool)  # images the model never learned from
        else:
            pcs = self.reducer_.transform(emb)
        has_tabular = ~np.isnan(tab).all(axis=1)  # False for every row when there are no columns
        return np.hstack([tab, pcs]), np.column_stack([has_tabular, has_image])

    def _dmatrix(self, x: np.ndarray, y: np.ndarray | None = None) -> xgb.DMatrix:
        categories = getattr(self, "categories_", {})
        return xgb.DMatrix(
            x,
            label=y,
            feature_names=list(self.feature_names_),
            feature_types=feature_types(self.feature_names_, categories),
            enable_categorical=bool(categories),
            missing=np.nan,
            nthread=self.n_jobs,
        )

    def _check_fitted(self) -> None:
        require_fitted(self, "booster_")

    # --- persistence -------------------------------------------------------------------------

    def save(self, folder: Path | str) -> Path:
        """Write ``model.ubj`` and ``intermediate_fusion.json`` into ``folder``."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(folder / MODEL_FILE)
        fields = {
            "xgboost_version": xgb.__version__,
            "params": self.get_params(),
            "tabular_names": self.tabular_names_,
            "categories": getattr(self, "categories_", {}),
            "embedding_columns": self.embedding_columns_,
            "reducer": None if self.reducer_ is None else self.reducer_.to_json(),
            "explained_variance_ratio": self.explained_variance_ratio_,
            "best_iteration": self.best_iteration_,
            "scale_pos_weight": self.scale_pos_weight_,
            "n_train": self.n_train_,
            "history": self.history_,
        }
        write_meta(folder / META_FILE, FORMAT, FORMAT_VERSION, fields)
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> IntermediateFusion:
        """Load what :meth:`save` wrote (XGBoost UBJ and plain JSON; no pickle)."""
        folder = Path(folder)
        meta = read_json(folder / META_FILE, "IntermediateFusion.save()")
        try:
            check_format(meta, FORMAT, FORMAT_VERSION, "intermediate fusion")
            params = dict(meta["params"])
            _check_params(params)
            model = cls(**params)
            model.tabular_names_ = [str(n) for n in meta["tabular_names"]]
            model.categories_ = {str(c): list(v) for c, v in meta.get("categories", {}).items()}
            model.embedding_columns_ = [str(c) for c in meta["embedding_columns"]]
            reducer = meta["reducer"]
            model.reducer_ = None if reducer is None else _Reducer(**reducer)
            model.explained_variance_ratio_ = [float(v) for v in meta["explained_variance_ratio"]]
            model.n_components_ = len(model.explained_variance_ratio_)
            model.best_iteration_ = int(meta["best_iteration"])
            model.scale_pos_weight_ = float(meta["scale_pos_weight"])
            model.n_train_ = int(meta["n_train"])
            model.history_ = dict(meta.get("history", {}))
        except (KeyError, TypeError, ValueError, ConfigError, SchemaError) as exc:
            raise DataFileError(
                f"{folder / META_FILE}: invalid intermediate fusion: {exc}"
            ) from exc
        model.n_trees_ = model.best_iteration_ + 1
        model.feature_names_ = model.tabular_names_ + [
            f"{PC_PREFIX}{k}" for k in range(model.n_components_)
        ]
        model.booster_ = _load_booster(folder / MODEL_FILE, model.n_jobs)
        return model


def cross_val_intermediate_oof(
    tabular: pd.DataFrame,
    embeddings: pd.DataFrame | None,
    y: Any,
    folds: Any,
    make_model: Callable[[], Any] = IntermediateFusion,
) -> np.ndarray:
    """Out-of-fold predictions of intermediate fusion (as :func:`late.cross_val_fusion_oof`).

    For every fold value k in ``folds`` (one per tabular row), a fresh ``make_model()`` — PCA
    included — is fitted on the other folds and predicts fold k. No early stopping here (the
    eval set would have to be carved inside each fold); set ``n_estimators`` instead.
    """
    labels = as_labels(y, len(tabular))
    columns = _embedding_columns(embeddings)
    emb = _aligned_embeddings(embeddings, tabular.index, columns)
    emb_frame = pd.DataFrame(emb, columns=columns, index=tabular.index)

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        model = make_model().fit(tabular.iloc[train], emb_frame.iloc[train], labels[train])
        return np.asarray(model.predict_proba(tabular.iloc[test], emb_frame.iloc[test]))

    return out_of_fold(folds, len(tabular), fit_predict)


# --- input checks and alignment -------------------------------------------------------------------


def _check_tabular_names(tabular: pd.DataFrame) -> list[str]:
    if not isinstance(tabular, pd.DataFrame):
        raise SchemaError(f"the tabular input must be a DataFrame; got {type(tabular).__name__}")
    names = [str(c) for c in tabular.columns]
    bad = [n for n in names if _BAD_NAME.search(n)]
    reserved = [n for n in names if n in (IMAGE_GROUP, BIAS, "tabular") or n.startswith(PC_PREFIX)]
    if bad or reserved:
        raise SchemaError(
            f"tabular column names may not contain '[', ']' or '<' (XGBoost rejects them: {bad}) "
            f"nor be {IMAGE_GROUP!r}, {BIAS!r}, 'tabular' or start with {PC_PREFIX!r} (names the "
            f"fusion uses: {reserved}); rename them"
        )
    if tabular.index.has_duplicates:
        raise SchemaError("the tabular frame's index has duplicates; use one row per patient")
    return names


def _tabular_matrix(tabular: pd.DataFrame, names: list[str]) -> np.ndarray:
    missing = [n for n in names if n not in tabular]
    if missing:
        raise SchemaError(
            f"the tabular frame lacks {len(missing)} column(s) the fusion was fitted on: "
            f"{missing[:10]}; add them (NaN where unknown)"
        )
    frame = tabular[names]
    not_numeric = [
        str(c) for c, kind in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(kind)
    ]
    if not_numeric:
        raise SchemaError(f"tabular columns must be numeric; not numeric: {not_numeric[:10]}")
    # to_numpy maps pandas' NA to NaN itself; a per-column astype costs more than the booster.
    matrix = frame.to_numpy(dtype="float64", na_value=np.nan)
    if np.isinf(matrix).any():
        raise SchemaError("the tabular frame holds ±inf; use NaN for missing values")
    return matrix


def _embedding_columns(embeddings: pd.DataFrame | None) -> list[str]:
    """The ``img_emb_<k>`` columns, in k order; other columns (ids, paths) are ignored."""
    if embeddings is None:
        return []
    found = [
        (int(m.group(1)), str(c))
        for c in embeddings.columns
        if (m := _EMBEDDING_COLUMN.match(str(c)))
    ]
    if not found:
        raise SchemaError(
            f"the embeddings frame has no {EMBEDDING_PREFIX}<k> columns; it has "
            f"{list(embeddings.columns)[:10]} (pass None when there are no images)"
        )
    return [c for _, c in sorted(found)]


def _aligned_embeddings(
    embeddings: pd.DataFrame | None, index: pd.Index, columns: list[str]
) -> np.ndarray:
    """Embedding matrix in the tabular frame's row order; NaN rows where a patient has none."""
    if embeddings is None or not columns:
        return np.full((len(index), len(columns)), np.nan)
    missing = [c for c in columns if c not in embeddings]
    if missing:
        raise SchemaError(
            f"the embeddings frame lacks {len(missing)} column(s) the fusion was fitted on "
            f"(e.g. {missing[:3]}); was it made by a different image model?"
        )
    if embeddings.index.has_duplicates:
        raise SchemaError(
            "the embeddings frame has several rows for one index value; give one row per "
            "patient (ImageBranch.transform averages a patient's images)"
        )
    if len(embeddings) and not embeddings.index.isin(index).any():
        raise SchemaError(
            "no row of the embeddings frame matches a row of the tabular frame by index; index "
            f"both by patient_id (tabular index like {list(index[:3])}, embeddings index like "
            f"{list(embeddings.index[:3])})"
        )
    matrix = embeddings.reindex(index)[columns].astype("float64").to_numpy()
    partial = np.isnan(matrix).any(axis=1) & ~np.isnan(matrix).all(axis=1)
    if partial.any():
        raise SchemaError(
            f"{int(partial.sum())} embedding row(s) are partly NaN; a row must be complete, or "
            "all NaN for a patient without images"
        )
    if np.isinf(matrix).any():
        raise SchemaError("the embeddings hold ±inf")
    return matrix


def _has_embedding(emb: np.ndarray) -> np.ndarray:
    if emb.shape[1] == 0:
        return np.zeros(len(emb), dtype=bool)
    return ~np.isnan(emb).any(axis=1)


def _check_params(params: dict[str, Any]) -> None:
    for name in ("n_components", "n_estimators", "max_depth", "n_jobs"):
        _positive_int(name, params[name])
    if params["early_stopping_rounds"] is not None:
        _positive_int("early_stopping_rounds", params["early_stopping_rounds"])
    for name in ("learning_rate", "subsample", "colsample_bytree"):
        value = params[name]
        if _not_number(value) or not 0 < value <= 1:
            raise ConfigError(f"{name} must be in (0, 1]; got {value!r}")
    for name in ("min_child_weight", "reg_lambda"):
        value = params[name]
        if _not_number(value) or value < 0:
            raise ConfigError(f"{name} must be a number ≥ 0; got {value!r}")
    if not isinstance(params["balance_classes"], bool):
        raise ConfigError(
            f"balance_classes must be true or false; got {params['balance_classes']!r}"
        )
    if isinstance(params["seed"], bool) or not isinstance(params["seed"], int):
        raise ConfigError(f"seed must be an integer; got {params['seed']!r}")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")


def _not_number(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int | float)


def _load_booster(path: Path, n_jobs: int) -> xgb.Booster:
    if not path.is_file():
        raise DataFileError(f"{path}: model file not found")
    booster = xgb.Booster()
    try:
        booster.load_model(path)
    except xgb.core.XGBoostError as exc:
        raise DataFileError(f"{path}: not a readable XGBoost model: {exc}") from exc
    booster.set_param({"nthread": n_jobs})
    return booster
