"""The run the dashboard shows, and everything loaded from it, cached.

Models, the cohort and explanations are loaded once per run (``st.cache_resource``: shared,
never copied); small tables and JSON with ``st.cache_data``. Every cache key carries the file's
modification time, so a retrained or re-evaluated run is picked up without a restart. A loader
that fails returns its message instead of raising, and the failure is cached too, so a broken
run costs one attempt, not one per rerun.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import runinfo
from dashboards.analysis import read_predictions
from deeppcos.exceptions import DeepPCOSError
from deeppcos.runs.reader import Run

RUN_KEY = "run_path"
PATIENT_KEY = "patient_id"  # the patient the Patient and Feedback pages share


@dataclass(frozen=True)
class Loaded:
    """A loader's result: ``value`` or, when it failed, ``error`` (a message for the user)."""

    value: Any = None
    error: str | None = None


def _attempt(load: Any, *args: Any) -> Loaded:
    try:
        return Loaded(load(*args))
    except DeepPCOSError as exc:
        return Loaded(error=str(exc))
    except Exception as exc:  # the page shows a message, never a traceback
        return Loaded(error=f"{type(exc).__name__}: {exc}")


# --- which run -----------------------------------------------------------------------------------


def run_selector() -> None:
    """The sidebar's run-folder box (starts at ``$DEEPPCOS_RUN`` or demo/run)."""
    if RUN_KEY not in st.session_state:
        st.session_state[RUN_KEY] = runinfo.initial_run()
    st.sidebar.text_input(
        "Run folder", key=RUN_KEY, help="a folder written by `deeppcos train` (or `deeppcos demo`)"
    )


def current_run() -> runinfo.RunCheck:
    return runinfo.check_run(st.session_state.get(RUN_KEY) or runinfo.initial_run())


def require_run() -> Path:
    """The current run folder; a clear message and the page stops when it is not usable."""
    check = current_run()
    if not check.ok:
        st.error(check.problem)
        if check.hint:
            st.info(check.hint)
        st.stop()
    assert check.path is not None
    return check.path.resolve()


def _record_stamp(run: Path) -> int:
    return runinfo.stamp(Run(run).record_file)


def _evaluation_stamp(run: Path) -> int:
    return runinfo.stamp(Run(run).evaluation_metrics_file)


# --- the record, metrics and predictions -------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=16)
def _json(path: str, stamp: int) -> dict[str, Any] | None:
    file = Path(path)
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def stored_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the run (cached until the file changes); None when absent."""
    return _json(str(path), runinfo.stamp(path))


def record(run: Path) -> dict[str, Any]:
    return _json(str(Run(run).record_file), _record_stamp(run)) or {}


def training_metrics(run: Path) -> dict[str, Any]:
    file = Run(run).metrics_file
    return _json(str(file), runinfo.stamp(file)) or {}


def evaluation(run: Path) -> dict[str, Any] | None:
    """``evaluation/metrics.json``, or None when the run has not been evaluated."""
    if not runinfo.evaluated(run):
        return None
    return _json(str(Run(run).evaluation_metrics_file), _evaluation_stamp(run))


@st.cache_data(show_spinner=False, max_entries=8)
def _predictions(path: str, stamp: int) -> pd.DataFrame:
    return read_predictions(path)


def test_predictions(run: Path) -> pd.DataFrame | None:
    if not runinfo.evaluated(run):
        return None
    file = Run(run).test_predictions_file
    return _predictions(str(file), _evaluation_stamp(run))


def explain_evaluate(run: Path) -> None:
    st.warning("This run has not been evaluated on its locked test part yet.")
    st.markdown("Score it once (about a minute on the demo run), then reload this page:")
    st.code(f"deeppcos evaluate {run}", language="bash")


# --- models, cohort, explanations ----------------------------------------------------------------


@st.cache_resource(show_spinner="Loading the run's models…", max_entries=4)
def _predictor(path: str, stamp: int) -> Loaded:
    problem = runinfo.predictor_problem(Path(path))
    if problem:
        return Loaded(error=problem)
    from deeppcos.inference.predictor import load_run

    return _attempt(load_run, path)


def predictor(run: Path) -> Any:
    """The run's predictor, loaded once; the page stops with a message when it cannot load."""
    loaded = _predictor(str(run), _record_stamp(run))
    if loaded.error:
        st.error(f"The run's models could not be loaded: {loaded.error}")
        st.stop()
    return loaded.value


def _load_cohort(path: str) -> Any:
    """The run's cohort without loading any model (TensorFlow stays unimported)."""
    from deeppcos.inference.predictor import Predictor

    run = Run.open(path)
    shell = Predictor(run=run.path, config=run.config(), record=run.record)
    return shell.cohort()


@st.cache_resource(show_spinner="Loading the cohort…", max_entries=4)
def _cohort(path: str, stamp: int) -> Loaded:
    return _attempt(_load_cohort, path)


def cohort(run: Path, *, stop: bool = True) -> Any:
    """The cohort the run was trained on (fingerprint checked), loaded once."""
    loaded = _cohort(str(run), _record_stamp(run))
    if loaded.error:
        st.error(f"The run's cohort could not be loaded: {loaded.error}")
        if stop:
            st.stop()
        return None
    return loaded.value


@st.cache_resource(show_spinner="Explaining the prediction…", max_entries=64)
def _explanation(path: str, stamp: int, patient_id: str) -> Loaded:
    models, data = _predictor(path, stamp), _cohort(path, stamp)
    if models.error or data.error:
        return Loaded(error=models.error or data.error)
    from deeppcos.explain import explain_patient

    return _attempt(
        lambda: explain_patient(
            models.value, patient_id, data.value, saliency="gradcam", max_images=4
        )
    )


def explanation(run: Path, patient_id: str) -> Any:
    loaded = _explanation(str(run), _record_stamp(run), str(patient_id))
    if loaded.error:
        st.error(f"Patient {patient_id} could not be explained: {loaded.error}")
        return None
    return loaded.value
