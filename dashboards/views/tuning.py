"""Tuning: the Optuna studies at a storage URL (journal file, SQLite or PostgreSQL), each with
its optimisation history, parameter importances, parallel coordinates and best parameters, and
the command that opens the same study in optuna-dashboard."""

from __future__ import annotations

import shlex
import warnings
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import context, runinfo

STORAGE_KEY = "tuning_storage"
REFRESH_S = 30  # studies grow while workers run: figures are cached this long


@st.cache_data(show_spinner="Reading the studies…", ttl=REFRESH_S, max_entries=8)
def studies(storage: str) -> tuple[list[dict[str, Any]], str | None]:
    from deeppcos.tuning import list_studies

    try:
        return list_studies(storage), None
    except Exception as exc:  # a bad URL or an unreachable database: say so, no traceback
        return [], str(exc)


@st.cache_data(show_spinner="Drawing the study…", ttl=REFRESH_S, max_entries=16)
def study_view(storage: str, name: str, objective: int) -> dict[str, Any]:
    """Figures and tables of one study (for objective ``objective`` of a multi-objective one)."""
    import optuna

    from deeppcos.tuning import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    names = study.metric_names or [d.name.lower() for d in study.directions]
    multi = len(study.directions) > 1
    target = (lambda t: t.values[objective]) if multi else None
    label = names[objective] if objective < len(names) else "objective"
    out: dict[str, Any] = {"metric": label, "multi": multi, "figures": {}, "notes": {}}
    plots = {
        "Optimisation history": optuna.visualization.plot_optimization_history,
        "Parameter importances": optuna.visualization.plot_param_importances,
        "Parallel coordinates": optuna.visualization.plot_parallel_coordinate,
    }
    for title, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out["figures"][title] = plot(study, target=target, target_name=label)
        except Exception as exc:  # e.g. importances need two finished trials
            out["notes"][title] = f"{title} not available yet: {exc}"
    out["best"] = _best(study, multi, names)
    out["trials"] = study.trials_dataframe(attrs=("number", "state", "values", "params"))
    return out


def _best(study: Any, multi: bool, metrics: list[str]) -> pd.DataFrame:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return pd.DataFrame()
    best = study.best_trials if multi else [study.best_trial]
    rows = []
    for trial in best:
        row: dict[str, Any] = {"trial": trial.number}
        row.update(dict(zip(metrics, trial.values, strict=False)))
        row.update(trial.params)
        rows.append(row)
    return pd.DataFrame(rows)


def dashboard_command(storage: str) -> str:
    """The optuna-dashboard command for the same storage (password redacted)."""
    from deeppcos.tuning.storage import redact, storage_kind

    shown = redact(storage)
    if storage_kind(storage) == "journal":
        shown = shown.removeprefix("journal:")
    return f"optuna-dashboard {shlex.quote(shown)}"


def studies_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "study": r["study"],
                "target": r.get("target") or "–",
                "metric": ", ".join(r.get("metrics") or []),
                "trials": ", ".join(f"{k}: {v}" for k, v in sorted(r["trials"].items())),
                "best": f"{r['best_value'][0]:.4f}"
                if r.get("best_value")
                else (f"{r['pareto_trials']} Pareto trials" if r.get("pareto_trials") else "–"),
                "best trial": r.get("best_trial"),
                "decision": r.get("decision") or "–",
                "started": r.get("started") or "–",
            }
            for r in rows
        ]
    )


def show_study(storage: str, row: dict[str, Any]) -> None:
    metrics = row.get("metrics") or ["objective"]
    objective = 0
    if len(metrics) > 1:
        objective = st.selectbox(
            "Objective", range(len(metrics)), format_func=metrics.__getitem__, key="objective"
        )
    view = study_view(storage, row["study"], objective)
    if row.get("decision"):
        st.markdown(f"Decision: **{row['decision']}** — {row.get('decision_reason') or ''}")
    for title in ("Optimisation history", "Parameter importances", "Parallel coordinates"):
        if title in view["figures"]:
            st.plotly_chart(view["figures"][title], key=f"tuning-{title}")
        else:
            st.caption(view["notes"].get(title, ""))
    st.subheader("Best parameters" if not view["multi"] else "Pareto-optimal trials")
    if view["best"].empty:
        st.caption("No finished trial yet.")
    else:
        st.dataframe(view["best"], hide_index=True, key="best_params")
    with st.expander(f"All trials ({len(view['trials'])})"):
        st.dataframe(view["trials"], hide_index=True, key="all_trials")


def main() -> None:
    st.title("Tuning")
    check = context.current_run()
    run = check.path.resolve() if check.ok and check.path is not None else None
    if STORAGE_KEY not in st.session_state:
        st.session_state[STORAGE_KEY] = runinfo.default_storage(run)
    storage = st.text_input(
        "Storage",
        key=STORAGE_KEY,
        help="a journal file path, sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/DB",
    ).strip()
    if st.button("Refresh", key="tuning_refresh"):
        studies.clear()
        study_view.clear()
    if not storage:
        st.stop()
    rows, error = studies(storage)
    if error:
        st.warning(error)
        st.markdown("Studies are made by `deeppcos tune`, e.g.:")
        st.code(
            f"deeppcos tune --config configs/synthetic.yaml --target tabular --trials 30 "
            f"--storage {shlex.quote(storage)}",
            language="bash",
        )
        st.stop()
    st.dataframe(studies_table(rows), hide_index=True, key="studies")
    st.markdown("Open the same studies in optuna-dashboard (`pip install optuna-dashboard`):")
    st.code(dashboard_command(storage), language="bash")
    if not rows:
        st.stop()
    names = [r["study"] for r in rows]
    chosen = st.selectbox("Study", names, key="study")
    show_study(storage, rows[names.index(chosen)])


main()
