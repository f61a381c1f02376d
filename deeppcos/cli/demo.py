"""demo: the synthetic cohort, its audit, a run and its evaluation, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deeppcos.cli.common import (
    _errors_as_messages,
    _print_report,
    _print_summary,
    _progress,
    _require_image,
    _stage_progress,
    app,
    console,
    err_console,
)
from deeppcos.cli.evaluation import _print_evaluation
from deeppcos.cli.service import start_dashboard
from deeppcos.cli.training import _print_branch_metrics
from deeppcos.commands import command_line


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo cohort, run and reports")] = Path(
        "demo"
    ),
    patients: Annotated[int, typer.Option(min=10, help="synthetic patients")] = 600,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    skip_training: Annotated[
        bool, typer.Option(help="stop after the cohort and its audit (no training)")
    ] = False,
    dashboard: Annotated[
        bool, typer.Option("--dashboard", help="then serve the dashboard on the run (Ctrl-C stops)")
    ] = False,
    image_mode: Annotated[
        str | None,
        typer.Option(
            help="image branch: frozen (ImageNet MobileNet embeddings + a logistic head; the "
            "default when its weights are at hand), finetune, or scratch (a compact CNN; the "
            "default otherwise)"
        ),
    ] = None,
) -> None:
    """The embedded default, end to end: synthetic cohort → audit → train → evaluate."""
    with _errors_as_messages():  # the demo trains both branches
        _require_image("deeppcos demo")
    from deeppcos.audit.checks import audit_cohort
    from deeppcos.pipeline.evaluate import evaluate_run
    from deeppcos.pipeline.training import (
        DEMO_IMAGE_PARAMS,
        cohort_for,
        demo_config,
        demo_image_mode,
    )
    from deeppcos.pipeline.training import train as train_run

    if image_mode is not None and image_mode not in DEMO_IMAGE_PARAMS:
        raise typer.BadParameter(
            f"expected one of {', '.join(DEMO_IMAGE_PARAMS)}", param_hint="--image-mode"
        )
    mode, fallback = demo_image_mode(image_mode)
    if fallback:
        err_console.print(
            f"[yellow]note:[/] the demo's image branch trains a compact CNN from scratch: the "
            f"ImageNet weights of its default (frozen MobileNet embeddings) are not at hand. "
            f"{fallback}",
            highlight=False,
            soft_wrap=True,
        )
    config = demo_config(out.resolve(), patients=patients, seed=seed, image_mode=mode)
    with _errors_as_messages():
        with _progress("writing the synthetic cohort") as progress:
            cohort = cohort_for(config, progress)
        _print_summary(cohort.summary())
        _print_report(cohort.report, 5)
        with _progress("auditing images") as progress:
            result = audit_cohort(cohort, seed=seed, progress=progress)
        result.print_rich(console)
        result.to_html(out / "audit.html")
        result.to_json(out / "audit.json")
        outputs = "cohort/ (tables, images, cohort.yaml), audit.html, audit.json"
        if not skip_training:
            with _stage_progress() as progress:
                run = train_run(config, out / "run", overwrite=True, progress=progress)
            _print_branch_metrics(run)
            # The run folder was just replaced, so this is its first evaluation: not a re-score.
            _print_evaluation(evaluate_run(run), run)
            outputs += ", run/ (models, metrics.json, curves/, evaluation/ with model_card.md)"
    console.print(f"\nresults in {out}/: {outputs}")
    if not skip_training:
        command = command_line("dashboard", out / "run")
        console.print(f"open the dashboard: {command}", soft_wrap=True, markup=False)
        if dashboard:
            raise typer.Exit(start_dashboard(out / "run"))
