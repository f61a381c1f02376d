"""Objectives: a patient-grouped cross-validated score of one set of parameters.

Only the DEVELOPMENT part of the run config's split is used — the split is made exactly as
``deeppcos train`` makes it (same seed, same duplicate groups), so the locked test part never
enters tuning. Inside it, the objective of a branch is ``repeats`` × ``folds`` grouped,
stratified folds; a model is trained per fold (early stopping on a validation part carved from
that fold's training patients, as in training; a booster is then refit on all of them for the
rounds kept, as ``train`` refits its final one) and scored on the held-out fold. Every trial
uses the same folds and the same per-fold model seeds, so two trials' fold scores are *paired*:
their differences cancel the luck of the fold assignment, which is what the keep-the-default
rule (:mod:`deeppcos.tuning.selection`) needs.

Pruning: after each fold the running mean of the primary metric is reported
(``trial.report(value, step=fold)``) and the trial stops when the pruner says so. The image
branch also reports within a fold, after every epoch (the validation AUC that early stopping
watches, through ``optuna_integration.KerasPruningCallback``): a CNN fold takes minutes, a
booster fold a fraction of a second, so by default a booster trial reports per fold only. With
``tabular.report_every_rounds: N`` a booster fold that stops early also reports the inner
validation AUC every N rounds (``optuna_integration.XGBoostPruningCallback``); not every round:
each report is a storage write and a pruning check, dearer than a boosting round on a few
hundred patients, and the signal is the early-stopping validation part (~70 patients on the
Kaggle table), noisier than the fold scores. It pays where a fold takes long: thousands of
patients, many rounds. A fold with fixed rounds has no validation part, so it reports per
fold only. Steps are laid out so that a step means the same thing in every trial: fold ``k``
owns steps ``k·S … k·S + S − 1`` (image: ``S`` = most epochs a fold can train, plus one;
tabular: most rounds ÷ N, plus one, or 1 without round reports) and its held-out score is
reported at the last of them.

The default trial (the run config's own parameters, enqueued first) is never pruned: it is the
baseline every other trial must beat.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from deeppcos.branches import branch_kind
from deeppcos.config import RunConfig
from deeppcos.data.cohort import Cohort
from deeppcos.data.splits import CohortSplit, make_splits
from deeppcos.evaluation.metrics import POINT_METRICS, point_metrics
from deeppcos.exceptions import ConfigError
from deeppcos.tuning.spaces import (
    MAXIMISE,
    BranchTarget,
    FusionTarget,
    ObjectiveSettings,
    Space,
    check_space,
    suggest,
)

if TYPE_CHECKING:
    import optuna

    from deeppcos.fusion.stage import FusionInputs

Folds = list[tuple[list[str], list[str]]]
# report(step, value, prunable) -> None; raises optuna.TrialPruned to stop the trial
Reporter = Callable[[int, float, bool], None]
DEFAULT_ROLE = "default"
CONFIRM_SEED_OFFSET = 1000  # fresh folds for confirmation: seeds the search never used


# --- the development part -------------------------------------------------------------------


@dataclass
class Development:
    """A run config's cohort and split; only ``split.development_ids`` is ever scored."""

    config: RunConfig
    cohort: Cohort
    split: CohortSplit
    groups: pd.Series | None

    @property
    def labels(self) -> pd.Series:
        return self.cohort.patients.set_index("patient_id")["label"]

    def folds(self, n_folds: int, repeats: int, seed: int) -> Folds:
        """``repeats`` × ``n_folds`` grouped, stratified folds of the development patients."""
        ids = set(self.split.development_ids)
        patients = self.cohort.patients[self.cohort.patients["patient_id"].isin(ids)]
        out: Folds = []
        for r in range(repeats):
            inner = make_splits(
                patients, n_folds=n_folds, test_fraction=0.0, seed=seed + r, groups=self.groups
            )
            out.extend(inner.folds())
        return out


def load_development(config: RunConfig) -> Development:
    """The cohort and the split of ``config``, made exactly as ``deeppcos train`` makes them."""
    from deeppcos.pipeline.training import cohort_for, development_split

    cohort = cohort_for(config)
    split, groups = development_split(config, cohort)
    return Development(config, cohort, split, groups)


# --- metrics --------------------------------------------------------------------------------------


def fold_metrics(y: Any, p: Any, settings: ObjectiveSettings) -> dict[str, float]:
    """The objective's metrics on one held-out fold (rows without a prediction left out)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    keep = ~(np.isnan(y) | np.isnan(p))
    y, p = y[keep].astype(int), p[keep]
    out = {"n": float(len(y)), "positives": float(y.sum())}
    for name in settings.metrics:
        out[name] = metric(name, y, p, settings.specificity)
    return out


def metric(name: str, y: np.ndarray, p: np.ndarray, specificity: float = 0.9) -> float:
    """One metric of P(label = 1); NaN where undefined (e.g. one class only).

    ROC and PR AUC, Brier, ECE and log loss are the evaluation's own
    (``deeppcos.evaluation.metrics.point_metrics``): a trial is scored exactly as the run's
    report will score the model.
    """
    if len(y) == 0:
        return math.nan
    both = 0 < y.sum() < len(y)
    if name in POINT_METRICS:
        if name in ("roc_auc", "pr_auc") and not both:
            return math.nan
        return point_metrics(y, p, (name,))[name]
    if name == "sensitivity_at_specificity":
        return sensitivity_at_specificity(y, p, specificity) if both else math.nan
    raise ConfigError(f"objective.metrics: unknown metric {name!r}; choose from {list(MAXIMISE)}")


def sensitivity_at_specificity(y: np.ndarray, p: np.ndarray, specificity: float) -> float:
    """The sensitivity of the lowest threshold whose specificity is at least ``specificity``.

    A patient is positive when her score is above the ``ceil(specificity · negatives)``-th
    lowest negative score, so at least that many negatives (ties included) fall below.
    """
    negatives = np.sort(p[y == 0])
    k = math.ceil(specificity * len(negatives))
    cut = negatives[k - 1] if k > 0 else -np.inf
    return float(np.mean(p[y == 1] > cut))


def summarise(folds: Sequence[dict[str, float]], metrics: Sequence[str]) -> list[float]:
    """Mean of each metric over the folds where it is defined."""
    out = []
    for name in metrics:
        values = [f[name] for f in folds if not math.isnan(f[name])]
        out.append(float(np.mean(values)) if values else math.nan)
    return out


# --- evaluators ---------------------------------------------------------------------------------


class Evaluator:
    """Scores one set of parameters; subclasses per target. ``params_of(trial)`` suggests them,
    ``score(values, folds, reporter)`` returns per-fold metrics, ``default_points()`` the run
    config's own parameters (as Optuna params) to enqueue first."""

    target: str
    fingerprint: str | None = None  # the cohort's, recorded with the study

    def __init__(self, settings: ObjectiveSettings, seed: int) -> None:
        self.settings = settings
        self.seed = seed

    def params_of(self, trial: optuna.Trial) -> dict[str, Any]:
        raise NotImplementedError

    def default_points(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def search_folds(self) -> Any:
        raise NotImplementedError

    def confirm_folds(self, repeats: int) -> Any:
        raise NotImplementedError

    def score(
        self,
        values: dict[str, Any],
        folds: Any,
        reporter: Reporter | None = None,
        trial: optuna.Trial | None = None,
        prunable: bool = True,
    ) -> list[dict[str, float]]:
        raise NotImplementedError

    def tuned_section(self, values: dict[str, Any]) -> dict[str, Any]:
        """How ``values`` (Optuna params) enter the run config: ``{section: {key: value}}``."""
        raise NotImplementedError


class BranchEvaluator(Evaluator):
    """A branch (tabular or image) cross-validated over repeated inner folds."""

    def __init__(
        self,
        target: str,
        dev: Development,
        spec: BranchTarget,
        settings: ObjectiveSettings,
        seed: int,
        threads: int | None = None,
    ) -> None:
        super().__init__(settings, seed)
        self.target = target
        self.dev = dev
        self.spec = spec
        self.tuning = branch_tuning(target)
        section = getattr(dev.config, target)
        if not section.enabled:
            raise ConfigError(
                f"config {dev.config.name!r}: the {target} branch is disabled "
                f"({target}.enabled: false); enable it or tune another target"
            )
        self.model = branch_kind(target).params_model()
        self.base = dict(section.params)
        if threads is not None and self.tuning.threads_param is not None:
            self.base[self.tuning.threads_param] = threads
        self.default = check_space(spec.space, self.base, self.model, f"{target}.space")
        self.tuning.check(spec)
        self.every = spec.report_every_rounds
        self.stride = self.tuning.stride(self.model, self.base, spec.space, self.every)

    def params_of(self, trial: optuna.Trial) -> dict[str, Any]:
        return suggest(trial, self.spec.space)

    def default_points(self) -> list[dict[str, Any]]:
        return [dict(self.default)]

    def search_folds(self) -> Folds:
        return self.dev.folds(self.spec.cv.folds, self.spec.cv.repeats, self.seed)

    def confirm_folds(self, repeats: int) -> Folds:
        return self.dev.folds(self.spec.cv.folds, repeats, self.seed + CONFIRM_SEED_OFFSET)

    def resolved(self, values: dict[str, Any]) -> Any:
        return self.model.model_validate({**self.base, **values})

    def score(
        self,
        values: dict[str, Any],
        folds: Folds,
        reporter: Reporter | None = None,
        trial: optuna.Trial | None = None,
        prunable: bool = True,
    ) -> list[dict[str, float]]:
        params = self.resolved(values)
        labels = self.dev.labels
        done: list[dict[str, float]] = []
        for k, (train_ids, test_ids) in enumerate(folds):
            start = time.perf_counter()
            branch = self._fitted(params, train_ids, k, trial, prunable)
            p = branch.predict_proba(self.dev.cohort, test_ids)
            scores = fold_metrics(labels.reindex(test_ids), p, self.settings)
            scores["seconds"] = time.perf_counter() - start
            done.append(scores)
            if reporter is not None:
                running = summarise(done, [self.settings.primary])[0]
                reporter(k * self.stride + self.stride - 1, running, prunable)
        return done

    def _fitted(
        self,
        params: Any,
        train_ids: list[str],
        k: int,
        trial: optuna.Trial | None,
        prunable: bool,
    ) -> Any:
        """Fold ``k``'s model, fitted by the branch's tuning strategy (:class:`BranchTuning`);
        in-fold reports, if any, start at the fold's first step."""
        reports = (
            None if trial is None else FoldReports(trial, k * self.stride, self.every, prunable)
        )
        return self.tuning.fit(params, self.dev, train_ids, self.seed + k, reports)

    def tuned_section(self, values: dict[str, Any]) -> dict[str, Any]:
        return {self.target: {"params": dict(values)}}


def _epoch_stride(model: Any, base: dict[str, Any], space: Space) -> int:
    """Most epochs one image fold can train (over the space's bounds), plus one step for the
    fold's held-out score. A compact CNN trained from scratch runs ``max_epochs_compact``
    epochs; any other network ``epochs_head + epochs_finetune``."""
    params = model.model_validate(base)
    backbones = space["backbone"].bounds() if "backbone" in space else [params.backbone]

    def most(key: str) -> int:
        return _most(params, space, key)

    compact_only = set(backbones) == {"compact"} and params.weights is None
    epochs = (
        most("max_epochs_compact")
        if compact_only
        else (most("epochs_head") + most("epochs_finetune"))
    )
    return epochs + 1


def _round_stride(model: Any, base: dict[str, Any], space: Space, every: int) -> int:
    """Steps one booster fold owns: one per ``every`` rounds of the most rounds the space
    allows, plus one for the fold's held-out score; 1 (per-fold reports only) when ``every``
    is 0."""
    if not every:
        return 1
    return _most(model.model_validate(base), space, "n_estimators") // every + 1


def _most(params: Any, space: Space, key: str) -> int:
    """The largest value ``key`` can take: the config's own or the space's upper bound."""
    bounds = space[key].bounds() if key in space else []
    return max([getattr(params, key), *[int(v) for v in bounds]])


def xgboost_pruning_callback(
    trial: optuna.Trial, offset: int, every: int, prunable: bool = True
) -> Any:
    """``optuna_integration.XGBoostPruningCallback`` on the inner validation part's AUC
    (``val-auc``: the tabular branch records it every round, whichever metric it stops on), with
    two changes: it reports every ``every`` rounds only — every report is a storage write and a
    pruning check, dearer than a boosting round on a few hundred patients — at step ``offset``
    plus the reports made so far in this fold; and a trial that must not be pruned (the default)
    still reports but never stops."""
    from optuna_integration import XGBoostPruningCallback

    class _EveryRounds(XGBoostPruningCallback):
        def __init__(self) -> None:
            super().__init__(trial, "val-auc")

        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            done = epoch + 1
            if done % every:
                return False
            step = offset + done // every - 1
            if prunable:
                return bool(super().after_iteration(model, step, evals_log))
            trial.report(float(evals_log["val"]["auc"][-1]), step=step)
            return False

    return _EveryRounds()


def keras_pruning_callback(trial: optuna.Trial, offset: int, prunable: bool = True) -> Any:
    """``optuna_integration.KerasPruningCallback`` (it works with Keras 3: it subclasses
    ``keras.callbacks.Callback`` and reads ``logs``), with two changes: the step is ``offset``
    plus the epochs seen by this callback — Keras restarts its epoch count at every ``fit``,
    and a pretrained backbone trains in two — and a trial that must not be pruned (the
    default) still reports but never stops."""
    from optuna_integration import KerasPruningCallback

    class _OffsetPruning(KerasPruningCallback):
        def __init__(self) -> None:
            super().__init__(trial, "val_auc")
            self.seen = 0

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            step = offset + self.seen
            self.seen += 1
            if prunable:
                super().on_epoch_end(step, logs)
            elif logs and "val_auc" in logs:
                trial.report(float(logs["val_auc"]), step=step)

    return _OffsetPruning()


# --- how each kind of branch is tuned -----------------------------------------------------------


@dataclass(frozen=True)
class FoldReports:
    """Where a fold's in-fold reports go: the trial, the fold's first step (``offset``), the
    rounds between a booster's reports (``every``; 0: none) and whether the trial may be
    pruned (the default trial reports but is never stopped)."""

    trial: optuna.Trial
    offset: int
    every: int
    prunable: bool


@dataclass(frozen=True)
class BranchTuning:
    """How one kind of branch (:mod:`deeppcos.branches`) is tuned, looked up by its name:

    * ``threads_param``: the parameter a worker's thread count goes to (None: the kind takes
      none);
    * ``check(spec)``: raises a ConfigError for tuning settings the kind cannot use;
    * ``stride(model, base, space, every)``: the steps one fold owns (module notes);
    * ``fit(params, dev, train_ids, seed, reports)``: one fold's model, with its in-fold
      reports and pruning when ``reports`` is given.

    A new kind of branch is tuned once it has one :class:`BranchTuning` in ``BRANCH_TUNING``.
    Optuna's integrations and the models load when a fold is fitted, not at lookup.
    """

    name: str
    threads_param: str | None
    check: Callable[[BranchTarget], None]
    stride: Callable[[Any, dict[str, Any], Space, int], int]
    fit: Callable[[Any, Development, list[str], int, FoldReports | None], Any]


def _fit_booster_fold(
    params: Any, dev: Development, train_ids: list[str], seed: int, reports: FoldReports | None
) -> Any:
    """A booster fitted as ``train`` fits its final one (rounds from early stopping, then refit
    on every training patient), so trials that stop early and trials with a fixed number of
    rounds are compared on the models each would deploy. With ``report_every_rounds``, a fold
    that stops early reports its validation AUC every that many rounds (from the fold's offset)
    and stops when the trial should be pruned."""
    from deeppcos.pipeline.training import fit_booster_as_deployed

    callbacks: list[Any] = []
    if reports is not None and reports.every:
        callbacks.append(
            xgboost_pruning_callback(reports.trial, reports.offset, reports.every, reports.prunable)
        )
    return fit_booster_as_deployed(params, dev.cohort, train_ids, dev.groups, seed, callbacks)


def _fit_network_fold(
    params: Any, dev: Development, train_ids: list[str], seed: int, reports: FoldReports | None
) -> Any:
    """A network keeps its inner validation part, as in training (a frozen head trains on all).
    It reports its validation AUC after every epoch (both phases counted on, from the fold's
    offset) and stops when the trial should be pruned."""
    from deeppcos.image.branch import ImageBranch
    from deeppcos.pipeline.training import fit_split

    fit_ids, val_ids = fit_split("image", params, train_ids, dev.labels, dev.groups, seed)
    branch = ImageBranch(params, seed=seed)
    extras: dict[str, Any] = {}
    if reports is not None:
        callback = keras_pruning_callback(reports.trial, reports.offset, reports.prunable)
        extras["callbacks"] = [callback]
    return branch.fit(dev.cohort, fit_ids, val_ids or None, **extras)


def _rounds_allowed(spec: BranchTarget) -> None:
    """A booster may report every so many rounds: nothing to refuse."""


def _no_rounds(spec: BranchTarget) -> None:
    """A network has epochs, not boosting rounds: ``report_every_rounds`` is refused."""
    if spec.report_every_rounds:
        raise ConfigError(
            "image.report_every_rounds: boosting rounds belong to the tabular branch; an "
            "image fold reports after every epoch anyway — remove the key or set it to 0"
        )


def _epoch_steps(model: Any, base: dict[str, Any], space: Space, every: int) -> int:
    return _epoch_stride(model, base, space)  # an epoch is a step: no rounds to count


BRANCH_TUNING: dict[str, BranchTuning] = {
    "tabular": BranchTuning(
        "tabular",
        threads_param="n_jobs",
        check=_rounds_allowed,
        stride=_round_stride,
        fit=_fit_booster_fold,
    ),
    "image": BranchTuning(
        "image",
        threads_param=None,
        check=_no_rounds,
        stride=_epoch_steps,
        fit=_fit_network_fold,
    ),
}


def branch_tuning(name: str) -> BranchTuning:
    """How the branch called ``name`` is tuned; for a name that is no branch, the same
    ConfigError as :func:`deeppcos.branches.branch_kind`."""
    tuning = BRANCH_TUNING.get(name)
    if tuning is None:
        branch_kind(name)  # no such branch: its ConfigError names the branches
        raise ConfigError(f"the {name} branch cannot be tuned; tune one of {sorted(BRANCH_TUNING)}")
    return tuning


class FusionEvaluator(Evaluator):
    """The fusion method and its settings, on the branches' out-of-fold outputs (computed once
    and cached), over the run config's own folds."""

    target = "fusion"

    def __init__(
        self,
        config: RunConfig,
        inputs: FusionInputs,
        spec: FusionTarget,
        settings: ObjectiveSettings,
        seed: int,
    ) -> None:
        from deeppcos.fusion.stage import available_methods

        super().__init__(settings, seed)
        if not config.fusion.enabled:
            raise ConfigError(
                f"config {config.name!r}: fusion.enabled is false; enable it to tune the fusion"
            )
        self.config = config
        self.inputs = inputs
        self.spec = spec
        available = available_methods(inputs)
        self.methods = [m for m in spec.method.choices if m in available]
        if not self.methods:
            raise ConfigError(
                f"fusion.method: none of the choices {spec.method.choices} can run here "
                f"(available: {available}; intermediate fusion needs both branches)"
            )
        self.defaults = {m: self._check(m) for m in self.methods}

    def _check(self, method: str) -> dict[str, Any]:
        from deeppcos.fusion.stage import fusion_method

        space: Space = getattr(self.spec, method)
        base = dict(getattr(self.config.fusion, method))
        make = fusion_method(method).make
        try:
            defaults = make(base, self.seed).get_params()
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"config {self.config.name!r}: fusion.{method}: {exc}") from exc
        unknown = sorted(set(space) - set(defaults))
        if unknown:
            raise ConfigError(
                f"fusion.{method}: unknown parameter(s) {unknown}; choose from {sorted(defaults)}"
            )
        for name, param in space.items():
            for value in param.bounds():
                try:
                    make({**base, name: value}, self.seed)
                except (ConfigError, TypeError, ValueError) as exc:
                    raise ConfigError(f"fusion.{method}.{name}: {value!r}: {exc}") from exc
        point = {name: defaults[name] for name in space}
        outside = {k: v for k, v in point.items() if not space[k].contains(v)}
        if outside:
            raise ConfigError(
                f"fusion.{method}: the run config's own value lies outside the search space "
                f"for {outside}; widen the space so the default is a candidate"
            )
        return point

    def params_of(self, trial: optuna.Trial) -> dict[str, Any]:
        method = trial.suggest_categorical("method", self.methods)
        return {"method": method, **suggest(trial, getattr(self.spec, method), f"{method}.")}

    def default_points(self) -> list[dict[str, Any]]:
        # ``fusion.method: best`` in training keeps the better of the methods: each one's
        # defaults are a default trial, and the better of them is the baseline.
        wanted = self.config.fusion.method
        methods = self.methods if wanted == "best" else [m for m in self.methods if m == wanted]
        return [
            {"method": m, **{f"{m}.{k}": v for k, v in self.defaults[m].items()}}
            for m in methods or self.methods[:1]
        ]

    def search_folds(self) -> None:
        return None

    def confirm_folds(self, repeats: int) -> None:
        return None

    def score(
        self,
        values: dict[str, Any],
        folds: Any,
        reporter: Reporter | None = None,
        trial: optuna.Trial | None = None,
        prunable: bool = True,
    ) -> list[dict[str, float]]:
        from deeppcos.fusion.stage import fusion_oof

        method, params = split_fusion_values(values)
        start = time.perf_counter()
        fused = fusion_oof(self.inputs, method, params, self.seed)
        seconds = time.perf_counter() - start
        labels = self.inputs.labels
        fold_of = self.inputs.folds
        out = []
        for value in sorted(pd.unique(fold_of), key=str):
            rows = fold_of == value
            scores = fold_metrics(labels[rows], fused[rows], self.settings)
            scores["seconds"] = seconds / len(pd.unique(fold_of))
            out.append(scores)
        return out

    def tuned_section(self, values: dict[str, Any]) -> dict[str, Any]:
        method, params = split_fusion_values(values)
        return {"fusion": {"method": method, method: params}}


def split_fusion_values(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``{"method": m, "m.key": v}`` → ``(m, {"key": v})``."""
    method = values["method"]
    prefix = f"{method}."
    return method, {k.removeprefix(prefix): v for k, v in values.items() if k.startswith(prefix)}


# --- the Optuna objective -----------------------------------------------------------------------


class Objective:
    """``objective(trial)``: suggest, score over the search folds with per-fold reports, and
    record the fold metrics, duration, seeds and worker as user attributes."""

    def __init__(self, evaluator: Evaluator, worker: str, sampler_seed: int) -> None:
        self.evaluator = evaluator
        self.worker = worker
        self.sampler_seed = sampler_seed
        self.folds = evaluator.search_folds()

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        import optuna

        start = time.perf_counter()
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("model_seed", self.evaluator.seed)
        trial.set_user_attr("sampler_seed", self.sampler_seed)
        default = trial.user_attrs.get("role") == DEFAULT_ROLE
        single = len(self.evaluator.settings.metrics) == 1
        values = self.evaluator.params_of(trial)

        def report(step: int, value: float, prunable: bool) -> None:
            if not single or math.isnan(value):
                return  # Optuna does not prune multi-objective studies
            trial.report(value, step)
            if prunable and trial.should_prune():
                trial.set_user_attr("duration_s", round(time.perf_counter() - start, 3))
                raise optuna.TrialPruned(f"pruned after step {step}")

        try:
            # A multi-objective trial cannot report (Optuna), so callbacks inside a fold get
            # the trial only when there is a single objective.
            folds = self.evaluator.score(
                values, self.folds, report, trial=trial if single else None,
                prunable=not default and single,
            )
        except optuna.TrialPruned:
            # pruned inside a fold (XGBoost or Keras callback), not by ``report`` above
            if "duration_s" not in trial.user_attrs:
                trial.set_user_attr("duration_s", round(time.perf_counter() - start, 3))
            raise
        trial.set_user_attr("fold_metrics", [_rounded(f) for f in folds])
        trial.set_user_attr("duration_s", round(time.perf_counter() - start, 3))
        result = summarise(folds, self.evaluator.settings.metrics)
        if any(math.isnan(v) for v in result):
            raise ConfigError(
                f"trial {trial.number}: the objective is undefined on every fold "
                f"({self.evaluator.settings.metrics}); are there both classes in each fold?"
            )
        return result[0] if single else result


def _rounded(scores: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if math.isnan(v) else round(float(v), 6)) for k, v in scores.items()}
