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
scored. The full multimodal model (images, fusion, calibration, severity) stays with
``deeppcos train`` and ``deeppcos.load_run``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from deeppcos.tabular.branch import TabularBranch, TabularParams
from deeppcos.tabular.features import derive_features

__all__ = ["TabularClassifier"]


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
