"""``deeppcos train``: patient-grouped cross-validation of each branch, then a refit, into a
run folder.

For every fold k of the development part, a branch is trained on the other folds and predicts
fold k, so every development patient gets exactly one *out-of-fold* prediction (and image
embedding) from a model that never saw them: these feed the fusion. Early stopping never looks
at the fold being predicted: it uses an inner validation set carved (grouped, stratified) from
the training folds. After cross-validation each branch is refit on the whole development part
(again with an inner validation set for early stopping) and saved. The locked test part is not
touched here: it is scored once, by evaluation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ValidationError
from sklearn.model_selection import StratifiedGroupKFold

from deeppcos.branches import branch_kind
from deeppcos.config import RunConfig, config_to_dict
from deeppcos.data.cohort import Cohort
from deeppcos.data.configured import apply_label_corrections, cohort_for
from deeppcos.data.report import LoadReport
from deeppcos.data.splits import CohortSplit, make_splits
from deeppcos.evaluation.metrics import binary_metrics
from deeppcos.evaluation.plots import plot_histories
from deeppcos.exceptions import ConfigError, RunError, SchemaError
from deeppcos.fusion.stage import FusionInputs, fusion_method
from deeppcos.runs.csvsafe import refuse_formula_ids, write_csv
from deeppcos.runs.folder import RunWriter
from deeppcos.runs.layout import RunFiles
from deeppcos.runs.records import BinarySummary, BranchRecord, FusionRecord, RunMetrics

if TYPE_CHECKING:
    from deeppcos.audit.checks import DuplicateLinks
    from deeppcos.fusion.intermediate import IntermediateFusion
    from deeppcos.fusion.late import LateFusion

Progress = Callable[[str, int, int], None]
INNER_VALIDATION_FRACTION = 0.15
BRANCHES = ("tabular", "image")


# --- cohort and parameters --------------------------------------------------------------------


# The demo's image branch per mode: sized so that `deeppcos demo` stays quick on 2 cores (the
# README gives each mode's time and image AUC, measured by benchmarks/bench_image_modes.py).
DEMO_IMAGE_PARAMS: dict[str, dict[str, Any]] = {
    "frozen": {
        "backbone": "mobilenet",
        "width": 0.25,
        "weights": "imagenet",
        "mode": "frozen",
        "image_size": 128,
    },
    "finetune": {
        "backbone": "mobilenet",
        "width": 0.25,
        "weights": "imagenet",
        "mode": "finetune",
        "image_size": 96,
        "epochs_head": 4,
        "epochs_finetune": 3,
    },
    "scratch": {"backbone": "compact", "weights": None, "image_size": 96},
}


def demo_image_mode(requested: str | None = None) -> tuple[str, str | None]:
    """The demo's image mode and, when it had to fall back, why: ``frozen`` (the best within the
    demo's time, see DEMO_IMAGE_PARAMS) when the ImageNet file is in the Keras cache or can be
    downloaded, else ``scratch``. A mode asked for explicitly is used as is (and fails loudly
    when its weights are missing)."""
    if requested is not None:
        return requested, None
    from deeppcos.image.backbones import ensure_imagenet_weights
    from deeppcos.image.specs import SPECS

    try:
        ensure_imagenet_weights(SPECS["mobilenet"], DEMO_IMAGE_PARAMS["frozen"]["width"])
    except ConfigError as exc:
        return "scratch", str(exc)
    return "frozen", None


def demo_config(
    out: Path, *, patients: int = 600, seed: int = 0, image_mode: str = "scratch"
) -> RunConfig:
    """The embedded default (``configs/synthetic.yaml`` in code): a synthetic cohort in
    ``out/cohort`` and both branches, sized for a 2-core CPU; the image branch per
    ``image_mode`` (``DEMO_IMAGE_PARAMS``)."""
    from deeppcos.config import BranchConfig, SyntheticSource

    if image_mode not in DEMO_IMAGE_PARAMS:
        raise ConfigError(
            f"image mode must be one of {list(DEMO_IMAGE_PARAMS)}; got {image_mode!r}"
        )
    return RunConfig(
        name="demo",
        description=f"deeppcos demo: synthetic cohort, image ({image_mode}) and tabular "
        "branches, the fusion method chosen on validation, calibrated",
        seed=seed,
        synthetic=SyntheticSource(patients=patients, seed=seed, folder=out / "cohort"),
        image=BranchConfig(params=dict(DEMO_IMAGE_PARAMS[image_mode])),
        base_dir=out,
    )


def resolve_branch_params(config: RunConfig) -> dict[str, Any]:
    """Each enabled branch's parameters, validated by the branch's own model."""
    out: dict[str, Any] = {}
    for name in BRANCHES:
        section = getattr(config, name)
        if not section.enabled:
            continue
        model = branch_kind(name).params_model()
        try:
            out[name] = model.model_validate(section.params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{name}.params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(f"config {config.name!r}: {problems}") from exc
    return out


# --- inner validation ---------------------------------------------------------------------------


def early_stops(name: str, params: Any) -> bool:
    """Whether a branch holds patients out to stop on: a booster set to a fixed number of rounds
    (``early_stopping_rounds: null``) and a frozen-embedding image head train on every training
    patient instead (:data:`deeppcos.branches.BRANCHES`)."""
    return branch_kind(name).early_stops(params)


def fit_split(
    name: str,
    params: Any,
    ids: Sequence[str],
    labels: pd.Series,
    groups: pd.Series | None,
    seed: int,
) -> tuple[list[str], list[str]]:
    """(fit, validation) ids for one model: an inner validation part only when it early-stops."""
    if not early_stops(name, params):
        return list(ids), []
    return inner_validation(ids, labels, groups, seed)


def fit_booster_as_deployed(
    params: Any,
    cohort: Cohort,
    train_ids: Sequence[str],
    groups: pd.Series | None,
    seed: int,
    callbacks: Sequence[Any] = (),
) -> Any:
    """A booster fitted on ``train_ids`` the way ``train`` fits its final one.

    With early stopping the rounds are chosen on an inner validation part, then the booster is
    refit on every training patient for that many rounds (``train`` takes the median over its
    folds, :func:`refit_branch`); with a fixed number of rounds it trains on every patient once.
    Scoring this model, not the early-stopped one that saw four fifths of the patients, is what
    makes a tuning trial's fold score mean what the saved model will do. ``callbacks`` (XGBoost
    training callbacks that watch the validation part) go to the early-stopped fit only: the
    refit and a fit with fixed rounds have no validation part to watch.
    """
    labels = cohort.patients.set_index("patient_id")["label"]
    fit_ids, val_ids = fit_split("tabular", params, train_ids, labels, groups, seed)
    watched = callbacks if val_ids else ()
    branch = branch_kind("tabular").new(params, seed).fit(cohort, fit_ids, val_ids or None, watched)
    if not val_ids:
        return branch
    rounds = params.model_copy(update={"n_estimators": int(branch.n_trees_)})
    return branch_kind("tabular").new(rounds, seed).fit(cohort, list(train_ids), None)


def inner_validation(
    ids: Sequence[str], labels: pd.Series, groups: pd.Series | None, seed: int
) -> tuple[list[str], list[str]]:
    """Split training ids into (fit, early-stopping validation), grouped and stratified."""
    ids = list(ids)
    y = labels.reindex(ids).astype(int).to_numpy()
    g = groups.reindex(ids).astype(str).to_numpy() if groups is not None else np.array(ids)
    n_splits = max(2, round(1 / INNER_VALIDATION_FRACTION))
    if min(np.bincount(y, minlength=2)) < n_splits:
        return ids, []  # too small to hold anything out: train without early stopping
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fit, val = next(iter(splitter.split(ids, y, g)))
    return [ids[i] for i in fit], [ids[i] for i in val]


# --- cross-validation of one branch ---------------------------------------------------------------


@dataclass
class BranchResult:
    oof: pd.Series  # patient_id -> out-of-fold P(label = 1)
    embeddings: pd.DataFrame | None
    histories: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    fold_metrics: list[dict[str, Any]] = field(default_factory=list)
    fold_trees: list[int] = field(default_factory=list)  # boosting rounds kept per fold
    # fold name -> embeddings of every development patient from that fold's image model
    fold_embeddings: dict[str, pd.DataFrame] = field(default_factory=dict)
    design: pd.DataFrame | None = None  # the tabular model's inputs for development patients


def cross_validate_branch(
    name: str,
    params: Any,
    cohort: Cohort,
    split: CohortSplit,
    groups: pd.Series | None,
    seed: int,
    progress: Progress | None = None,
    *,
    embed_all: bool = False,
) -> BranchResult:
    """One branch's out-of-fold predictions over the development part's folds.

    ``embed_all`` (image branch): each fold's model also embeds every development patient, for
    intermediate fusion (see :mod:`deeppcos.fusion.stage`).
    """
    labels = cohort.patients.set_index("patient_id")["label"]
    result = BranchResult(oof=pd.Series(dtype=float), embeddings=None)
    predictions, embeddings = [], []
    folds = split.folds()
    for k, (train_ids, predict_ids) in enumerate(folds):
        if progress:
            progress(f"{name}: fold {k + 1}/{len(folds)}", k, len(folds) + 1)
        fit_ids, val_ids = fit_split(name, params, train_ids, labels, groups, seed + k)
        branch = branch_kind(name).new(params, seed + k)
        fit_progress = branch_kind(name).fit_progress
        if fit_progress is not None and progress:
            step = fit_progress(params)
            stage = f"{name}: fold {k + 1}/{len(folds)}, {step}"
            branch.fit(cohort, fit_ids, val_ids or None, lambda d, t, s=stage: progress(s, d, t))
        else:
            branch.fit(cohort, fit_ids, val_ids or None)
        if branch_kind(name).embeds:  # one pass: probabilities and embeddings
            scored = split.development_ids if embed_all else predict_ids
            p_scored, embedded = branch.predict_patients(cohort, scored)
            probability = p_scored.reindex(predict_ids)
            if embed_all:
                result.fold_embeddings[f"fold{k}"] = embedded
            embeddings.append(embedded.reindex(predict_ids))
        else:
            probability = branch.predict_proba(cohort, predict_ids)
        predictions.append(probability)
        if branch_kind(name).designs and result.design is None:
            result.design = branch.design_matrix(cohort, split.development_ids)
        result.histories.update(_flatten_history(f"fold{k}", getattr(branch, "history_", {})))
        if getattr(branch, "n_trees_", None):
            result.fold_trees.append(int(branch.n_trees_))
        result.fold_metrics.append(
            {"fold": k, **binary_metrics(labels.reindex(predict_ids), probability, n_boot=0)}
        )
    result.oof = pd.concat(predictions).rename(f"p_{name}")
    result.embeddings = pd.concat(embeddings) if embeddings else None
    return result


def fusion_inputs(oof: pd.DataFrame, results: dict[str, BranchResult]) -> FusionInputs:
    """The fusion stage's inputs from the branches' cross-validation results."""
    frame = oof.set_index("patient_id")
    image = results.get("image")
    tabular = results.get("tabular")
    return FusionInputs(
        oof=frame,
        tabular=tabular.design if tabular is not None else None,
        fold_embeddings=(image.fold_embeddings or None) if image is not None else None,
    )


def collect_fusion_inputs(
    config: RunConfig,
    cohort: Cohort,
    split: CohortSplit,
    groups: pd.Series | None = None,
    progress: Progress | None = None,
) -> FusionInputs:
    """Cross-validate every enabled branch once (with per-fold embeddings of every development
    patient) and return what the fusion stage needs: for tuning the fusion without retraining."""
    params = resolve_branch_params(config)
    oof = _oof_frame(cohort, split)
    results = {}
    for name, branch_params in params.items():
        results[name] = cross_validate_branch(
            name, branch_params, cohort, split, groups, config.seed, progress, embed_all=True
        )
        oof[f"p_{name}"] = results[name].oof.reindex(oof["patient_id"]).to_numpy()
    return fusion_inputs(oof, results)


def refit_branch(
    name: str,
    params: Any,
    cohort: Cohort,
    split: CohortSplit,
    groups: pd.Series | None,
    seed: int,
    fold_trees: Sequence[int] = (),
) -> Any:
    """The final model on the whole development part.

    A booster is refit on every development patient for the median number of rounds early
    stopping kept across the folds (holding data out for stopping again would waste a fifth of
    a small cohort); a network keeps an inner validation set for early stopping.
    """
    if fold_trees:
        params = params.model_copy(update={"n_estimators": int(np.median(fold_trees))})
        return branch_kind(name).new(params, seed).fit(cohort, split.development_ids, None)
    labels = cohort.patients.set_index("patient_id")["label"]
    fit_ids, val_ids = fit_split(name, params, split.development_ids, labels, groups, seed)
    return branch_kind(name).new(params, seed).fit(cohort, fit_ids, val_ids or None)


def _flatten_history(prefix: str, history: Any) -> dict[str, dict[str, list[float]]]:
    """Branch histories are {metric: [values]} or nested per phase; plots want flat series."""
    if not isinstance(history, dict):
        return {}
    if all(isinstance(v, list) for v in history.values()):
        return {prefix: {k: [float(x) for x in v] for k, v in history.items()}}
    if set(history) <= {"train", "val"}:  # XGBoost style: {"train": {...}, "val": {...}}
        return {
            prefix: {
                f"{part}_{metric}": [float(x) for x in values]
                for part, series in history.items()
                for metric, values in series.items()
            }
        }
    out: dict[str, dict[str, list[float]]] = {}
    for key, value in history.items():
        out.update(_flatten_history(f"{prefix} {key}", value))
    return out


# --- the whole run ------------------------------------------------------------------------------


@dataclass
class FusionResult:
    """The fitted fusion stage: the kept method's final model, the routes with their
    calibrators, the decision threshold, the development patients' out-of-fold route, score and
    risk (``oof``), and the metrics entry."""

    method: str
    params: dict[str, Any]
    model: Any  # LateFusion or IntermediateFusion
    router: Any  # deeppcos.fusion.routing.Router
    decision: dict[str, Any]
    oof: pd.DataFrame
    metrics: dict[str, Any]

    @property
    def threshold(self) -> float:
        return float(self.decision["threshold"])

    def write(self, writer: RunWriter) -> None:
        self.model.save(writer.folder(RunFiles.FUSION))
        writer.write_json(RunFiles.FUSION_RECORD, {"method": self.method, "params": self.params})
        self.router.save(writer.folder(RunFiles.FUSION))
        writer.write_json(RunFiles.FUSION_DECISION, self.decision)


@dataclass
class SeverityResult:
    """The fitted severity stage: the metrics entry (with ``skipped`` when no head was fitted),
    the development patients' true and out-of-fold grades, the head, its description and every
    patient's grade."""

    metrics: dict[str, Any]
    oof_grades: pd.DataFrame | None = None
    head: Any = None  # OrdinalHead
    info: dict[str, Any] = field(default_factory=dict)
    grades: pd.DataFrame | None = None

    def write(self, writer: RunWriter) -> None:
        if self.head is None:
            return
        self.head.save(writer.folder(RunFiles.SEVERITY))
        writer.write_json(RunFiles.SEVERITY_RECORD, self.info)
        if self.grades is not None:
            writer.write_frame(RunFiles.SEVERITY_GRADES, self.grades)


@dataclass
class FittedRun:
    """Everything ``deeppcos train`` fits, in memory: :func:`fit_run` makes it, :meth:`write`
    (or :meth:`save`) puts it in a run folder, :meth:`predictor` scores with it."""

    config: RunConfig
    cohort_summary: dict[str, Any]
    split: CohortSplit
    load_report: pd.DataFrame
    oof: pd.DataFrame
    metrics: RunMetrics
    branches: dict[str, Any]
    record: dict[str, Any]
    started: float
    label_corrections: pd.DataFrame | None = None
    oof_embeddings: pd.DataFrame | None = None
    histories: dict[str, dict[str, Any]] = field(default_factory=dict)
    fusion: FusionResult | None = None
    severity: SeverityResult | None = None

    def save(self, out: Path | str, *, overwrite: bool = False) -> Path:
        """Write the run folder ``out`` (atomically: :class:`~deeppcos.runs.folder.RunWriter`)."""
        writer = RunWriter(out, overwrite=overwrite)
        writer.started = self.started  # the run's time is its fitting's, not the writing's
        return self.write(writer)

    def write(self, writer: RunWriter) -> Path:
        """Every run file through ``writer``, then the completion record; the run's folder."""
        writer.write_yaml(RunFiles.CONFIG, config_to_dict(self.config))
        writer.write_json(RunFiles.COHORT, self.cohort_summary)
        self.split.save(writer.path(RunFiles.SPLIT))
        write_csv(self.load_report, writer.path(RunFiles.LOAD_REPORT), index=False)
        if self.label_corrections is not None:
            writer.write_frame(RunFiles.LABEL_CORRECTIONS, self.label_corrections)
        for name, branch in self.branches.items():
            if branch_kind(name).embeds and self.oof_embeddings is not None:
                writer.write_frame(RunFiles.OOF_EMBEDDINGS, self.oof_embeddings)
            _write_curves(writer, name, self.histories.get(name, {}))
            branch.save(writer.folder(name))
        if self.fusion is not None:
            self.fusion.write(writer)
        if self.severity is not None:
            self.severity.write(writer)
        writer.write_frame(RunFiles.OOF_PREDICTIONS, self.oof)
        writer.write_json(RunFiles.METRICS, self.metrics.to_json())
        return writer.finish(self.record)

    def predictor(self, run: Path | None = None) -> Any:
        """A :class:`~deeppcos.inference.predictor.Predictor` over these models, without a run
        folder (``run``: the folder it was saved to, when it was)."""
        from deeppcos.inference.predictor import Predictor

        if self.fusion is None:
            raise RunError("no fusion stage was fitted (fusion.enabled is false): nothing scores")
        predictor = Predictor(
            run=run,
            config=self.config,
            record=self.record,
            branches=dict(self.branches),
            fusion=self.fusion.model,
            fusion_method=self.fusion.method,
            router=self.fusion.router,
            threshold=self.fusion.threshold,
            metrics=self.metrics,
            cohort_summary=self.cohort_summary,
            split_assignments={str(k): str(v) for k, v in self.split.assignments.items()},
        )
        if self.severity is not None and self.severity.head is not None:
            predictor.severity = self.severity.head
            predictor.severity_info = self.severity.info
        return predictor


def train(
    config: RunConfig,
    out: Path | str,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    label_corrections: pd.Series | None = None,
) -> Path:
    """Train every enabled branch with grouped CV, refit, fuse, grade, and write the run folder:
    :func:`fit_run`, then :meth:`FittedRun.write`.

    ``label_corrections`` (patient_id → 0/1, opt-in, e.g. from reviewers' feedback logs)
    replace those patients' labels before the split; the run records every change.
    """
    resolve_branch_params(config)  # a bad setting fails before the cohort is read
    cohort = cohort_for(config, lambda d, t: progress and progress("cohort", d, t))
    # Opened before fitting: an existing run without --overwrite fails now, not after training.
    writer = RunWriter(out, overwrite=overwrite)
    fitted = fit_run(config, cohort, progress=progress, label_corrections=label_corrections)
    return fitted.write(writer)


def fit_run(
    config: RunConfig,
    cohort: Cohort,
    *,
    progress: Progress | None = None,
    label_corrections: pd.Series | None = None,
) -> FittedRun:
    """Everything ``train`` fits, in memory and without a run folder: the split, each branch's
    cross-validation and refit, the fusion stage (routes, calibration, threshold) and the
    severity head, with the metrics ``metrics.json`` records."""
    started = time.time()
    params = resolve_branch_params(config)
    # Run files are joined back on ids (corrections, grades, reviewers' feedback), so an id a
    # spreadsheet would run as a formula is refused here rather than quoted in every file.
    refuse_formula_ids(cohort.patients["patient_id"], f"cohort {cohort.spec.name!r}")
    source_fingerprint = cohort.fingerprint()  # of the data as loaded, before any correction
    corrected = apply_label_corrections(cohort, label_corrections)
    split, groups = development_split(config, cohort, progress)
    report = _with_label_noise(cohort.report, split)
    summary = {**cohort.summary(), "report": report.counts()}
    load_report = report.to_frame()
    oof = _oof_frame(cohort, split)
    details: dict[str, Any] = {}
    if split.label_noise:
        details["label_noise"] = _label_noise_summary(split)
    corrections = None
    if corrected is not None:
        assert label_corrections is not None  # corrections are only reported when given
        details["label_corrections"] = corrected
        corrections = label_corrections.rename("label").rename_axis("patient_id").reset_index()
    embed_all = _wants_intermediate(config, list(params))
    results: dict[str, BranchResult] = {}
    branch_records: dict[str, BranchRecord] = {}
    finals: dict[str, Any] = {}
    oof_embeddings = None
    for name, branch_params in params.items():
        result = cross_validate_branch(
            name, branch_params, cohort, split, groups, config.seed, progress, embed_all=embed_all
        )
        results[name] = result
        oof[f"p_{name}"] = result.oof.reindex(oof["patient_id"]).to_numpy()
        if result.embeddings is not None:
            oof_embeddings = result.embeddings.reset_index()
        if progress:
            progress(f"{name}: refit", config.split.n_folds, config.split.n_folds + 1)
        finals[name] = refit_branch(
            name, branch_params, cohort, split, groups, config.seed, result.fold_trees
        )
        branch_records[name] = BranchRecord(
            oof=BinarySummary.from_json(
                binary_metrics(oof["label"], oof[f"p_{name}"], seed=config.seed)
            ),
            folds=[BinarySummary.from_json(f) for f in result.fold_metrics],
            params=branch_params.model_dump(mode="json"),
            refit={
                "patients": len(split.development_ids),
                "rounds": getattr(finals[name], "n_trees_", None),
            },
        )
    inputs = fusion_inputs(oof, results)
    stage = _FinalModels(cohort, split.development_ids, finals)
    fusion = severity = None
    if config.fusion.enabled:
        if progress:
            progress("fusion", 0, 1)
        fusion = fuse(inputs, config, stage)
        oof = oof.join(fusion.oof, on="patient_id")
    if config.severity.enabled and fusion is not None:
        if progress:
            progress("severity", 0, 1)
        severity = grade(inputs, config, cohort, fusion.oof, fusion.threshold)
        if severity.oof_grades is not None:
            oof = oof.join(severity.oof_grades, on="patient_id")
    severity_metrics = _severity_entry(config, severity)
    metrics = RunMetrics(
        label_name=cohort.spec.label_name,
        pcos=cohort.spec.is_pcos,
        image_modality=cohort.spec.modality,
        seed=config.seed,
        development_patients=len(oof),
        test_patients=len(split.test_ids),
        branches=branch_records,
        fusion=FusionRecord.from_json(fusion.metrics) if fusion is not None else None,
        severity=severity_metrics,
        details=details,
    )
    record = {
        "name": config.name,
        "description": config.description,
        "cohort": cohort.spec.name,
        "cohort_fingerprint": source_fingerprint,
        "branches": list(params),
        "fusion_method": fusion.method if fusion is not None else None,
        "severity": severity_metrics is not None and "skipped" not in severity_metrics,
        "seed": config.seed,
    }
    return FittedRun(
        config=config,
        cohort_summary=summary,
        split=split,
        load_report=load_report,
        oof=oof,
        metrics=metrics,
        branches=finals,
        record=record,
        started=started,
        label_corrections=corrections,
        oof_embeddings=oof_embeddings,
        histories={name: result.histories for name, result in results.items()},
        fusion=fusion,
        severity=severity,
    )


def _severity_entry(config: RunConfig, severity: SeverityResult | None) -> dict[str, Any] | None:
    """What ``metrics.json`` says of severity: the head's figures, why none was fitted, or
    nothing when grading is off."""
    if severity is not None:
        return severity.metrics
    if config.severity.enabled:
        return {
            "skipped": "the severity grade is conditional on the presence decision; enable the "
            "fusion stage"
        }
    return None


def _wants_intermediate(config: RunConfig, branches: list[str]) -> bool:
    """Whether the fusion may run a method that needs embeddings: the configured one does, or
    ``best`` may choose one that does (every registered method is a candidate)."""
    from deeppcos.fusion.stage import FUSION_METHODS

    method = config.fusion.method
    candidates = FUSION_METHODS.values() if method == "best" else [fusion_method(method)]
    return (
        config.fusion.enabled
        and any(candidate.needs_embeddings for candidate in candidates)
        and set(branches) == set(BRANCHES)
    )


@dataclass
class _FinalModels:
    """The refit branches and the development ids, for fitting the final fusion model."""

    cohort: Cohort
    development_ids: list[str]
    branches: dict[str, Any]

    def tabular(self) -> pd.DataFrame:
        return self.branches["tabular"].design_matrix(self.cohort, self.development_ids)

    def embeddings(self) -> pd.DataFrame:
        return self.branches["image"].transform(self.cohort, self.development_ids)


# --- fusion -------------------------------------------------------------------------------------


def fusion_methods(config: RunConfig, inputs: FusionInputs) -> list[str]:
    """The methods to cross-validate: the one the config names, or every available one."""
    from deeppcos.fusion.stage import available_methods

    available = available_methods(inputs)
    if config.fusion.method == "best":
        return available
    if config.fusion.method not in available:
        raise ConfigError(
            f"config {config.name!r}: fusion.method {config.fusion.method!r} needs both the "
            "tabular and the image branch; use 'late' or 'best'"
        )
    return [config.fusion.method]


def fuse(inputs: FusionInputs, config: RunConfig, final: _FinalModels) -> FusionResult:
    """Cross-validate the fusion method(s), keep the best on validation, calibrate every route,
    choose the decision threshold, and fit the final fusion model.

    The fusion scores the patients who have every modality (the full route); a patient missing
    one is scored by the other branch alone (:mod:`deeppcos.fusion.routing`). Each method's
    out-of-fold predictions come from :func:`deeppcos.fusion.stage.fusion_oof` (late fusion: a
    second level of cross-validation over the same folds; intermediate fusion: each fold's image
    model embeds every patient). Each route's calibrator is fitted on that route's out-of-fold
    scores, and the threshold on the pooled out-of-fold calibrated risks.

    The result's ``oof`` holds per development patient (rows of ``inputs.oof``): ``route``,
    ``p_fusion`` (the route's uncalibrated score) and ``risk`` (calibrated).
    """
    from deeppcos.evaluation.metrics import classification_metrics, threshold_for_sensitivity
    from deeppcos.fusion.routing import Router, missingness_report
    from deeppcos.fusion.stage import fusion_oof

    y = inputs.labels
    complete = inputs.complete
    candidates = {
        method: fusion_oof(inputs, method, _method_params(config, method), config.seed)
        for method in fusion_methods(config, inputs)
    }
    scores = {m: binary_metrics(y, p, seed=config.seed) for m, p in candidates.items()}
    # Ties go to late fusion, the simpler model (listed first).
    chosen = max(candidates, key=lambda m: scores[m]["roc_auc"] or 0.0)
    branch_oof = inputs.oof[[f"p_{b}" for b in inputs.branches]]
    router = Router.fit(branch_oof, candidates[chosen], y, inputs.branches, seed=config.seed)
    routes = router.route(branch_oof)
    probability = router.score(branch_oof, candidates[chosen], routes)
    risk = router.calibrate(probability, routes)
    scored = ~np.isnan(risk) & ~np.isnan(y)
    threshold = threshold_for_sensitivity(
        y[scored], risk[scored], target=config.fusion.target_sensitivity
    )
    model = _fit_final_fusion(inputs, config, chosen, final)
    decision = {
        "threshold": threshold,
        "target_sensitivity": config.fusion.target_sensitivity,
        "chosen_on": "out-of-fold development predictions, every route pooled",
    }
    full = router.full
    oof = pd.DataFrame(
        {"route": routes, "p_fusion": probability, "risk": risk}, index=inputs.oof.index
    )
    metrics = {
        "method": chosen,
        "chosen_by": "highest out-of-fold ROC AUC on the development folds, over the patients "
        "with every modality (ties: late)",
        "methods": {m: {"oof_uncalibrated": scores[m]} for m in candidates},
        "oof": binary_metrics(y, risk, seed=config.seed),
        "oof_uncalibrated": scores[chosen],
        "oof_at_threshold": classification_metrics(
            y[scored], risk[scored], threshold, seed=config.seed
        ),
        "calibration": {
            "method": router.routes[full].calibrator.method,
            "selection": router.routes[full].calibrator.selection_,
        },
        "routes": _route_metrics(router, routes, y, risk, chosen, config.seed),
        "fusion_patients": int(complete.sum()),
        "missing_modalities": missingness_report(y, branch_oof, inputs.branches),
        "decision": decision,
    }
    params = _method_params(config, chosen)
    return FusionResult(chosen, params, model, router, decision, oof, metrics)


def _route_metrics(
    router: Any, routes: np.ndarray, y: np.ndarray, risk: np.ndarray, method: str, seed: int
) -> dict[str, Any]:
    """Per route: what scores it, its calibration, and the out-of-fold figures of its own
    patients (the development patients who took that route)."""
    out = {}
    for route, model in router.routes.items():
        rows = routes == route
        out[route] = {
            "scored_by": router.describe(route, method),
            "patients": int(rows.sum()),
            "calibration": model.calibrator.method,
            "calibrated_on": {"n": model.n, "positives": model.positives},
            "oof": binary_metrics(y[rows], risk[rows], seed=seed) if rows.any() else None,
        }
    return out


def _method_params(config: RunConfig, method: str) -> dict[str, Any]:
    fusion_method(method)  # a ConfigError for a method that is not registered
    return dict(getattr(config.fusion, method))


def _fit_final_fusion(
    inputs: FusionInputs, config: RunConfig, method: str, final: _FinalModels
) -> LateFusion | IntermediateFusion:
    y = inputs.labels
    kind = fusion_method(method)
    model = kind.make(_method_params(config, method), config.seed)
    if not kind.needs_embeddings:
        frame = inputs.oof[[f"p_{b}" for b in inputs.branches]]
        return model.fit(frame, y)  # it fits on the patients with every modality
    # The final image model embeds every development patient, as each fold model did inside
    # cross-validation (deeppcos.fusion.stage): the procedure scored is the one kept.
    complete = inputs.oof.index[inputs.complete]
    tabular = final.tabular().reindex(complete)
    embeddings = final.embeddings().reindex(complete)
    return model.fit(tabular, embeddings, y[inputs.complete])


# --- severity -----------------------------------------------------------------------------------


def grade(
    inputs: FusionInputs,
    config: RunConfig,
    cohort: Cohort,
    presence: pd.DataFrame,
    threshold: float,
) -> SeverityResult:
    """Cross-validate and fit the severity head (grade given PCOS) on the development patients,
    and grade them out of fold together with the presence decision.

    ``presence``: the fusion stage's out-of-fold ``risk`` per development patient (rows of
    ``inputs.oof``); ``threshold``: the decision threshold. The result holds the metrics entry
    and, per development patient, the true grade and the out-of-fold grade (no head and no
    grades when skipped).
    """
    from deeppcos.evaluation.metrics import ordinal_metrics
    from deeppcos.fusion.grading import (
        cross_val_severity,
        grades_given_pcos,
        label_grade_conflicts,
        new_head,
        severity_inputs,
        severity_targets,
        with_no_disease_level,
    )
    from deeppcos.inference.predictor import severity_columns

    section = config.severity
    targets = severity_targets(cohort, section.source, section.guideline)
    if targets is None:
        if not cohort.spec.is_pcos:
            return SeverityResult(
                {
                    "skipped": f"the cohort has no severity grades, and grades by PCOS "
                    f"phenotype apply to a PCOS cohort only (the label here is "
                    f"{cohort.spec.label_name!r}); give a severity_column in the spec to grade"
                }
            )
        return SeverityResult(
            {
                "skipped": "the cohort has no severity grades; set severity.source: criteria "
                "to derive them from the Rotterdam criteria"
            }
        )
    index = inputs.oof.index
    labels = inputs.oof["label"]
    graded = targets.grades.reindex(index).dropna()
    if graded.nunique() < 2:
        return SeverityResult(
            {
                **targets.describe(),
                "skipped": f"fewer than 2 distinct grades among {len(graded)} graded "
                "development patients",
            }
        )
    targets = with_no_disease_level(targets, labels)
    p_image = inputs.oof.get("p_image")
    x = severity_inputs(inputs.tabular, p_image, targets.excluded_inputs, index)
    grades = targets.grades.reindex(index)
    given = grades_given_pcos(grades, labels, targets.levels)
    if given.nunique() < 2:
        return SeverityResult(
            {
                **targets.describe(),
                "skipped": f"fewer than 2 distinct PCOS grades among the "
                f"{int(given.notna().sum())} development patients labelled PCOS",
            }
        )
    params = dict(section.params)
    pcos_levels = targets.levels[1:]
    try:
        given_oof = cross_val_severity(
            x, given, inputs.folds, pcos_levels, section.kind, params, config.seed
        )
    except SchemaError as exc:  # e.g. a training fold without any PCOS-graded patient
        skipped = f"severity head not cross-validated: {exc}"
        return SeverityResult({**targets.describe(), "skipped": skipped})
    risk = presence["risk"].reindex(index).to_numpy(dtype="float64")
    decision = pd.array([pd.NA if np.isnan(r) else r >= threshold for r in risk], dtype="boolean")
    combined = severity_columns(given_oof, risk, decision, targets.levels, pcos_levels)
    oof_grades = pd.DataFrame(
        {"severity": grades.array, "severity_oof": combined["severity"].array}, index=index
    )
    head = new_head(section.kind, params, config.seed).fit(x, given, levels=pcos_levels)
    info = {
        **targets.describe(),
        "kind": section.kind,
        "params": params,
        "inputs": list(x.columns),
        "head": "grade given PCOS",
        "head_levels": pcos_levels,
        "head_patients": int(given.notna().sum()),
        "label_grade_conflicts": label_grade_conflicts(grades, labels, targets.levels),
    }
    every = targets.grades.rename("severity").reset_index()
    graded = grades.notna() & oof_grades["severity_oof"].notna()
    metrics = ordinal_metrics(
        oof_grades.loc[graded, "severity"],
        oof_grades.loc[graded, "severity_oof"],
        len(targets.levels),
        seed=config.seed,
    )
    entry = {
        **info,
        "oof": metrics,
        "oof_given_pcos": _given_pcos_metrics(given, given_oof, pcos_levels, config.seed),
        "presence_agreement": presence_agreement(combined["severity"], decision, targets.levels),
    }
    return SeverityResult(entry, oof_grades, head, info, every)


def _given_pcos_metrics(
    given: pd.Series, probabilities: np.ndarray, levels: list[str], seed: int
) -> dict[str, Any]:
    """The head's own figures: its most probable grade against the true grade, over the
    patients labelled PCOS with a PCOS grade."""
    from deeppcos.evaluation.metrics import ordinal_metrics

    rows = given.notna().to_numpy()
    dtype = pd.CategoricalDtype(levels, ordered=True)
    predicted = pd.Categorical.from_codes(probabilities[rows].argmax(axis=1), dtype=dtype)
    return ordinal_metrics(
        given[rows].reset_index(drop=True), pd.Series(predicted), len(levels), seed=seed
    )


def presence_agreement(grades: Any, decision: Any, levels: list[str]) -> dict[str, Any]:
    """Cross-table of the presence decision and the reported grade; by construction a flagged
    patient never has the lowest grade and an unflagged one never another."""
    frame = pd.DataFrame(
        {
            "decision": pd.array(decision, dtype="boolean"),
            "grade": pd.Categorical(grades, categories=levels, ordered=True),
        }
    ).dropna()
    table = pd.crosstab(frame["decision"], frame["grade"]).reindex(
        index=[False, True], columns=levels, fill_value=0
    )
    lowest = levels[0]
    return {
        "table": {
            ("flagged" if flagged else "not flagged"): {str(g): int(n) for g, n in row.items()}
            for flagged, row in table.iterrows()
        },
        "contradictions": int(table.loc[True, lowest] + table.loc[False].drop(lowest).sum()),
    }


def development_split(
    config: RunConfig, cohort: Cohort, progress: Progress | None = None
) -> tuple[CohortSplit, pd.Series | None]:
    """The split ``deeppcos train`` makes for ``config`` (folds and locked test part) and the
    duplicate-image groups it kept together; tuning uses it so it never sees the test part.
    With ``split.label_noise: exclude`` the groups whose near-copies' labels ignore the picture
    go to the ``label_noise`` part, each with its figures in ``split.label_noise``."""
    links = _duplicate_links(config, cohort, progress)
    groups = links.groups if links is not None and config.split.group_duplicates else None
    noise = _label_noise(config, cohort, links)
    split = make_splits(
        cohort.patients,
        n_folds=config.split.n_folds,
        test_fraction=config.split.test_fraction,
        seed=config.split_seed,
        groups=groups,
        set_aside=[p for record in noise for p in record["patient_ids"]],
    )
    return dataclasses.replace(split, label_noise=noise), groups


def _duplicate_links(
    config: RunConfig, cohort: Cohort, progress: Progress | None
) -> DuplicateLinks | None:
    wanted = config.split.group_duplicates or config.split.label_noise == "exclude"
    if not (wanted and len(cohort.images)):
        return None
    from deeppcos.audit.checks import duplicate_links

    return duplicate_links(
        cohort,
        near_duplicate_threshold=config.split.near_duplicate_bits,
        progress=lambda d, t: progress and progress("duplicate check", d, t),
    )


def _label_noise(
    config: RunConfig, cohort: Cohort, links: DuplicateLinks | None
) -> list[dict[str, Any]]:
    """The groups the config sets aside as label noise (``split.label_noise: exclude``)."""
    if config.split.label_noise != "exclude" or links is None:
        return []
    from deeppcos.audit.label_noise import label_noise_records

    labels = cohort.patients.set_index(cohort.patients["patient_id"].astype(str))["label"]
    return label_noise_records(links.pairs, links.image_patients, links.groups, labels)


def _with_label_noise(report: LoadReport, split: CohortSplit) -> LoadReport:
    """The cohort's load report and one entry per patient the split set aside as label noise
    (a copy: the cohort's own report is left as loaded)."""
    out = LoadReport(list(report.entries))
    for record in split.label_noise:
        message = (
            f"set aside by the split (split.label_noise: exclude), neither trained on nor "
            f"evaluated: duplicate group {record['group']} of {record['patients']} patients, "
            f"whose near-copies carry opposite labels in {record['labels_differ']:.0%} of "
            f"{record['near_copy_pairs']} pairs ({record['differ_by_chance']:.0%} by chance; "
            f"label consistency {record['label_consistency']:.2f})"
        )
        for patient in record["patient_ids"]:
            out.add("excluded", "label_noise", message, row=patient, column="label")
    return out


def _label_noise_summary(split: CohortSplit) -> dict[str, Any]:
    """What ``metrics.json`` records of the groups set aside (their patients are in
    ``split.json`` and the load report)."""
    return {
        "rule": "split.label_noise: exclude",
        "patients_set_aside": len(split.set_aside_ids),
        "groups": [
            {k: v for k, v in record.items() if k != "patient_ids"} for record in split.label_noise
        ],
    }


def _oof_frame(cohort: Cohort, split: CohortSplit) -> pd.DataFrame:
    ids = split.development_ids
    labels = cohort.patients.set_index("patient_id")["label"]
    return pd.DataFrame(
        {
            "patient_id": ids,
            "fold": split.assignments.reindex(ids).to_numpy(),
            "label": labels.reindex(ids).astype("Int8").to_numpy(),
        }
    )


def _write_curves(writer: RunWriter, name: str, histories: dict[str, Any]) -> None:
    if not histories:
        return
    curve = writer.write_json(RunFiles.curve(name), histories)
    plot_histories(histories, curve.with_suffix(".png"), f"{name} branch training curves")
