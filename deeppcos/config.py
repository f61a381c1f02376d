"""Typed run configuration, loaded from ``configs/*.yaml`` and validated on load.

A config names a cohort (an inline ``cohort:`` spec, a ``cohort_spec:`` file, or a
``synthetic:`` cohort generated on first use), the split, and each branch's settings. Each
model's settings (branches, fusion, severity head) are checked by :func:`load_config` through
:mod:`deeppcos.parameters`, imported only there, so this module stays free of model code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deeppcos.exceptions import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticSource(_Strict):
    """A synthetic cohort generated into ``folder`` when it is not there yet."""

    patients: int = Field(600, ge=10)
    seed: int = 0
    image_size: int = Field(256, ge=32, le=2048)
    with_ultrasound_columns: bool = False
    folder: Path = Path("../runs/cohorts/synthetic")


class SplitConfig(_Strict):
    n_folds: int = Field(5, ge=2, le=20)
    test_fraction: float = Field(0.2, ge=0.0, lt=0.9)
    seed: int | None = Field(None, description="defaults to the config's seed")
    group_duplicates: bool = Field(
        True, description="keep patients linked by duplicate images in one part (audit)"
    )
    near_duplicate_bits: int = Field(
        2,
        ge=0,
        le=32,
        description="perceptual-hash distance (of 64 bits) at which two images count as near "
        "copies for grouping; 2 is safe for still images (deeppcos.audit.checks), video frames "
        "need more (PCOSGen: 8, evidence in its config)",
    )
    label_noise: Literal["keep", "exclude"] = Field(
        "keep",
        description="duplicate groups (at near_duplicate_bits) whose near-copies' labels ignore "
        "the picture (label consistency under 0.5 on at least 30 pairs, "
        "deeppcos.audit.label_noise): keep them, or set them aside (neither trained on nor "
        "evaluated; listed in the load report). Judged even when group_duplicates is false.",
    )


class BranchConfig(_Strict):
    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)


class FusionConfig(_Strict):
    """The fusion of the branches, calibrated, with a decision threshold chosen for a target
    sensitivity (a missed PCOS case costs more than a false alarm).

    ``method``: ``late`` (stacking of out-of-fold branch outputs), ``intermediate`` (image
    embeddings reduced by PCA and joined with the tabular features in one booster; needs both
    branches) or ``best``: both are cross-validated on the same folds and the one with the higher
    out-of-fold ROC AUC is kept (late fusion when only one branch is enabled). Both methods'
    figures are recorded in ``metrics.json`` whenever both can run.
    """

    enabled: bool = True
    method: Literal["late", "intermediate", "best"] = "best"
    target_sensitivity: float = Field(0.95, gt=0.0, le=1.0)
    late: dict[str, Any] = Field(
        default_factory=dict, description="LateFusion settings: C (L2 strength), class_weight"
    )
    intermediate: dict[str, Any] = Field(
        default_factory=dict,
        description="IntermediateFusion settings: n_components, n_estimators, max_depth, …",
    )


class SeverityConfig(_Strict):
    """The ordinal severity head, trained only on patients that have a grade.

    ``source``: ``column`` reads the cohort's ``severity`` column; ``criteria`` derives the grade
    from the Rotterdam criteria and phenotype (``deeppcos.knowledge.criteria``) under ``guideline``,
    and removes the columns the rules read from the head's inputs; ``auto`` uses the column when
    the cohort has one and the criteria otherwise.
    """

    enabled: bool = True
    source: Literal["auto", "column", "criteria"] = "auto"
    guideline: Literal["rotterdam-2003", "2023-international"] = "rotterdam-2003"
    kind: Literal["xgboost", "logistic"] = "xgboost"
    params: dict[str, Any] = Field(
        default_factory=dict, description="OrdinalHead settings: n_estimators, max_depth, C, …"
    )


class RunConfig(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    cohort: dict[str, Any] | None = None
    cohort_spec: Path | None = None
    synthetic: SyntheticSource | None = None
    split: SplitConfig = Field(default_factory=SplitConfig)
    tabular: BranchConfig = Field(default_factory=BranchConfig)
    image: BranchConfig = Field(default_factory=BranchConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    severity: SeverityConfig = Field(default_factory=SeverityConfig)
    config_dir: Path | None = Field(
        None,
        description="set in a run's config.yaml: where relative paths of the original "
        "config resolve from",
    )
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _one_cohort_source(self) -> RunConfig:
        given = [k for k in ("cohort", "cohort_spec", "synthetic") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "name exactly one cohort source: 'cohort' (inline spec), 'cohort_spec' (a file) "
                f"or 'synthetic'; found {given or 'none'}"
            )
        if not (self.tabular.enabled or self.image.enabled):
            raise ValueError("enable at least one branch (tabular or image)")
        return self

    def resolve(self, path: Path | str) -> Path:
        path = Path(path).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def split_seed(self) -> int:
        return self.seed if self.split.seed is None else self.split.seed


def load_config(path: Path | str) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = raw.get("config_dir") or path.parent.resolve()
    return config_from_dict({**raw, "base_dir": base}, str(path))


def config_from_dict(raw: dict[str, Any], source: str) -> RunConfig:
    """A run config from plain data (a loaded YAML file, or the sections a Python caller
    passes): the schema, then each model's own settings, every problem named in one
    ConfigError that starts with ``source``."""
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: invalid config: {problems}") from exc
    # Each model's own settings too, now rather than when training reaches that model.
    from deeppcos.parameters import model_setting_problems

    settings = model_setting_problems(config)
    if settings:
        raise ConfigError(f"{source}: invalid config: {'; '.join(settings)}")
    return config


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """The resolved config as plain data (paths absolute), for the run folder."""
    data = config.model_dump(mode="json", exclude={"base_dir"}, exclude_none=True)
    data["config_dir"] = str(config.base_dir)
    if config.cohort_spec is not None:
        data["cohort_spec"] = str(config.resolve(config.cohort_spec))
    if config.synthetic is not None:
        data["synthetic"]["folder"] = str(config.resolve(config.synthetic.folder))
    return data
