"""Tuning settings and search spaces (``configs/tuning.yaml``), validated on load.

The file has one section per concern — ``study`` (sampler and seeds), ``pruner``,
``objective`` (metrics) — and one per target: ``tabular`` and ``image`` (``cv``, ``selection``,
``space``) and ``fusion`` (``selection``, ``method`` and a space per method). A parameter of a
space is one of::

    max_depth: {type: int, low: 2, high: 5}
    learning_rate: {type: float, low: 0.01, high: 0.2, log: true}
    backbone: {type: categorical, choices: [compact]}

Every default below *is* the documented default: ``configs/tuning.yaml`` spells the same values
out (a test keeps the two equal), and a run without ``--space`` uses them.

Why the tabular space looks the way it does: on a cohort of a few hundred patients the
cross-validated score of a configuration is noisy (one fold holds ~90 women), so a wide search
mostly finds configurations that were lucky on its folds. The space is therefore centred on the
branch's own default (shallow trees, depth 3, learning rate 0.05, subsampling 0.8) and spans
regularised variations of it; it must contain the run config's own values, which are always
evaluated first (see :mod:`deeppcos.tuning.objective` and :mod:`deeppcos.tuning.selection`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deeppcos.exceptions import ConfigError

if TYPE_CHECKING:
    import optuna

TARGETS: tuple[str, ...] = ("tabular", "image", "fusion")
Metric = Literal["roc_auc", "pr_auc", "log_loss", "brier", "ece", "sensitivity_at_specificity"]
# Which way is better, per metric.
MAXIMISE: dict[str, bool] = {
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "brier": False,
    "ece": False,
    "sensitivity_at_specificity": True,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- one parameter ----------------------------------------------------------------------------


class IntParam(_Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("a log-scaled int range takes no step")
        return self

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def bounds(self) -> list[Any]:
        return [self.low, self.high]

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)


class FloatParam(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("a log-scaled float range takes no step")
        return self

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
        )

    def bounds(self) -> list[Any]:
        return [self.low, self.high]

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[str | int | float | bool | None] = Field(min_length=1)

    def contains(self, value: Any) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def bounds(self) -> list[Any]:
        return list(self.choices)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)


def _check_range(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(f"low must be below high; got low={low}, high={high}")
    if log and low <= 0:
        raise ValueError(f"a log-scaled range needs low > 0; got low={low}")


Param = Annotated[IntParam | FloatParam | CategoricalParam, Field(discriminator="type")]
Space = dict[str, Param]


# --- sections -------------------------------------------------------------------------------------


class StudySettings(_Strict):
    """The sampler. TPE with ``n_startup_trials`` random trials first (after the enqueued
    default); each worker process gets its own seed derived from ``seed``."""

    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    n_startup_trials: int = Field(8, ge=0)


class PrunerSettings(_Strict):
    """Pruning on the per-fold reports (the running mean of the primary metric over the folds
    done so far) and the reports inside a fold (image: every epoch; tabular: every
    ``report_every_rounds`` rounds when set). ``median``: stop a trial whose report is below the
    median of earlier trials at the same step, once ``n_startup_trials`` trials finished and
    ``n_warmup_steps`` steps are in. ``hyperband``: successive halving over the steps.
    ``none``: never prune. Pruning is off for multi-objective studies (Optuna does not prune
    those)."""

    kind: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(3, ge=0)
    reduction_factor: int = Field(3, ge=2, description="hyperband only")


def _default_metrics() -> list[Metric]:
    return ["roc_auc"]


class ObjectiveSettings(_Strict):
    """``metrics``: one metric (a single-objective study) or two (multi-objective, e.g.
    ``[roc_auc, ece]``). The first one drives pruning, the choice among Pareto-optimal trials
    and the keep-the-default rule. ``specificity``: the fixed specificity of
    ``sensitivity_at_specificity``."""

    metrics: list[Metric] = Field(default_factory=_default_metrics, min_length=1, max_length=2)
    specificity: float = Field(0.9, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _distinct(self) -> ObjectiveSettings:
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics must differ; got {self.metrics}")
        return self

    @property
    def primary(self) -> str:
        return self.metrics[0]


class CVSettings(_Strict):
    """The objective's inner cross-validation over the DEVELOPMENT patients (the locked test
    part never enters): ``repeats`` × ``folds`` patient-grouped, label-stratified folds, each
    repeat with its own shuffle. Early stopping inside a fold uses a validation part carved from
    that fold's training patients, as in ``deeppcos train``."""

    folds: int = Field(5, ge=2, le=20)
    repeats: int = Field(2, ge=1, le=20)


class SelectionSettings(_Strict):
    """Whether the best trial replaces the config's own parameters (the default).

    The best trial's score is optimistic (it is the maximum of many noisy estimates), so it is
    compared with the default on paired per-fold differences — on ``confirm_repeats`` fresh
    repeats of the folds that the search never saw (0: on the search's own folds):

    * ``paired_se``: keep the tuned parameters only if the mean gain exceeds ``min_gain_se``
      standard errors of the per-fold differences. The default is 2, not 1: repeated folds over
      the same patients are positively correlated (a repeat reshuffles, it does not add women),
      so the nominal standard error of 10 fold differences understates the real one — with
      2 repeats by up to about √2 — and the best trial was chosen on those same patients;
    * ``bootstrap``: only if the 95% bootstrap interval of the mean gain (over folds) is above 0;
    * ``best``: always take the best trial (no protection; for comparison only).
    """

    rule: Literal["paired_se", "bootstrap", "best"] = "paired_se"
    min_gain_se: float = Field(2.0, ge=0.0)
    confirm_repeats: int = Field(2, ge=0, le=20)
    n_boot: int = Field(2000, ge=100)


class BranchTarget(_Strict):
    """A branch's objective folds, keep-the-default rule and space. ``report_every_rounds``
    (tabular only; 0 = off): a trial that stops early also reports its inner validation AUC
    every that many boosting rounds (``optuna_integration.XGBoostPruningCallback``), so the
    pruner can stop it inside a fold, not only between folds."""

    cv: CVSettings = Field(default_factory=CVSettings)
    selection: SelectionSettings = Field(default_factory=SelectionSettings)
    report_every_rounds: int = Field(0, ge=0)
    space: Space


class FusionTarget(_Strict):
    """The fusion is tuned on the branches' out-of-fold outputs (computed once per study), over
    the run config's own folds; ``method`` chooses late or intermediate fusion (intermediate
    needs both branches and is dropped from the choices otherwise) and each method has its own
    space (``late``: LateFusion settings, ``intermediate``: IntermediateFusion settings)."""

    selection: SelectionSettings = Field(
        default_factory=lambda: SelectionSettings(confirm_repeats=0)
    )
    method: CategoricalParam = Field(
        default_factory=lambda: CategoricalParam(
            type="categorical", choices=["late", "intermediate"]
        )
    )
    late: Space = Field(default_factory=dict)
    intermediate: Space = Field(default_factory=dict)

    @model_validator(mode="after")
    def _search_folds_only(self) -> FusionTarget:
        if self.selection.confirm_repeats:
            raise ValueError(
                "fusion.selection.confirm_repeats must be 0: the fusion is scored on the run's "
                "own folds (its inputs are their out-of-fold outputs), so there are no fresh "
                "folds to confirm on"
            )
        unknown = sorted(set(self.method.choices) - {"late", "intermediate"}, key=str)
        if unknown:
            raise ValueError(f"fusion.method: unknown choice(s) {unknown}; use late, intermediate")
        return self


def _tabular_default() -> BranchTarget:
    return BranchTarget(
        space={
            "max_depth": IntParam(type="int", low=2, high=5),
            "learning_rate": FloatParam(type="float", low=0.01, high=0.2, log=True),
            "n_estimators": IntParam(type="int", low=100, high=600, step=50),
            "min_child_weight": FloatParam(type="float", low=0.5, high=10.0, log=True),
            "subsample": FloatParam(type="float", low=0.5, high=1.0),
            "colsample_bytree": FloatParam(type="float", low=0.4, high=1.0),
            "reg_lambda": FloatParam(type="float", low=0.1, high=20.0, log=True),
            "reg_alpha": FloatParam(type="float", low=0.0, high=2.0),
            "early_stopping_rounds": CategoricalParam(type="categorical", choices=[50, None]),
        }
    )


def _image_default() -> BranchTarget:
    return BranchTarget(
        cv=CVSettings(folds=5, repeats=1),
        selection=SelectionSettings(confirm_repeats=0),
        space={
            "backbone": CategoricalParam(type="categorical", choices=["compact"]),
            "learning_rate": FloatParam(type="float", low=1e-4, high=3e-3, log=True),
            "dropout": FloatParam(type="float", low=0.0, high=0.5),
            "unfreeze_fraction": FloatParam(type="float", low=0.0, high=0.5),
            "augment_strength": FloatParam(type="float", low=0.0, high=2.0),
            "image_size": CategoricalParam(type="categorical", choices=[64, 96, 128]),
            "batch_size": CategoricalParam(type="categorical", choices=[16, 32]),
        },
    )


def _fusion_default() -> FusionTarget:
    return FusionTarget(
        late={"C": FloatParam(type="float", low=0.01, high=100.0, log=True)},
        intermediate={
            "n_components": IntParam(type="int", low=2, high=16),
            "max_depth": IntParam(type="int", low=2, high=4),
            "learning_rate": FloatParam(type="float", low=0.02, high=0.1, log=True),
        },
    )


class TuningSettings(_Strict):
    """Everything ``deeppcos tune`` needs besides the run config (see the module notes)."""

    study: StudySettings = Field(default_factory=StudySettings)
    pruner: PrunerSettings = Field(default_factory=PrunerSettings)
    objective: ObjectiveSettings = Field(default_factory=ObjectiveSettings)
    tabular: BranchTarget = Field(default_factory=_tabular_default)
    image: BranchTarget = Field(default_factory=_image_default)
    fusion: FusionTarget = Field(default_factory=_fusion_default)


def load_tuning_settings(path: Path | str | None = None) -> TuningSettings:
    """The settings in ``path`` (a YAML file), or the documented defaults when ``None``.

    Sections left out keep their defaults; a section given replaces the default wholesale (a
    ``space:`` lists every parameter to tune). Raises ConfigError naming the file and key.
    """
    if path is None:
        return TuningSettings()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: tuning settings file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)})")
    try:
        return TuningSettings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid tuning settings: {_problems(exc)}") from exc


SECTIONS = tuple(TuningSettings.model_fields)


def _problems(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(
        f"{prefix}{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}"
        for err in exc.errors()
    )


# --- checks against the run config ---------------------------------------------------------------


def check_space(
    space: Space, base: dict[str, Any], model: type[BaseModel], where: str
) -> dict[str, Any]:
    """Check a space against a parameter model and the run config's own values ``base``.

    Every key must be a field of ``model``; every bound or choice must be a valid value of it
    (validated together with ``base``); the config's own value of every tuned parameter must lie
    in the space (it is always evaluated as the first trial). Returns that default point.
    Raises ConfigError naming ``where`` (e.g. ``tabular.space``) and the key.
    """
    unknown = sorted(set(space) - set(model.model_fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown parameter(s) {unknown}; the {model.__name__} fields are "
            f"{sorted(model.model_fields)}"
        )
    try:
        resolved = model.model_validate(base)
    except ValidationError as exc:
        raise ConfigError(f"the run config's parameters are invalid: {_problems(exc)}") from exc
    for name, param in space.items():
        for value in param.bounds():
            try:
                model.model_validate({**base, name: value})
            except ValidationError as exc:
                raise ConfigError(
                    f"{where}.{name}: {value!r} is not a valid value: {_problems(exc)}"
                ) from exc
    default = {name: getattr(resolved, name) for name in space}
    outside = {k: v for k, v in default.items() if not space[k].contains(v)}
    if outside:
        detail = ", ".join(f"{k}={v!r} (space {space[k].bounds()})" for k, v in outside.items())
        raise ConfigError(
            f"{where}: the run config's own value lies outside the search space for {detail}. "
            "The config's parameters are always tried first and kept unless a tuned trial beats "
            "them beyond the noise, so the space must contain them: widen the space or change "
            "the config"
        )
    return default


def suggest(trial: optuna.Trial, space: Space, prefix: str = "") -> dict[str, Any]:
    """One value per parameter of ``space`` (Optuna names are ``prefix + name``)."""
    return {name: param.suggest(trial, prefix + name) for name, param in space.items()}
