"""The tabular branch: a gradient-boosted tree model (XGBoost) on the cohort's labs and signs.

Design choices, and why:

* **Missing values stay missing.** XGBoost learns a default direction for NaN at every split, so
  nothing is imputed and "not measured" can itself carry information (it often does in clinics).
* **Patients with no tabular data at all are not this branch's business.** They are skipped in
  training and get NaN from :meth:`TabularBranch.predict_proba`; fusion takes them down the image
  path. "No data" means: every one of the model's own inputs is missing.
* **Shallow, regularised trees** (depth 3, 300 rounds at learning rate 0.05, row and column
  subsampling) because the cohorts are small (hundreds of patients).
* **Early stopping on a validation fold** when ``val_ids`` is given, watching the validation
  log-loss by default (ROC AUC and log-loss are both recorded every round). On validation parts
  of ~90 patients the AUC curve is a noisy step function whose first maximum often comes after a
  handful of trees: on the Kaggle table, stopping on AUC kept anywhere from 2 to 254 trees and
  cost 0.01–0.025 AUC in cross-validation *inside the training folds*, while the smooth, proper
  log-loss kept ~50–290 (``benchmarks/bench_tabular_kaggle.py`` repeats that study). The booster
  is then cut to its best round, so a saved model, its predictions and any TreeSHAP explanation
  all use exactly the same trees. Without ``val_ids`` it trains the fixed ``n_estimators``
  rounds. The caller must never pass the test fold as ``val_ids`` (carve one from the training
  fold with :func:`inner_validation_split`). ``early_stopping_rounds: null`` turns stopping off
  and training then holds no patient out: on the real Kaggle table (541 women) exactly 300
  rounds on everyone beat stopping on a fifth on 9 of 10 outer folds of nested evaluation
  (``benchmarks/bench_tuning.py``), so that config sets it; the tuning space offers both rules.
* **Class balance** by ``scale_pos_weight`` = negatives ÷ positives, so the minority class is not
  ignored; probabilities are then not calibrated, which the fusion layer's calibration handles.
* **Monotone constraints** (opt-in) only where the clinical reference gives the direction.
* **Safe persistence**: ``model.ubj`` (XGBoost's own binary format) and ``tabular_branch.json``;
  no pickle, so a model from elsewhere cannot run code on load.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xgboost as xgb
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deeppcos.data.cohort import Cohort
from deeppcos.data.report import LoadReport
from deeppcos.data.splits import make_splits
from deeppcos.exceptions import DataFileError, SchemaError, require_fitted
from deeppcos.runs.persist import read_meta, write_meta
from deeppcos.tabular.categories import categories_of, encode, feature_types
from deeppcos.tabular.features import (
    DERIVED_BY_NAME,
    derive_arrays,
    derive_features,
    select_features,
)

MODEL_FILE = "model.ubj"
META_FILE = "tabular_branch.json"
FORMAT = "deeppcos.tabular_branch"
FORMAT_VERSION = 1

# Directions the clinical reference (shared/clinical-reference.md) supports; +1 means a higher
# value may only raise P(PCOS), holding the other inputs fixed. Deliberately small:
#   * AMH: "~2–3× higher in PCOS"; serum AMH may define PCOM in adults (§1b, §2.4).
#   * Total/free testosterone, FAI, mFG score: biochemical and clinical hyperandrogenism, a
#     criterion in every definition (§1c, §1e, §2.1–§2.4); Kaggle's binary ``hair_growth`` is the
#     reference's stand-in for hirsutism (§3.2).
#   * SHBG −1: FAI = 100 × T ÷ SHBG (§1c), and FAI estimates free testosterone (§2.4), so at a
#     given testosterone a lower SHBG means more free androgen. Inferred from the formula.
#   * Irregular cycles: ovulatory dysfunction, a criterion (§2.1–§2.4).
#   * Follicle counts and ovarian volume: PCOM (FNPO ≥20 / ≥12, volume ≥10 mL; §1d, §2.2, §2.4).
# Left out on purpose: LH/FSH (the reference: "not a diagnostic criterion", "LH/FSH >2 has no
# primary source", §1c); BMI, HOMA-IR and acanthosis (metabolic, mixed evidence by phenotype,
# §2.5); acne and alopecia ("relatively weak predictors", §1e); follicle diameter (the Kaggle
# column measures lead follicles, not 2–9 mm ones, §3.2).
MONOTONE_DIRECTIONS: dict[str, int] = {
    "amh_ng_ml": 1,
    "total_testosterone_nmol_l": 1,
    "free_testosterone_pg_ml": 1,
    "free_androgen_index": 1,
    "shbg_nmol_l": -1,
    "hirsutism_mfg_score": 1,
    "hair_growth": 1,
    "cycle_irregular": 1,
    "follicle_count_left": 1,
    "follicle_count_right": 1,
    "follicle_count_max": 1,
    "follicle_count_total": 1,
    "ovarian_volume_left_ml": 1,
    "ovarian_volume_right_ml": 1,
}

_BAD_NAME = re.compile(r"[\[\]<]")  # XGBoost rejects these in feature names


class TabularParams(BaseModel):
    """Settings of the tabular branch (validated; unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")

    n_estimators: int = Field(300, ge=1, description="boosting rounds (the most, with early stop)")
    max_depth: int = Field(3, ge=1, le=12)
    learning_rate: float = Field(0.05, gt=0.0, le=1.0)
    min_child_weight: float = Field(1.0, ge=0.0)
    subsample: float = Field(0.8, gt=0.0, le=1.0)
    colsample_bytree: float = Field(0.8, gt=0.0, le=1.0)
    reg_lambda: float = Field(1.0, ge=0.0)
    reg_alpha: float = Field(0.0, ge=0.0)
    early_stopping_rounds: int | None = Field(
        50, ge=1, description="rounds without a validation gain before stopping; None: never"
    )
    early_stopping_metric: Literal["auc", "logloss"] = Field(
        "logloss", description="validation metric early stopping watches (see module notes)"
    )
    exclude_ultrasound: bool = Field(False, description="drop scan-derived columns")
    monotone: bool = Field(False, description="apply MONOTONE_DIRECTIONS")
    balance_classes: bool = Field(True, description="scale_pos_weight = negatives ÷ positives")
    n_jobs: int = Field(1, ge=1, description="XGBoost threads")


class TabularBranch:
    """XGBoost on tabular features, with the branch contract: fit / predict_proba / save / load.

    Fitted attributes: ``feature_names_`` (model inputs, in order), ``booster_`` (the
    ``xgboost.Booster``, cut to the best round), ``best_iteration_`` (0-based index of the last
    tree kept), ``n_trees_``, ``history_`` (``{"train"|"val": {"auc"|"logloss": [per round]}}``),
    ``monotone_constraints_`` (the directions applied, by feature), ``scale_pos_weight_`` and
    ``n_train_`` (patients trained on).
    """

    def __init__(self, params: TabularParams | None = None, seed: int = 0) -> None:
        self.params = params if params is not None else TabularParams()
        self.seed = seed

    # --- training --------------------------------------------------------------------------

    def fit(
        self,
        cohort: Cohort,
        train_ids: Sequence[str],
        val_ids: Sequence[str] | None = None,
        callbacks: Sequence[xgb.callback.TrainingCallback] = (),
    ) -> TabularBranch:
        """Train on ``train_ids``; early-stop on ``val_ids`` when given (never the test fold).
        ``callbacks`` go to ``xgb.train`` (tuning's pruning callback watches ``val-auc``)."""
        features = select_features(cohort.feature_columns, self.params.exclude_ultrasound)
        _check_names(features)
        x, y = _labelled_rows(cohort, train_ids, features, "training")
        validation = None
        if val_ids is not None:
            validation = _validation_rows(cohort, train_ids, val_ids, features)
        return self.fit_frame(x, y, validation, callbacks)

    def fit_frame(
        self,
        x: pd.DataFrame,
        y: pd.Series,
        validation: tuple[pd.DataFrame, pd.Series] | None = None,
        callbacks: Sequence[xgb.callback.TrainingCallback] = (),
    ) -> TabularBranch:
        """Train on a design matrix (its columns are the model inputs, in order) and 0/1
        labels; early-stop on ``validation`` when given. :meth:`fit` reads these from a
        cohort; the scikit-learn adapter passes a DataFrame's."""
        features = [str(c) for c in x.columns]
        _check_names(features)
        if y.nunique() < 2:
            raise SchemaError(
                f"the training set has one class only ({int(y.iloc[0])} for all {len(y)} "
                "patients with tabular data); the tabular branch needs both 0 and 1"
            )
        self.feature_names_ = features
        self.categories_ = {c: v for c, v in categories_of(x).items() if c in features}
        x = encode(x, self.categories_)
        if validation is not None:
            validation = (encode(validation[0], self.categories_), validation[1])
        self.scale_pos_weight_ = (
            float((y == 0).sum() / (y == 1).sum()) if self.params.balance_classes else 1.0
        )
        self.monotone_constraints_ = (
            {f: MONOTONE_DIRECTIONS[f] for f in features if f in MONOTONE_DIRECTIONS}
            if self.params.monotone
            else {}
        )
        evals = [(self._dmatrix(x, y), "train")]
        if validation is not None:
            evals.append((self._dmatrix(*validation), "val"))
        self._train(evals, early_stop=validation is not None, callbacks=callbacks)
        self.n_train_ = len(y)
        return self

    def _train(
        self,
        evals: list[tuple[xgb.DMatrix, str]],
        early_stop: bool,
        callbacks: Sequence[xgb.callback.TrainingCallback] = (),
    ) -> None:
        history: dict[str, Any] = {}
        booster = xgb.train(
            self._xgb_params(),
            evals[0][0],
            num_boost_round=self.params.n_estimators,
            evals=evals,
            evals_result=history,
            early_stopping_rounds=self.params.early_stopping_rounds if early_stop else None,
            verbose_eval=False,
            callbacks=list(callbacks) or None,
        )
        rounds = booster.num_boosted_rounds()
        best = booster.best_iteration if early_stop and self.params.early_stopping_rounds else None
        self.best_iteration_ = int(best) if best is not None else rounds - 1
        # Keep only the trees up to the best round: predictions, the saved file and TreeSHAP then
        # agree without anyone having to remember an iteration range.
        self.booster_ = booster[: self.best_iteration_ + 1]
        self.n_trees_ = self.best_iteration_ + 1
        self.history_ = {
            part: {metric: [float(v) for v in values] for metric, values in metrics.items()}
            for part, metrics in history.items()
        }

    def _xgb_params(self) -> dict[str, Any]:
        p = self.params
        params: dict[str, Any] = {
            "objective": "binary:logistic",
            # Both are recorded every round; XGBoost early-stops on the last one.
            "eval_metric": [m for m in ("logloss", "auc") if m != p.early_stopping_metric]
            + [p.early_stopping_metric],
            "tree_method": "hist",
            "max_depth": p.max_depth,
            "eta": p.learning_rate,
            "min_child_weight": p.min_child_weight,
            "subsample": p.subsample,
            "colsample_bytree": p.colsample_bytree,
            "lambda": p.reg_lambda,
            "alpha": p.reg_alpha,
            "scale_pos_weight": self.scale_pos_weight_,
            "seed": self.seed,
            "nthread": p.n_jobs,
        }
        if self.monotone_constraints_:
            directions = [self.monotone_constraints_.get(f, 0) for f in self.feature_names_]
            params["monotone_constraints"] = "(" + ",".join(map(str, directions)) + ")"
        return params

    def _dmatrix(self, x: pd.DataFrame, y: pd.Series | None = None) -> xgb.DMatrix:
        return xgb.DMatrix(
            x.to_numpy(dtype=np.float64, na_value=np.nan),
            label=None if y is None else y.to_numpy(dtype=np.float64),
            feature_names=list(self.feature_names_),
            feature_types=feature_types(self.feature_names_, self.categories_),
            enable_categorical=bool(self.categories_),
            missing=np.nan,
            nthread=self.params.n_jobs,
        )

    # --- prediction ------------------------------------------------------------------------

    def design_matrix(
        self, cohort: Cohort, patient_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """The model's input table (derived features added), one row per id, in the given order;
        categorical inputs as codes in the model's categories (a category it never saw is
        missing, and reported in ``cohort.report``).

        Raises SchemaError naming the columns the cohort lacks. Useful for TreeSHAP.
        """
        self._check_fitted()
        patients = cohort.patients
        own = [str(i) for i in patients["patient_id"].tolist()]
        ids = own if patient_ids is None else [str(i) for i in patient_ids]
        rows = None if ids == own else _positions(cohort, own, ids)
        # Arrays, not frame operations: for the few patients of a service request each pandas
        # selection or insert costs more than the model (measured: 1.0 → 0.3 ms for 8 rows).
        # Plain float columns are read as one block; other columns keep their own dtype.
        floats = patients.select_dtypes(include=[np.float64])
        block = floats.to_numpy(dtype=np.float64)
        block = block if rows is None else block[rows]
        where = {name: j for j, name in enumerate(floats.columns)}

        def column(name: str) -> np.ndarray | None:
            if name in where:
                return block[:, where[name]]
            if name in patients:
                values = patients[name].to_numpy(dtype=np.float64, na_value=np.nan)
                return values if rows is None else values[rows]
            return None

        derived = derive_arrays(column)
        missing = [f for f in self.feature_names_ if f not in derived and f not in patients]
        if missing:
            # Derived features (BMI, ratios, …) follow from their parts: name only what to add.
            to_add = [f for f in missing if f not in DERIVED_BY_NAME]
            derived_names = [f for f in missing if f in DERIVED_BY_NAME]
            raise SchemaError(
                f"the cohort {cohort.spec.name!r} lacks {len(to_add)} feature column(s) the "
                f"tabular model was trained on: {to_add}. Add them to the patients table "
                "(empty where unknown: missing values are allowed) or retrain on this cohort's "
                "columns"
                + (f"; {derived_names} are then computed from their parts" if derived_names else "")
            )
        index = pd.Index(ids, name="patient_id")
        design = _design_frame(self.feature_names_, derived, block, where, patients, rows, index)
        if not self.categories_:
            return design
        unseen = LoadReport()
        design = encode(design, self.categories_, unseen, f"cohort {cohort.spec.name!r}")
        _report_once(cohort, unseen)
        return design

    def predict_proba(self, cohort: Cohort, patient_ids: Sequence[str] | None = None) -> pd.Series:
        """P(label = 1) per patient, indexed by patient_id in the given order (all patients when
        None); NaN for a patient none of whose model inputs is present."""
        return self.predict_design(self.design_matrix(cohort, patient_ids))

    def predict_design(self, x: pd.DataFrame) -> pd.Series:
        """:meth:`predict_proba` on a table from :meth:`design_matrix` (to reuse it)."""
        self._check_fitted()
        values = x.to_numpy(dtype=np.float64, na_value=np.nan)
        scored = ~np.isnan(values).all(axis=1)
        out = np.full(len(x), np.nan)
        if scored.any():
            # In place: no DMatrix to build per call (the same trees and missing values).
            out[scored] = self.booster_.inplace_predict(values[scored], missing=np.nan)
        return pd.Series(out, index=x.index.rename("patient_id"), name="p_tabular")

    def _check_fitted(self) -> None:
        require_fitted(self, "booster_")

    # --- persistence -----------------------------------------------------------------------

    def save(self, folder: Path | str) -> Path:
        """Write ``model.ubj`` and ``tabular_branch.json`` into ``folder``; return the folder."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(folder / MODEL_FILE)
        fields = {
            "xgboost_version": xgb.__version__,
            "params": self.params.model_dump(),
            "seed": self.seed,
            "feature_names": self.feature_names_,
            "categories": self.categories_,
            "best_iteration": self.best_iteration_,
            "monotone_constraints": self.monotone_constraints_,
            "scale_pos_weight": self.scale_pos_weight_,
            "n_train": self.n_train_,
            "history": self.history_,
        }
        write_meta(folder / META_FILE, FORMAT, FORMAT_VERSION, fields)
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> TabularBranch:
        """Load what :meth:`save` wrote (no pickle: XGBoost's UBJ plus plain JSON)."""
        folder = Path(folder)
        meta = _read_meta(folder / META_FILE)
        try:
            branch = cls(TabularParams.model_validate(meta["params"]), seed=int(meta["seed"]))
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            raise DataFileError(
                f"{folder / META_FILE}: invalid tabular branch metadata: {exc}"
            ) from exc
        if not (folder / MODEL_FILE).is_file():
            raise DataFileError(f"{folder / MODEL_FILE}: model file not found")
        booster = xgb.Booster()
        try:
            booster.load_model(folder / MODEL_FILE)
        except xgb.core.XGBoostError as exc:
            raise DataFileError(
                f"{folder / MODEL_FILE}: not a readable XGBoost model: {exc}"
            ) from exc
        booster.set_param({"nthread": branch.params.n_jobs})
        branch.booster_ = booster
        branch.feature_names_ = list(meta["feature_names"])
        branch.categories_ = {str(c): list(v) for c, v in meta.get("categories", {}).items()}
        branch.best_iteration_ = int(meta["best_iteration"])
        branch.n_trees_ = branch.best_iteration_ + 1
        branch.monotone_constraints_ = dict(meta.get("monotone_constraints", {}))
        branch.scale_pos_weight_ = float(meta.get("scale_pos_weight", 1.0))
        branch.n_train_ = int(meta.get("n_train", 0))
        branch.history_ = meta.get("history", {})
        return branch


# --- helpers --------------------------------------------------------------------------------


def inner_validation_split(
    cohort: Cohort,
    train_ids: Sequence[str],
    fraction: float = 0.2,
    seed: int = 0,
    groups: pd.Series | None = None,
) -> tuple[list[str], list[str]]:
    """Carve a stratified validation part (for early stopping) out of the training ids only.

    Uses the cohort splitter, so ``groups`` (linked patients) never straddle the two parts.
    """
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"fraction must be in (0, 0.5), got {fraction}")
    patients = _rows(cohort, train_ids).reset_index()
    patients = patients[patients["label"].notna()]
    split = make_splits(
        patients, n_folds=round(1 / fraction), test_fraction=0.0, seed=seed, groups=groups
    )
    inner_train, inner_val = split.folds()[0]
    return inner_train, inner_val


def _report_once(cohort: Cohort, fresh: LoadReport) -> None:
    """Add a scoring's unseen categories to the cohort's report, once per cell however often
    the cohort is scored (predict, then explain)."""
    seen = {(e.action, e.row, e.column) for e in cohort.report.entries}
    cohort.report.entries.extend(
        e for e in fresh.entries if (e.action, e.row, e.column) not in seen
    )


def _positions(cohort: Cohort, own: list[str], ids: list[str]) -> np.ndarray:
    """Row positions of ``ids`` in the patients table; unknown ids are an error."""
    positions = pd.Index(own).get_indexer(ids)
    if (positions < 0).any():
        unknown = [i for i in dict.fromkeys(ids) if i not in set(own)]
        raise SchemaError(
            f"{len(unknown)} patient id(s) not in the cohort {cohort.spec.name!r}: {unknown[:10]}"
        )
    return positions


def _design_frame(
    names: list[str],
    derived: dict[str, np.ndarray],
    block: np.ndarray,
    where: dict[str, int],
    patients: pd.DataFrame,
    rows: np.ndarray | None,
    index: pd.Index,
) -> pd.DataFrame:
    """The design table: a derived column where one was computed (added, or its gaps filled),
    else the patients table's own column (float columns from ``block``, others in their dtype)."""
    if all(name in derived or name in where for name in names):  # one float block
        matrix = np.column_stack(
            [derived[n] if n in derived else block[:, where[n]] for n in names]
        ).reshape(len(index), len(names))
        return pd.DataFrame(matrix, columns=names, index=index)
    columns: dict[str, Any] = {}
    for name in names:
        if name in derived:
            columns[name] = derived[name]
        elif name in where:
            columns[name] = block[:, where[name]]
        else:
            own = patients[name].array
            columns[name] = own if rows is None else own.take(rows)
    return pd.DataFrame(columns, index=index)


def _rows(cohort: Cohort, ids: Sequence[str]) -> pd.DataFrame:
    """Patients rows for ``ids`` in that order, indexed by patient_id; unknown ids are an error."""
    table = cohort.patients.set_index("patient_id", drop=True)
    own = table.index.astype(str).tolist()
    ids = [str(i) for i in ids]
    if own == ids:
        return table  # every patient in the table's order (a request, a whole cohort): no lookup
    return table.iloc[_positions(cohort, own, ids)]


def _labelled_rows(
    cohort: Cohort, ids: Sequence[str], features: list[str], role: str
) -> tuple[pd.DataFrame, pd.Series]:
    """Features and labels of the ids with a label and at least one feature present."""
    if "label" not in cohort.patients:
        raise SchemaError(f"the cohort {cohort.spec.name!r} has no label column to train on")
    # A repeated id must not weigh twice in training.
    frame = derive_features(_rows(cohort, list(dict.fromkeys(map(str, ids)))))
    x = frame[features]
    keep = frame["label"].notna() & x.notna().any(axis=1)
    if not keep.any():
        raise SchemaError(
            f"none of the {len(frame)} {role} patients has both a label and tabular data"
        )
    return x[keep], frame.loc[keep, "label"].astype(int)


def _validation_rows(
    cohort: Cohort, train_ids: Sequence[str], val_ids: Sequence[str], features: list[str]
) -> tuple[pd.DataFrame, pd.Series]:
    both = sorted(set(map(str, train_ids)) & set(map(str, val_ids)))
    if both:
        raise SchemaError(
            f"{len(both)} patient(s) are in both the training and the validation ids "
            f"(e.g. {both[:5]}); early stopping on them would be optimistic"
        )
    x, y = _labelled_rows(cohort, val_ids, features, "validation")
    if y.nunique() < 2:
        raise SchemaError(
            f"the validation set has one class only ({len(y)} patients); its ROC AUC is undefined "
            "and early stopping would be blind — use a stratified split (inner_validation_split)"
        )
    return x, y


def _check_names(features: list[str]) -> None:
    bad = [f for f in features if _BAD_NAME.search(f)]
    if bad:
        raise SchemaError(
            f"feature names may not contain '[', ']' or '<' (XGBoost rejects them): {bad}; "
            "rename them in the cohort spec"
        )
    if not features:
        raise SchemaError("the cohort has no feature columns for the tabular branch")


def _read_meta(path: Path) -> dict[str, Any]:
    return read_meta(path, FORMAT, FORMAT_VERSION, "tabular branch")
