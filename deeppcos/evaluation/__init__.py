"""Metrics with confidence intervals, plots and reports."""
