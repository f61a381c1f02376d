"""Worker processes: each one opens the shared storage and runs trials until the study has its
budget of finished trials.

``--workers 1`` runs trials in the calling process. ``--workers K`` starts K processes
(``python -m deeppcos.tuning.workers JOB.json INDEX``) with one thread each for every numeric
library (OpenMP, BLAS, XGBoost ``nthread``, TensorFlow intra/inter-op), so K workers on K cores
do not fight over them. Every worker draws its own sampler seed (TPE with the constant-liar
strategy, so parallel workers do not all propose the same point), counts the study's COMPLETE,
PRUNED and RUNNING trials after each trial, and stops once they reach the budget — workers on
other machines sharing a database count towards the same budget.

Interrupted (Ctrl-C, or a worker killed outright), a study loses only the trials that were
running: Optuna marks a trial FAIL on Ctrl-C, and a killed worker's RUNNING trial is marked FAIL
the next time the study is opened (:func:`deeppcos.tuning.storage.fail_stale_trials`) or, with
a database, by the heartbeat.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeppcos.exceptions import DeepPCOSError

if TYPE_CHECKING:
    import optuna

    from deeppcos.tuning.objective import Evaluator
    from deeppcos.tuning.spaces import TuningSettings

Progress = Callable[[str, int, int], None]
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
SEED_STRIDE = 7919
POLL_S = 1.0
STOP_WAIT_S = 60.0


@dataclass
class Job:
    """What a worker needs to rebuild the objective on its own (JSON-serialisable)."""

    config: str
    space: str | None
    target: str
    storage: str
    study: str
    trials: int
    timeout: float | None = None
    threads: int | None = None
    cache: str | None = None  # fusion: folder of the cached branch outputs

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path | str) -> Job:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


FINISHED_OR_RUNNING = ("COMPLETE", "PRUNED", "RUNNING")


def counted(study: optuna.Study) -> int:
    """Trials that count towards the budget: finished (complete or pruned) or running."""
    from optuna.trial import TrialState

    states = tuple(TrialState[s] for s in FINISHED_OR_RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


def finished(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def sampler_and_pruner(
    settings: TuningSettings, n_steps: int, multi_objective: bool, seed: int
) -> tuple[Any, Any]:
    import optuna

    if settings.study.sampler == "random":
        sampler: Any = optuna.samplers.RandomSampler(seed=seed)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=settings.study.n_startup_trials,
                multivariate=True,
                constant_liar=True,
            )
    p = settings.pruner
    if multi_objective or p.kind == "none":
        pruner: Any = optuna.pruners.NopPruner()
    elif p.kind == "median":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    else:
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(n_steps, 1), reduction_factor=p.reduction_factor
        )
    return sampler, pruner


def run_worker(
    job: Job,
    index: int,
    evaluator: Evaluator,
    settings: TuningSettings,
    progress: Progress | None = None,
) -> int:
    """Run trials in this process until the study has ``job.trials`` finished or running
    trials (or ``job.timeout`` seconds passed); return how many this worker ran."""
    import optuna

    from deeppcos.tuning.objective import Objective
    from deeppcos.tuning.storage import open_storage, worker_token

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(job.storage)
    probe = optuna.load_study(study_name=job.study, storage=storage)
    seed = settings.study.seed + SEED_STRIDE * (index + 1) + len(probe.trials)
    sampler, pruner = sampler_and_pruner(
        settings, n_steps(evaluator), len(probe.directions) > 1, seed
    )
    study = optuna.load_study(study_name=job.study, storage=storage, sampler=sampler, pruner=pruner)
    if counted(study) >= job.trials:
        return 0
    objective = Objective(evaluator, worker_token(), seed)
    ran = 0

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal ran
        ran += 1
        if progress is not None:
            progress(
                f"{job.target}: trial {trial.number} {trial.state.name.lower()}",
                finished(study),
                job.trials,
            )
        if counted(study) >= job.trials:
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            objective, timeout=job.timeout, callbacks=[after_trial], gc_after_trial=False
        )
    return ran


def n_steps(evaluator: Evaluator) -> int:
    """How many steps a trial reports at most (for Hyperband's maximum resource)."""
    folds = evaluator.search_folds()
    n_folds = len(folds) if folds is not None else 1
    return n_folds * getattr(evaluator, "stride", 1)


# --- several processes ----------------------------------------------------------------------------


def thread_limited_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_processes(
    job: Job,
    workers: int,
    folder: Path,
    poll: Callable[[], tuple[int, int]],
    progress: Progress | None = None,
) -> None:
    """Start ``workers`` worker processes on ``job`` and wait for them.

    ``poll()`` returns (finished trials, budget) for the progress bar. On Ctrl-C every worker
    gets SIGINT (Optuna then marks its running trial FAIL) and is waited for; one that does not
    stop within ``STOP_WAIT_S`` is killed (its trial is marked FAIL on the next resume).
    """
    folder.mkdir(parents=True, exist_ok=True)
    spec = job.save(folder / f".job-{os.getpid()}.json")
    env = thread_limited_env(job.threads or 1)
    processes = []
    logs = []
    try:
        for index in range(workers):
            log = (folder / f"worker-{index}.log").open("w", encoding="utf-8")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "deeppcos.tuning.workers", str(spec), str(index)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        while any(p.poll() is None for p in processes):
            if progress is not None:
                done, budget = poll()
                progress(f"{job.target}: {workers} workers", done, budget)
            time.sleep(POLL_S)
    except BaseException:
        _stop(processes)
        raise
    finally:
        for log in logs:
            log.close()
        spec.unlink(missing_ok=True)
    failed = [(i, p.returncode) for i, p in enumerate(processes) if p.returncode != 0]
    if failed:
        details = "; ".join(
            f"worker {i} exited {code}: {_tail(folder / f'worker-{i}.log')}" for i, code in failed
        )
        raise DeepPCOSError(f"tuning workers failed: {details}")


def _stop(processes: list[subprocess.Popen[Any]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_WAIT_S
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process: ``python -m deeppcos.tuning.workers JOB.json INDEX``."""
    from deeppcos.tuning.evaluators import build_evaluator

    args = sys.argv[1:] if argv is None else argv
    job = Job.load(args[0])
    index = int(args[1])
    try:
        evaluator, settings = build_evaluator(job)
        run_worker(job, index, evaluator, settings)
    except KeyboardInterrupt:
        return 130
    except DeepPCOSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
