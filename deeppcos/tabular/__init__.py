"""The tabular branch: derived clinical features and an XGBoost model with the branch contract
(``fit`` / ``predict_proba`` / ``save`` / ``load``). Imports neither TensorFlow nor shap."""

from deeppcos.tabular.branch import (
    MONOTONE_DIRECTIONS,
    TabularBranch,
    TabularParams,
    inner_validation_split,
)
from deeppcos.tabular.features import (
    DERIVED,
    derivable_columns,
    derive_features,
    is_ultrasound_feature,
    select_features,
)

__all__ = [
    "DERIVED",
    "MONOTONE_DIRECTIONS",
    "TabularBranch",
    "TabularParams",
    "derivable_columns",
    "derive_features",
    "inner_validation_split",
    "is_ultrasound_feature",
    "select_features",
]
