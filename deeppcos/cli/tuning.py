"""Tuning commands: tune (an Optuna study, resumable, over many workers) and studies (the studies
of a storage)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from deeppcos.cli.common import _errors_as_messages, _stage_progress, app, console, err_console


@app.command()
def tune(
    config: Annotated[Path, typer.Option("--config", "-c", help="run config YAML (configs/)")],
    target: Annotated[
        str, typer.Option(help="what to tune: tabular, image, fusion or all")
    ] = "tabular",
    trials: Annotated[
        int, typer.Option(min=1, help="the study's total of finished trials (resume: the rest)")
    ] = 30,
    timeout: Annotated[
        float | None, typer.Option(help="stop starting trials after S seconds (per worker)")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="journal file path, sqlite:///FILE or postgresql://USER:PW@HOST:PORT/DB "
            "(default: runs/tuning/optuna-journal.log)"
        ),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="study name (default: <config name>-<target>)")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="worker processes sharing the storage, 1 thread each")
    ] = 1,
    resume: Annotated[bool, typer.Option(help="continue an existing study")] = False,
    space: Annotated[
        Path | None,
        typer.Option(help="tuning settings and search spaces (default: configs/tuning.yaml's)"),
    ] = None,
    train: Annotated[bool, typer.Option(help="also train a run from the tuned config")] = False,
) -> None:
    """Tune a branch or the fusion with Optuna; write the tuned config (and optionally a run)."""
    from deeppcos.tuning import tune as run_tuning

    if target not in ("tabular", "image", "fusion", "all"):
        raise typer.BadParameter("expected tabular, image, fusion or all", param_hint="--target")
    with _errors_as_messages():
        try:
            with _stage_progress() as progress:
                results = run_tuning(
                    config,
                    target,
                    trials,
                    space=space,
                    storage=storage,
                    study=study,
                    timeout=timeout,
                    workers=workers,
                    resume=resume,
                    train=train,
                    progress=progress,
                )
        except KeyboardInterrupt:
            err_console.print("finished trials are saved; run the same command with --resume")
            raise
    for result in results:
        _print_tuning(result)


def _print_tuning(result: Any) -> None:  # result: deeppcos.tuning.TuneResult
    d = result.decision
    table = Table(title=f"study {result.study} ({result.target})", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("trials", ", ".join(f"{k}: {v}" for k, v in sorted(result.trials.items())))
    table.add_row(f"best trial ({d.metric})", f"#{d.best_trial}: {d.best_value}")
    table.add_row(f"default trial ({d.metric})", f"#{d.default_trial}: {d.default_value}")
    if d.mean_gain is not None:
        table.add_row(
            "paired gain",
            f"{d.mean_gain:+.4f} (SE {d.standard_error}, 95% CI {d.gain_ci95 or 'not defined'}; "
            f"{d.n_folds} {d.folds} folds)",
        )
    table.add_row("decision", f"{d.chosen}: {d.reason}")
    if result.stale_failed:
        table.add_row("lost trials marked FAIL", str(result.stale_failed))
    if result.run is not None:
        table.add_row("run", str(result.run))
    table.add_row("seconds", f"{result.seconds:.1f}")
    console.print(table)
    console.print(f"tuned config: {result.tuned_config}", soft_wrap=True, highlight=False)


@app.command()
def studies(
    storage: Annotated[
        str | None,
        typer.Option(help="journal file, sqlite:/// or postgresql:// URL (default: the journal)"),
    ] = None,
) -> None:
    """List the tuning studies in a storage, with their best values and decisions."""
    from deeppcos.tuning import list_studies

    with _errors_as_messages():
        rows = list_studies(storage)
    table = Table(title=f"studies ({len(rows)})")
    for column in ("study", "target", "metric", "trials", "best", "decision", "started"):
        table.add_column(column)
    for row in rows:
        best = row["best_value"]
        table.add_row(
            row["study"],
            str(row["target"] or "–"),
            ", ".join(row["metrics"]),
            ", ".join(f"{k}: {v}" for k, v in sorted(row["trials"].items())),
            f"{best[0]:.4f} (#{row['best_trial']})"
            if best
            else (f"{row['pareto_trials']} Pareto trials" if row["pareto_trials"] else "–"),
            str(row["decision"] or "–"),
            str(row["started"] or "–"),
        )
    console.print(table)


# --- serve -----------------------------------------------------------------------------------
