"""Metrics with confidence intervals, plots, subgroup analysis and the model card.

- ``metrics``: ``classification_metrics``, ``ordinal_metrics``, ``threshold_for_sensitivity``,
  ``binary_metrics``, ``calibration_table``; re-exports the subgroup helpers.
- ``subgroups``: ``subgroup_metrics``, ``age_band``, ``bmi_band``.
- ``plots``: ROC, PR, reliability, confusion matrix, confidence histograms (PNG, headless).
- ``model_card``: ``write_model_card`` (Markdown).

Import the module you need; this package root imports nothing, so importing the metrics does not
pull in matplotlib.
"""
