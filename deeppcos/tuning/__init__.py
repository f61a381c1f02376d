"""Optuna tuning of the branches and the fusion: resumable, parallel, distributed.

The public surface is small and loads lazily, so importing :mod:`deeppcos.tuning` costs nothing
until a name is used (Optuna is imported only here, and only when a study runs)::

    from deeppcos.tuning import tune, list_studies, load_tuning_settings
    results = tune("configs/pcos-kaggle-tabular.yaml", "tabular", trials=30)
    results[0].decision.chosen        # "tuned" or "default", with the reason and the figures

Modules: ``spaces`` (settings and search spaces, ``configs/tuning.yaml``), ``objective``
(patient-grouped, repeated inner cross-validation on the development part; pruning reports),
``selection`` (the keep-the-default rule and the tuned config), ``storage`` (journal file,
SQLite, PostgreSQL; stale-trial clean-up), ``workers`` (worker processes) and ``study``
(create, resume, run, decide).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "Decision",
    "TuneResult",
    "TuningSettings",
    "default_storage",
    "list_studies",
    "load_tuning_settings",
    "open_storage",
    "tune",
]

_WHERE = {
    "Decision": "selection",
    "TuneResult": "study",
    "TuningSettings": "spaces",
    "default_storage": "storage",
    "list_studies": "study",
    "load_tuning_settings": "spaces",
    "open_storage": "storage",
    "tune": "study",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"deeppcos.tuning.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'deeppcos.tuning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
