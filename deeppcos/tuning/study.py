"""``deeppcos tune``: create or resume a study, run its workers, decide, write the tuned config.

One study per target, named ``<config name>-<target>`` unless ``--study`` says otherwise
(``--target all`` runs ``<name>-tabular``, ``<name>-image`` and ``<name>-fusion`` in turn, each
starting from the previous one's tuned config). A study's folder — beside a journal or SQLite
file, else ``runs/tuning/`` — gets ``<study>/tuned.yaml`` (the tuned config),
``<study>/summary.json`` (decision, best trial, counts) and, for the fusion, the cached branch
outputs. ``--trials N`` is the study's total of finished trials: a resumed study runs only the
missing ones.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from deeppcos._version import __version__
from deeppcos.branches import BRANCHES
from deeppcos.config import RunConfig, config_to_dict, load_config
from deeppcos.exceptions import ConfigError
from deeppcos.tuning.evaluators import build_evaluator
from deeppcos.tuning.objective import DEFAULT_ROLE, Evaluator
from deeppcos.tuning.selection import Decision, decide, tuned_config
from deeppcos.tuning.spaces import MAXIMISE, TARGETS, TuningSettings
from deeppcos.tuning.storage import (
    DEFAULT_FOLDER,
    default_storage,
    fail_stale_trials,
    journal_path,
    open_storage,
    redact,
    storage_kind,
)
from deeppcos.tuning.workers import Job, finished, run_processes, run_worker

if TYPE_CHECKING:
    import optuna


Progress = Callable[[str, int, int], None]
TUNED_FILE = "tuned.yaml"
SUMMARY_FILE = "summary.json"
CACHE_FOLDER = "fusion-inputs"


@dataclass
class TuneResult:
    """One target's outcome."""

    target: str
    study: str
    storage: str
    folder: Path
    tuned_config: Path
    decision: Decision
    trials: dict[str, int]
    seconds: float
    run: Path | None = None
    stale_failed: list[int] = field(default_factory=list)


# --- the objective of a job -----------------------------------------------------------------------


# --- creating and resuming a study ----------------------------------------------------------------


def study_identity(job: Job, settings: TuningSettings, evaluator: Evaluator) -> dict[str, Any]:
    """What defines a study's objective; a resumed study must match it."""
    config = load_config(job.config)
    data = config_to_dict(config)
    search = getattr(settings, job.target).model_dump(mode="json")
    if not search.get("report_every_rounds"):
        # off, the setting changes nothing: studies made before it existed still resume
        search.pop("report_every_rounds", None)
    return {
        "target": job.target,
        "objective": settings.objective.model_dump(mode="json"),
        "search": search,
        "seed": settings.study.seed,
        "split": data.get("split"),
        "base": data.get(job.target) if job.target != "fusion" else data.get("fusion"),
        "branches": {k: data.get(k) for k in BRANCHES},
        "cohort": evaluator.fingerprint,
    }


def open_study(
    job: Job,
    settings: TuningSettings,
    evaluator: Evaluator,
    resume: bool,
) -> tuple[optuna.Study, list[int]]:
    """Create the study (enqueuing the default first) or resume it; returns the study and the
    numbers of stale RUNNING trials marked FAIL."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(job.storage)
    names = optuna.get_all_study_names(storage)
    identity = study_identity(job, settings, evaluator)
    where = redact(job.storage)
    if job.study in names and not resume:
        raise ConfigError(
            f"study {job.study!r} already exists in {where}; use --resume to continue it, or "
            "--study NAME to start another"
        )
    if job.study not in names and resume:
        raise ConfigError(
            f"--resume: no study {job.study!r} in {where} (studies there: {sorted(names)}); "
            "leave out --resume to start it"
        )
    if job.study in names:
        study = optuna.load_study(study_name=job.study, storage=storage)
        _check_identity(study, identity)
        stale = fail_stale_trials(study)
    else:
        directions: list[Literal["maximize", "minimize"]] = [
            "maximize" if MAXIMISE[m] else "minimize" for m in settings.objective.metrics
        ]
        study = optuna.create_study(study_name=job.study, storage=storage, directions=directions)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(settings.objective.metrics))
        study.set_user_attr("deeppcos", identity)
        study.set_user_attr("deeppcos_version", __version__)
        study.set_user_attr("config", str(Path(job.config).resolve()))
        stale = []
    _enqueue_defaults(study, evaluator)
    return study, stale


def _check_identity(study: optuna.Study, identity: dict[str, Any]) -> None:
    stored = study.user_attrs.get("deeppcos")
    if stored is None:
        raise ConfigError(
            f"study {study.study_name!r} was not created by deeppcos tune; choose another --study"
        )
    changed = sorted(
        k
        for k in identity
        if json.dumps(stored.get(k), sort_keys=True) != json.dumps(identity[k], sort_keys=True)
    )
    if changed:
        raise ConfigError(
            f"--resume: study {study.study_name!r} was created with other settings ({changed} "
            "differ: target, objective, search space and cv, seed, split, branch parameters or "
            "cohort); its trials would not be comparable. Resume with the same config and "
            "settings, or start a new --study"
        )


def _enqueue_defaults(study: optuna.Study, evaluator: Evaluator) -> None:
    """Enqueue the run config's own parameters unless a default trial is waiting, running or
    complete (a failed or lost one is enqueued again)."""
    from optuna.trial import TrialState

    alive = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
    present = [
        t.system_attrs.get("fixed_params") or t.params
        for t in study.get_trials(deepcopy=False, states=alive)
        if t.user_attrs.get("role") == DEFAULT_ROLE
    ]
    for point in evaluator.default_points():
        if not any(_same(point, p) for p in present):
            study.enqueue_trial(point, user_attrs={"role": DEFAULT_ROLE})


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        abs(a[k] - b[k]) <= 1e-12 * max(1.0, abs(a[k]))
        if isinstance(a[k], float) and isinstance(b[k], int | float)
        else a[k] == b[k]
        for k in a
    )


# --- one target, then all -------------------------------------------------------------------------


def study_folder(storage: str, study: str) -> Path:
    """Beside the journal or SQLite file; ``runs/tuning/`` for database servers."""
    kind = storage_kind(storage)
    if kind == "journal":
        return journal_path(storage).parent / study
    if kind == "sqlite":
        return Path(storage.split("///", 1)[-1]).expanduser().parent / study
    return DEFAULT_FOLDER / study


def tune_target(
    job: Job,
    *,
    workers: int = 1,
    resume: bool = False,
    train: bool = False,
    progress: Progress | None = None,
) -> TuneResult:
    """Run (or resume) one target's study to ``job.trials`` finished trials, decide, and write
    the tuned config (and, with ``train``, a run from it)."""
    import optuna

    if job.target not in TARGETS:
        raise ConfigError(f"--target {job.target!r}: choose one of {[*TARGETS, 'all']}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1; got {workers}")
    start = time.perf_counter()
    folder = study_folder(job.storage, job.study)
    if job.target == "fusion" and job.cache is None:
        job.cache = str(folder / CACHE_FOLDER)
    if workers > 1 and job.threads is None:
        job.threads = 1
    evaluator, settings = build_evaluator(job, progress)
    study, stale = open_study(job, settings, evaluator, resume)
    if workers == 1:
        run_worker(job, 0, evaluator, settings, progress)
    else:
        run_processes(job, workers, folder, lambda: (finished(study), job.trials), progress)
    study = optuna.load_study(study_name=job.study, storage=open_storage(job.storage))
    spec = getattr(settings, job.target)
    if progress is not None:
        progress(f"{job.target}: deciding", job.trials, job.trials)
    decision = decide(study, evaluator, spec.selection, settings.objective)
    study.set_user_attr("decision", decision.to_dict())
    sections = evaluator.tuned_section(decision.params) if decision.chosen == "tuned" else {}
    tuned = tuned_config(
        job.config, sections, decision, folder / TUNED_FILE, job.study, redact(job.storage)
    )
    result = TuneResult(
        job.target,
        job.study,
        redact(job.storage),
        folder,
        tuned,
        decision,
        _counts(study),
        time.perf_counter() - start,
        stale_failed=stale,
    )
    _write_summary(result)
    if train:
        from deeppcos.pipeline.training import train as train_run

        result.run = train_run(
            load_config(tuned), folder / "run", overwrite=True, progress=progress
        )
    return result


def tune(
    config: Path | str,
    target: str,
    trials: int,
    *,
    space: Path | str | None = None,
    storage: str | None = None,
    study: str | None = None,
    timeout: float | None = None,
    workers: int = 1,
    resume: bool = False,
    train: bool = False,
    progress: Progress | None = None,
) -> list[TuneResult]:
    """``deeppcos tune``: one target, or ``all`` (each enabled target in turn, each starting from
    the previous one's tuned config); returns one result per target."""
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1; got {trials}")
    cfg = load_config(config)
    storage = storage or default_storage()
    targets = [target] if target != "all" else _enabled_targets(cfg)
    results: list[TuneResult] = []
    current = Path(config)
    for name in targets:
        study_name = study if study and target != "all" else f"{study or cfg.name}-{name}"
        job = Job(
            config=str(current),
            space=str(space) if space else None,
            target=name,
            storage=storage,
            study=study_name,
            trials=trials,
            timeout=timeout,
        )
        last = name == targets[-1]
        results.append(
            tune_target(
                job, workers=workers, resume=resume, train=train and last, progress=progress
            )
        )
        current = results[-1].tuned_config
    return results


def _enabled_targets(config: RunConfig) -> list[str]:
    out = [t for t in BRANCHES if getattr(config, t).enabled]
    if config.fusion.enabled:
        out.append("fusion")
    return out


def _counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return counts


def _write_summary(result: TuneResult) -> None:
    result.folder.mkdir(parents=True, exist_ok=True)
    data = {
        "target": result.target,
        "study": result.study,
        "storage": result.storage,
        "tuned_config": str(result.tuned_config),
        "decision": result.decision.to_dict(),
        "trials": result.trials,
        "seconds": round(result.seconds, 2),
        "stale_trials_failed": result.stale_failed,
    }
    (result.folder / SUMMARY_FILE).write_text(json.dumps(data, indent=1), encoding="utf-8")


# --- listing --------------------------------------------------------------------------------------


def list_studies(storage: str | None = None) -> list[dict[str, Any]]:
    """Every study in ``storage``: name, target, directions, trial counts, best value(s), the
    keep-the-default decision and when it started."""
    import optuna

    storage = storage or default_storage()
    if storage_kind(storage) == "journal" and not journal_path(storage).is_file():
        raise ConfigError(f"--storage {storage}: no journal file there (no study run yet?)")
    handle = open_storage(storage)
    rows = []
    for summary in optuna.get_all_study_summaries(handle, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=handle)
        rows.append(_row(study, summary))
    return rows


def _row(study: optuna.Study, summary: Any) -> dict[str, Any]:
    counts = _counts(study)
    identity = study.user_attrs.get("deeppcos", {})
    decision = study.user_attrs.get("decision", {})
    best: list[float] | None
    try:
        best = list(study.best_trial.values) if len(study.directions) == 1 else None
        best_number = study.best_trial.number if best is not None else None
    except ValueError:
        best, best_number = None, None
    metrics = study.metric_names or [d.name.lower() for d in study.directions]
    return {
        "study": study.study_name,
        "target": identity.get("target"),
        "metrics": metrics,
        "trials": counts,
        "best_value": best,
        "best_trial": best_number,
        "pareto_trials": len(study.best_trials) if len(study.directions) > 1 else None,
        "decision": decision.get("chosen"),
        "decision_reason": decision.get("reason"),
        "started": str(summary.datetime_start)[:19] if summary.datetime_start else None,
    }
