"""Explanations: exact SHAP for the tabular branch and the fusion, image saliency, per-patient
reports and the global view.

Importing this package is light: shap, TensorFlow and matplotlib load only when a function that
needs them runs. The public surface:

* :func:`tabular_shap`, :func:`tabular_interactions` — TreeSHAP of the tabular branch as
  ``shap.Explanation`` (``deeppcos.explain.tabular``);
* :func:`explain_predictions`, :class:`FusionAttribution` — the fused logit split exactly into the
  ultrasound images, each tabular feature and the bias, for late and intermediate fusion
  (``deeppcos.explain.fusion``);
* :func:`patient_saliency` — Grad-CAM or SHAP GradientExplainer maps at each image's original
  geometry (``deeppcos.explain.saliency``);
* :func:`explain_patient` → :class:`PatientExplanation` (``to_dict()`` for dashboards), and
  :func:`write_report` (HTML or PDF) (``deeppcos.explain.patient``, ``deeppcos.explain.report``);
* :func:`global_explanation`, :func:`write_global_view` (``deeppcos.explain.global_view``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "FusionAttribution",
    "GlobalExplanation",
    "PatientExplanation",
    "explain_patient",
    "explain_predictions",
    "global_explanation",
    "patient_saliency",
    "tabular_interactions",
    "tabular_shap",
    "write_global_view",
    "write_report",
]

_WHERE = {
    "FusionAttribution": "fusion",
    "explain_predictions": "fusion",
    "GlobalExplanation": "global_view",
    "global_explanation": "global_view",
    "write_global_view": "global_view",
    "PatientExplanation": "patient",
    "explain_patient": "patient",
    "patient_saliency": "saliency",
    "tabular_interactions": "tabular",
    "tabular_shap": "tabular",
    "write_report": "report",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        module = importlib.import_module(f"deeppcos.explain.{_WHERE[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'deeppcos.explain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
