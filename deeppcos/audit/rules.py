"""The audit's severity levels, its thresholds and its JSON conversion: what the checks
(:mod:`deeppcos.audit.checks`) and the report (:mod:`deeppcos.audit.report`) both use, in a
module below both. The thresholds' evidence is in the audit module's notes."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "LABEL_CONSISTENCY_HIGH",
    "LABEL_CONSISTENCY_WARNING",
    "NEAR_COPY_BITS",
    "NEAR_COPY_MIN_PAIRS",
    "SEVERITY_ORDER",
    "SHORTCUT_HIGH",
    "SHORTCUT_WARNING",
    "TABULAR_HIGH",
    "TABULAR_WARNING",
    "Severity",
    "json_safe",
]

Severity = Literal["ok", "info", "warning", "high"]
SEVERITY_ORDER: dict[str, int] = {"ok": 0, "info": 1, "warning": 2, "high": 3}

# A probe's cross-validated AUC at or above these is a shortcut finding (high / warning).
SHORTCUT_HIGH = 0.75
SHORTCUT_WARNING = 0.65
TABULAR_HIGH = 0.90
TABULAR_WARNING = 0.75
# Near-copies (perceptual hashes at most NEAR_COPY_BITS apart) of different patients should
# share their label. Label consistency = 1 − (share of such pairs labelled differently) / (the
# share two images' labels differ by chance, 2 p (1 − p)): 1 when near-copies always agree, 0
# when their labels ignore the picture. Below these it is a finding (high / warning), judged on
# at least NEAR_COPY_MIN_PAIRS pairs. PCOSGen's neighbouring video frames sit near 0.
NEAR_COPY_BITS = 2
NEAR_COPY_MIN_PAIRS = 30
LABEL_CONSISTENCY_HIGH = 0.5
LABEL_CONSISTENCY_WARNING = 0.8


def json_safe(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, NaN and pandas NA as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return value
    return str(value)
