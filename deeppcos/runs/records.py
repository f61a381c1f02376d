"""Typed records of what training measured: a run's ``metrics.json``.

The file's keys are the ones scripts rely on (documented in ``deeppcos.evaluation.metrics`` and
the README); these records read and write exactly those keys, so ``to_json(from_json(x)) == x``
for every file this version writes, plus ``format_version``. Consumers read figures through one
schema, :class:`Estimate` (a value and its interval), whichever of the two layouts the file
holds a figure in: the flat summary of ``binary_metrics`` (``roc_auc`` beside ``roc_auc_ci``) or
the nested one of ``classification_metrics`` (``{"value", "ci"}`` per metric).

What a record does not model (per-method fusion figures, calibration selection, missingness
tests, severity) is kept verbatim in its ``details`` and written back unchanged.

Versions: 1 is ``metrics.json`` before it carried ``format_version`` (the same keys; it reads as
is); 2 adds the key. A file from a newer deeppcos is refused with the upgrade to run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deeppcos.exceptions import RunError
from deeppcos.runs.layout import RunFiles

__all__ = [
    "METRICS_FORMAT",
    "BinarySummary",
    "BranchRecord",
    "Estimate",
    "FusionRecord",
    "RunMetrics",
    "ThresholdSummary",
]

METRICS_FORMAT = 2
# Figures a model card shows, in its order; both summary layouts answer them by name.
HEADLINE = ("roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "npv", "brier")
_BINARY_KEYS = ("n", "positives", "roc_auc", "roc_auc_ci", "pr_auc", "brier", "log_loss")
_COUNT_KEYS = ("threshold", "n", "positives")


def _interval(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    low, high = value
    return (float(low), float(high))


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Estimate:
    """One figure: its value, its 95% interval (None when none is reported), and what else the
    file says of it (``ci_note``, ``ci_method``, ``plugin``, ``value_method``)."""

    value: float | None
    ci: tuple[float, float] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Estimate:
        rest = {k: v for k, v in data.items() if k not in ("value", "ci")}
        return cls(_number(data.get("value")), _interval(data.get("ci")), rest)

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "ci": list(self.ci) if self.ci is not None else None,
            **self.details,
        }


@dataclass(frozen=True)
class BinarySummary:
    """``binary_metrics``'s flat summary: threshold-free figures, ROC AUC with its interval."""

    n: int
    positives: int | None
    roc_auc: float | None
    roc_auc_ci: tuple[float, float] | None
    pr_auc: float | None
    brier: float | None
    log_loss: float | None
    details: Mapping[str, Any] = field(default_factory=dict)  # fold, note, roc_auc_ci_note

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BinarySummary:
        return cls(
            n=int(data["n"]),
            positives=None if data.get("positives") is None else int(data["positives"]),
            roc_auc=_number(data.get("roc_auc")),
            roc_auc_ci=_interval(data.get("roc_auc_ci")),
            pr_auc=_number(data.get("pr_auc")),
            brier=_number(data.get("brier")),
            log_loss=_number(data.get("log_loss")),
            details={k: v for k, v in data.items() if k not in _BINARY_KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        front = {"fold": self.details["fold"]} if "fold" in self.details else {}
        values = {
            "n": self.n,
            "positives": self.positives,
            "roc_auc": self.roc_auc,
            "roc_auc_ci": list(self.roc_auc_ci) if self.roc_auc_ci is not None else None,
            "pr_auc": self.pr_auc,
            "brier": self.brier,
            "log_loss": self.log_loss,
        }
        # A key the summary left out (no log loss with one class) stays out.
        optional = ("positives", "pr_auc", "brier", "log_loss")
        absent = {k for k in optional if getattr(self, k) is None}
        values = {k: v for k, v in values.items() if k not in absent}
        return {**front, **values, **{k: v for k, v in self.details.items() if k != "fold"}}

    def figure(self, key: str) -> Estimate | None:
        if key == "roc_auc":
            note = self.details.get("roc_auc_ci_note")
            return Estimate(self.roc_auc, self.roc_auc_ci, {"ci_note": note} if note else {})
        value = getattr(self, key, None) if key in ("pr_auc", "brier", "log_loss") else None
        return Estimate(value) if value is not None else None


@dataclass(frozen=True)
class ThresholdSummary:
    """``classification_metrics``: every figure as an :class:`Estimate`, at one threshold."""

    figures: Mapping[str, Estimate]
    threshold: float | None
    n: int
    positives: int | None
    details: Mapping[str, Any] = field(default_factory=dict)  # counts, excluded, bootstrap, note

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ThresholdSummary:
        # Every mapping but the bootstrap settings is a figure ({"value", "ci", …}).
        figures = {
            k: Estimate.from_json(v)
            for k, v in data.items()
            if isinstance(v, Mapping) and k != "bootstrap"
        }
        return cls(
            figures=figures,
            threshold=_number(data.get("threshold")),
            n=int(data["n"]),
            positives=None if data.get("positives") is None else int(data["positives"]),
            details={k: v for k, v in data.items() if k not in _COUNT_KEYS and k not in figures},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: e.to_json() for k, e in self.figures.items()},
            "threshold": self.threshold,
            "n": self.n,
            "positives": self.positives,
            **self.details,
        }

    def figure(self, key: str) -> Estimate | None:
        estimate = self.figures.get(key)
        return estimate if estimate is not None and estimate.value is not None else None


def headline(*summaries: BinarySummary | ThresholdSummary | None) -> dict[str, Estimate]:
    """The model card's figures, each from the first summary that has it."""
    out: dict[str, Estimate] = {}
    for key in HEADLINE:
        for summary in summaries:
            estimate = summary.figure(key) if summary is not None else None
            if estimate is not None and estimate.value is not None:
                out[key] = estimate
                break
    return out


@dataclass(frozen=True)
class BranchRecord:
    """One branch: out-of-fold figures over the development patients, per fold, its settings,
    and the refit on every development patient."""

    oof: BinarySummary
    folds: list[BinarySummary]
    params: Mapping[str, Any]
    refit: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BranchRecord:
        return cls(
            oof=BinarySummary.from_json(data["oof"]),
            folds=[BinarySummary.from_json(f) for f in data.get("folds", [])],
            params=dict(data.get("params", {})),
            refit=dict(data["refit"]) if data.get("refit") is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "oof": self.oof.to_json(),
            "folds": [f.to_json() for f in self.folds],
            "params": dict(self.params),
        }
        if self.refit is not None:
            out["refit"] = dict(self.refit)
        return out


@dataclass(frozen=True)
class FusionRecord:
    """The fusion stage: the chosen method, the calibrated risk's out-of-fold figures (threshold
    free, and at the decision threshold), calibration, routes and the decision rule."""

    method: str
    oof: BinarySummary | None
    oof_at_threshold: ThresholdSummary | None
    calibration: Mapping[str, Any]
    routes: Mapping[str, Any]
    decision: Mapping[str, Any]
    details: Mapping[str, Any] = field(default_factory=dict)  # methods, chosen_by, missingness

    _MODELLED = ("method", "oof", "oof_at_threshold", "calibration", "routes", "decision")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FusionRecord:
        at = data.get("oof_at_threshold")
        return cls(
            method=str(data["method"]),
            oof=BinarySummary.from_json(data["oof"]) if data.get("oof") else None,
            oof_at_threshold=ThresholdSummary.from_json(at) if at else None,
            calibration=dict(data.get("calibration", {})),
            routes=dict(data.get("routes", {})),
            decision=dict(data.get("decision", {})),
            details={k: v for k, v in data.items() if k not in cls._MODELLED},
        )

    def to_json(self) -> dict[str, Any]:
        # The file's order: method and how it was chosen first, the decision last.
        first = {k: self.details[k] for k in ("chosen_by", "methods") if k in self.details}
        rest = {k: v for k, v in self.details.items() if k not in first}
        out: dict[str, Any] = {"method": self.method, **first}
        if self.oof is not None:
            out["oof"] = self.oof.to_json()
        if "oof_uncalibrated" in rest:
            out["oof_uncalibrated"] = rest.pop("oof_uncalibrated")
        if self.oof_at_threshold is not None:
            out["oof_at_threshold"] = self.oof_at_threshold.to_json()
        out.update(calibration=dict(self.calibration), routes=dict(self.routes), **rest)
        out["decision"] = dict(self.decision)
        return out

    @property
    def threshold(self) -> float | None:
        return _number(self.decision.get("threshold"))

    @property
    def target_sensitivity(self) -> float | None:
        return _number(self.decision.get("target_sensitivity"))

    @property
    def missing_modalities(self) -> Mapping[str, Any]:
        """Per modality: patients with and without it, and whether that differs by label."""
        return self.details.get("missing_modalities", {})

    @property
    def calibration_method(self) -> str | None:
        return self.calibration.get("method")

    def method_oof(self) -> dict[str, BinarySummary]:
        """Each fusion method compared, uncalibrated, on the patients with every modality."""
        methods = self.details.get("methods", {})
        return {
            method: BinarySummary.from_json(entry["oof_uncalibrated"])
            for method, entry in methods.items()
            if entry.get("oof_uncalibrated")
        }

    def route_oof(self) -> dict[str, BinarySummary]:
        """Each route's out-of-fold figures (the patients scored by that route)."""
        return {
            route: BinarySummary.from_json(entry["oof"])
            for route, entry in self.routes.items()
            if entry.get("oof")
        }


@dataclass(frozen=True)
class RunMetrics:
    """A run's ``metrics.json``: the cohort's words, the split's sizes, each branch, the fusion
    stage and the severity head (kept as written: ``deeppcos.evaluation.metrics`` documents it)."""

    label_name: str | None  # None: a file from before the cohort's words were recorded
    pcos: bool | None
    image_modality: str | None
    seed: int | None
    development_patients: int | None
    test_patients: int | None
    branches: Mapping[str, BranchRecord]
    fusion: FusionRecord | None = None
    severity: Mapping[str, Any] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # label_corrections, …
    format_version: int = METRICS_FORMAT

    _MODELLED = (
        "format_version",
        "label_name",
        "pcos",
        "image_modality",
        "seed",
        "development_patients",
        "test_patients",
        "branches",
        "fusion",
        "severity",
    )

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = RunFiles.METRICS) -> RunMetrics:
        """Read a ``metrics.json`` mapping; ``source`` names the file in errors."""
        version = int(data.get("format_version", 1))
        if version > METRICS_FORMAT:
            raise RunError(
                f"{source}: metrics format {version} was written by a newer deeppcos (this "
                f"version reads up to {METRICS_FORMAT}); upgrade with 'pip install -U deeppcos'"
            )
        try:
            branches = dict(data.get("branches", {}))
            return cls(
                label_name=data.get("label_name"),
                pcos=data.get("pcos"),
                image_modality=data.get("image_modality"),
                seed=None if data.get("seed") is None else int(data["seed"]),
                development_patients=data.get("development_patients"),
                test_patients=data.get("test_patients"),
                branches={k: BranchRecord.from_json(v) for k, v in branches.items()},
                fusion=FusionRecord.from_json(data["fusion"]) if data.get("fusion") else None,
                severity=dict(data["severity"]) if data.get("severity") is not None else None,
                details={k: v for k, v in data.items() if k not in cls._MODELLED},
                format_version=METRICS_FORMAT,  # read once, written in this version's layout
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise RunError(
                f"{source}: not a deeppcos metrics record ({type(exc).__name__}: {exc}); "
                "train the run again with 'deeppcos train --overwrite'"
            ) from exc

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": self.format_version,
            **self.words(),
            "image_modality": self.image_modality,
            "seed": self.seed,
            "development_patients": self.development_patients,
            "test_patients": self.test_patients,
            **self.details,
            "branches": {k: b.to_json() for k, b in self.branches.items()},
        }
        if self.fusion is not None:
            out["fusion"] = self.fusion.to_json()
        if self.severity is not None:
            out["severity"] = dict(self.severity)
        return out

    def words(self) -> dict[str, Any]:
        """What the file says of the cohort's words (``label_name``, ``pcos``), where it does."""
        return {
            k: v for k, v in (("label_name", self.label_name), ("pcos", self.pcos)) if v is not None
        }

    def oof_headline(self) -> dict[str, Estimate]:
        """The calibrated risk's out-of-fold figures (the model card's): threshold figures at
        the decision threshold, threshold-free ones with their intervals."""
        if self.fusion is None:
            return {}
        return headline(self.fusion.oof_at_threshold, self.fusion.oof)
