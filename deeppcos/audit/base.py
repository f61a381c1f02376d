"""The audit's records (Finding, AuditResult), the context every check reads, and the settings the
checks share."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from deeppcos.audit.rules import (
    SEVERITY_ORDER,
    Severity,
    json_safe,
)
from deeppcos.data.cohort import Cohort

Progress = Callable[[int, int], None]

DEFAULT_NEAR_DUP_BITS = 2  # evidence in the module docstring
MOSTLY_MISSING = 0.5
N_FOLDS = 5
N_BOOTSTRAP = 200
# A border row or column is padding when its grey levels vary by at most this (standard
# deviation): letterbox bars, black, white or any flat fill, survive JPEG noise at this level.
PADDING_FLAT_STD = 4.0
# Columns of the images table that are identifiers, the label itself or what the audit computes;
# every other column is an acquisition property and gets a shortcut probe.
_NOT_ACQUISITION = {
    "image_id",
    "patient_id",
    "path",
    "frame",
    "frames",
    "label",
    "folder",  # image-folder cohorts: the class folder *is* the label
    "sha256",
    "width",
    "height",
    "channels",
    "bit_depth",
    "file_bytes",
    "file_format",
    "color_mode",
}




# --- results ---------------------------------------------------------------------------------


@dataclass
class Finding:
    check: str
    severity: Severity
    title: str
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass
class AuditResult:
    findings: list[Finding]
    image_features: pd.DataFrame
    duplicate_clusters: pd.DataFrame
    patient_groups: pd.Series
    probes: pd.DataFrame = field(default_factory=pd.DataFrame)
    duplicate_pairs: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def worst_severity(self) -> Severity:
        if not self.findings:
            return "ok"
        return max((f.severity for f in self.findings), key=SEVERITY_ORDER.__getitem__)

    def by_check(self, prefix: str) -> list[Finding]:
        """Findings whose check id is ``prefix`` or starts with ``prefix.``."""
        return [f for f in self.findings if f.check == prefix or f.check.startswith(prefix + ".")]

    def to_dict(self) -> dict[str, Any]:
        clusters = self.duplicate_clusters
        in_cluster = (
            clusters[clusters["near_cluster"].duplicated(keep=False)] if len(clusters) else clusters
        )
        groups = self.patient_groups
        shared = groups[groups.duplicated(keep=False)] if len(groups) else groups
        return json_safe(
            {
                "settings": self.settings,
                "worst_severity": self.worst_severity,
                "counts": {s: sum(f.severity == s for f in self.findings) for s in SEVERITY_ORDER},
                "findings": [f.to_dict() for f in self.findings],
                "probes": self.probes.to_dict(orient="records"),
                # Only images and patients that share a cluster: singletons carry no news.
                "duplicate_clusters": in_cluster.to_dict(orient="records"),
                "patient_groups": {str(k): int(v) for k, v in shared.items()},
            }
        )

    def to_json(self, path: Path | str) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
        return path

    def to_html(self, path: Path | str) -> Path:
        from deeppcos.audit.report import render_html

        path = Path(path)
        path.write_text(render_html(self), encoding="utf-8")
        return path

    def print_rich(self, console: Any = None) -> None:
        from deeppcos.audit.report import print_findings

        print_findings(self, console)


def worse(a: Severity, b: Severity) -> Severity:
    return a if SEVERITY_ORDER[a] >= SEVERITY_ORDER[b] else b




@dataclass
class _Context:
    """What every check needs: per-image table with labels, parts and clusters."""

    cohort: Cohort
    frame: pd.DataFrame  # per image: features, clusters, label, part, group
    groups: pd.Series
    part_source: str | None
    seed: int
    threshold: int
