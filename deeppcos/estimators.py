"""deeppcos's tabular branch as a scikit-learn classifier, for notebooks and pipelines.

``TabularClassifier`` takes a DataFrame (catalog column names such as ``amh_ng_ml``, or any
names) or an array, and 0/1 (or any two) labels; it works in ``Pipeline``,
``cross_val_score`` and ``GridSearchCV`` and passes scikit-learn's ``check_estimator``
(``tests/test_estimators.py``). Inside is the same :class:`~deeppcos.tabular.branch.TabularBranch`
that ``deeppcos train`` fits: XGBoost with missing values handled natively, the class balance
weighted, and the derived features (BMI, LH/FSH ratio, FAI, HOMA-IR, follicle summaries) added
when their parts are columns — unless ``derive_features=False``.

What differs from the branch in a run: there is no validation part, so no early stopping
(``n_estimators`` rounds are trained), and a row with every value missing still gets the
booster's probability (scikit-learn expects one for every row), where a run reports it as not
scored. The full multimodal model (images, fusion, calibration, severity) is
:class:`MultimodalClassifier`: ``fit(cohort)``, ``predict_proba``, ``predict``,
``predict_severity``, ``explain``, ``save`` / ``load`` (a run folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from deeppcos.tabular.branch import TabularBranch, TabularParams
from deeppcos.tabular.features import derive_features

__all__ = ["MultimodalClassifier", "TabularClassifier"]


class TabularClassifier(ClassifierMixin, BaseEstimator):
    """Binary classifier on tabular data (see the module notes).

    Parameters mirror :class:`~deeppcos.tabular.branch.TabularParams`; ``random_state`` is the
    booster's seed. Fitted attributes: ``classes_``, ``n_features_in_``, ``feature_names_in_``
    (for a DataFrame), ``feature_names_`` (the model's inputs, derived ones included) and
    ``branch_`` (the fitted TabularBranch: ``branch_.booster_`` for TreeSHAP).
    """

    def __init__(
        self,
        n_estimators: int = 300,
        max_depth: int = 3,
        learning_rate: float = 0.05,
        min_child_weight: float = 1.0,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        reg_alpha: float = 0.0,
        balance_classes: bool = True,
        monotone: bool = False,
        derive_features: bool = True,
        n_jobs: int = 1,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.balance_classes = balance_classes
        self.monotone = monotone
        self.derive_features = derive_features
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # XGBoost routes missing values itself
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X: Any, y: Any) -> TabularClassifier:
        x = self._frame(X, reset=True)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        kind = type_of_target(y, input_name="y", raise_unknown=True)
        if kind != "binary":
            raise ValueError(
                f"Only binary classification is supported. The type of the target is {kind} "
                "(TabularClassifier predicts one condition: present or not)."
            )
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(
                f"y holds one class only ({self.classes_.tolist()}); the classifier needs "
                "examples of both"
            )
        target = pd.Series((y == self.classes_[1]).astype("float64"), index=x.index)
        branch = TabularBranch(self._params(), seed=int(self.random_state))
        self.branch_ = branch.fit_frame(x, target)
        self.feature_names_ = list(self.branch_.feature_names_)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "branch_")
        x = self._frame(X, reset=False)[self.feature_names_]
        values = x.to_numpy(dtype="float64", na_value=np.nan)
        p = np.asarray(self.branch_.booster_.inplace_predict(values, missing=np.nan), "float64")
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "branch_")
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    def _params(self) -> TabularParams:
        return TabularParams(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            min_child_weight=self.min_child_weight,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda,
            reg_alpha=self.reg_alpha,
            early_stopping_rounds=None,  # no validation part to stop on
            balance_classes=self.balance_classes,
            monotone=self.monotone,
            n_jobs=self.n_jobs,
        )

    def _frame(self, X: Any, *, reset: bool) -> pd.DataFrame:
        """``X`` checked the scikit-learn way (numbers, NaN allowed, the fitted column count
        and names), as a DataFrame with the derived features added."""
        values = validate_data(self, X, reset=reset, ensure_all_finite="allow-nan", dtype="float64")
        names = getattr(self, "feature_names_in_", None)
        columns = (
            [str(c) for c in names]
            if names is not None
            else [f"x{k}" for k in range(values.shape[1])]
        )
        frame = pd.DataFrame(values, columns=columns)
        return derive_features(frame) if self.derive_features else frame


# --- the whole model ------------------------------------------------------------------------------


class MultimodalClassifier:
    """deeppcos's whole model — both branches, the fusion with its routes and calibration, the
    decision threshold and the severity head — fitted on a :class:`~deeppcos.data.Cohort` in
    memory, scikit-learn style::

        model = MultimodalClassifier(config).fit(cohort)
        model.predict_proba(new)[:, 1]      # calibrated PCOS risk per patient
        model.predict(new)                  # the decision at the run's threshold
        model.predict_severity(new)         # the grade (lowest unless flagged)
        model.explain(new, "P-17")          # the clinician's explanation of one patient
        model.save("runs/mine")             # an ordinary run folder: deeppcos evaluate, serve …
        MultimodalClassifier.load("runs/mine")

    ``config``: a run config (``RunConfig``, a YAML path, or a mapping of its sections:
    ``tabular``, ``image``, ``split``, ``fusion``, ``severity``, ``seed``, ``name``); None fits
    the tabular branch alone with the library's defaults. ``deeppcos train`` is this class's
    ``fit`` then ``save`` (:func:`deeppcos.pipeline.training.fit_run`,
    :meth:`FittedRun.write`), so both give the same run. Fitted attributes: ``predictor_``
    (what scores), ``metrics_`` (a ``RunMetrics``: what ``metrics.json`` records, out-of-fold
    figures with intervals; ``metrics_.to_json()`` is the file's mapping), ``threshold_``,
    ``fusion_method_``, ``branches_``, ``test_ids_`` (the fitting cohort's locked test part,
    never trained on), ``fitted_`` (the in-memory run; None after ``load``) and ``run_`` (the
    folder it was saved to or loaded from; None before).

    Predictions take a cohort (``Cohort.from_frames(patients, images)`` for data frames, or any
    loaded cohort) and optional ``patient_ids`` (default every patient, in the table's order).
    """

    def __init__(self, config: Any = None) -> None:
        self.config = config

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, cohort: Any, *, progress: Any = None) -> MultimodalClassifier:
        """Cross-validate and fit every enabled branch, the fusion stage and the severity head
        on ``cohort``'s development part (its locked test part is held out, as in a run)."""
        from deeppcos.pipeline.training import fit_run

        fitted = fit_run(self._run_config(cohort), cohort, progress=progress)
        self._set(fitted.predictor(), fitted, None)
        return self

    def _run_config(self, cohort: Any) -> Any:
        """The config as a ``RunConfig`` whose cohort source names the in-memory cohort (a given
        config keeps its own source)."""
        from deeppcos.config import RunConfig, config_from_dict, load_config

        config = self.config
        if isinstance(config, RunConfig):
            return config
        if isinstance(config, str | Path):
            return load_config(config)
        sections = dict(config or {"tabular": {"enabled": True}, "image": {"enabled": False}})
        sections.setdefault("name", "multimodal-classifier")
        if not any(k in sections for k in ("cohort", "cohort_spec", "synthetic")):
            # Not a source anything can reload: predictions and evaluation of such a model
            # take the patients as an argument.
            sections["cohort"] = {
                "name": cohort.spec.name,
                "description": "passed in memory to deeppcos.MultimodalClassifier.fit",
            }
        return config_from_dict(sections, "MultimodalClassifier config")

    def _set(self, predictor: Any, fitted: Any, run: Path | None) -> None:
        self.predictor_ = predictor
        self.fitted_ = fitted
        self.run_ = run
        self.metrics_ = predictor.metrics
        self.threshold_ = predictor.threshold
        self.fusion_method_ = predictor.fusion_method
        self.branches_ = list(predictor.branches)
        # The locked test part of the fitting cohort's split: never trained on.
        self.test_ids_ = [p for p, part in predictor.split_assignments.items() if part == "test"]

    # --- prediction ---------------------------------------------------------------------------

    def predict_frame(self, cohort: Any, patient_ids: Any = None) -> pd.DataFrame:
        """One row per patient: branch probabilities, calibrated ``risk``, ``decision``, the
        route (``modalities``) and, with a severity head, ``severity`` and its probabilities
        (``deeppcos.load_run(...).predict``'s frame)."""
        return self._predictor().predict(cohort, patient_ids)

    def predict_proba(self, cohort: Any, patient_ids: Any = None) -> np.ndarray:
        """(n, 2): 1 − risk and the calibrated risk; NaN for a patient with neither labs nor
        images of the model's kinds."""
        risk = self.predict_frame(cohort, patient_ids)["risk"].to_numpy(dtype="float64")
        return np.column_stack([1.0 - risk, risk])

    def predict(self, cohort: Any, patient_ids: Any = None) -> pd.array:
        """The decision at the model's threshold (chosen for its target sensitivity out of
        fold): True / False, missing where nothing could be scored."""
        return self.predict_frame(cohort, patient_ids)["decision"].array

    def predict_severity(self, cohort: Any, patient_ids: Any = None) -> pd.Series:
        """The severity grade per patient (indexed by patient_id): the lowest grade unless the
        decision is positive. Raises when the model has no severity head."""
        from deeppcos.exceptions import NotFittedError

        if self._predictor().severity is None:
            raise NotFittedError(
                "this model has no severity head (severity.enabled was false, or the cohort "
                "had no grades: see metrics_.severity)"
            )
        frame = self.predict_frame(cohort, patient_ids)
        return pd.Series(frame["severity"].array, index=frame["patient_id"], name="severity")

    def explain(self, cohort: Any, patient_id: str, *, saliency: str | None = "gradcam") -> Any:
        """One patient's explanation (``deeppcos.explain.PatientExplanation``): what moved her
        risk, her criteria checklist, image maps; ``.to_dict()`` for JSON, and
        ``deeppcos.explain.report.write_report`` for the clinician's HTML report."""
        from deeppcos.explain.patient import explain_patient

        predictor = self._predictor()
        maps = saliency if "image" in predictor.branches else None
        return explain_patient(predictor, patient_id, cohort, saliency=maps)

    def _predictor(self) -> Any:
        from deeppcos.exceptions import require_fitted

        require_fitted(self, "predictor_")
        return self.predictor_

    # --- persistence --------------------------------------------------------------------------

    def save(self, run_dir: Path | str, *, overwrite: bool = False) -> Path:
        """Write the model as a run folder (what ``deeppcos train`` writes); returns it."""
        from deeppcos.exceptions import RunError

        self._predictor()
        if self.fitted_ is None:
            raise RunError(
                f"this model was loaded from {self.run_}: it is already a run folder (copy it)"
            )
        run = self.fitted_.save(run_dir, overwrite=overwrite)
        self._set(self.fitted_.predictor(run), self.fitted_, run)
        return run

    @classmethod
    def load(cls, run_dir: Path | str) -> MultimodalClassifier:
        """A model from a run folder (``deeppcos train``'s or :meth:`save`'s)."""
        from deeppcos.inference.predictor import load_run

        predictor = load_run(run_dir)
        model = cls(predictor.config)
        model._set(predictor, None, Path(run_dir))
        return model
