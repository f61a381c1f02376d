"""Cohorts: spec, catalog, loaders, synthetic generator, leakage audit and splits."""

from deeppcos.data.cohort import Cohort
from deeppcos.data.loaders import load_cohort
from deeppcos.data.report import LoadReport
from deeppcos.data.spec import CohortSpec, load_spec, spec_from_dict
from deeppcos.data.splits import CohortSplit, check_split, make_splits
from deeppcos.knowledge.catalog import CATALOG, Feature, ultrasound_features

__all__ = [
    "CATALOG",
    "Cohort",
    "CohortSpec",
    "CohortSplit",
    "Feature",
    "LoadReport",
    "check_split",
    "load_cohort",
    "load_spec",
    "make_splits",
    "spec_from_dict",
    "ultrasound_features",
]
