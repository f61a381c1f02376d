"""evaluate: a run's locked test part, or another cohort (external validation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from deeppcos.cli.common import _errors_as_messages, _fmt, _interval, app, console, err_console
from deeppcos.cli.training import _print_severity


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="a run folder written by 'deeppcos train'")],
    force: Annotated[
        bool, typer.Option(help="score the locked test part again (recorded as a re-score)")
    ] = False,
    cohort: Annotated[
        Path | None,
        typer.Option(
            help="external validation: score the run on this cohort (spec or config, read with "
            "its own spec) instead of the locked test part"
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="with --cohort: where the report goes (RUN/external/NAME)")
    ] = None,
    recalibrate: Annotated[
        float | None,
        typer.Option(
            metavar="FRACTION",
            help="with --cohort: fit a logistic recalibration on this share of the cohort's "
            "patients (e.g. 0.5; split by patient, stratified by label, with the run's seed) and "
            "report it on the rest, before and after",
        ),
    ] = None,
) -> None:
    """Score the locked test part once: metrics with CIs, plots, subgroups, model card; or,
    with --cohort, validate the run on another cohort."""
    if recalibrate is not None and cohort is None:
        raise typer.BadParameter(
            "recalibrates on an external cohort: give --cohort too", param_hint="--recalibrate"
        )
    if recalibrate is not None and not 0 < recalibrate < 1:
        raise typer.BadParameter(
            f"{recalibrate:g}: the share of the external cohort the recalibration is fitted on "
            "must lie strictly between 0 and 1 (e.g. 0.5)",
            param_hint="--recalibrate",
        )
    if cohort is not None:
        from deeppcos.evaluation.external import external_validation

        with _errors_as_messages():
            report = external_validation(run, cohort, out, recalibrate=recalibrate)
        _print_external(report, run)
        return
    from deeppcos.pipeline.evaluate import evaluate_run

    with _errors_as_messages():
        result = evaluate_run(run, force=force)
    _print_evaluation(result, run)


def _print_external(report: dict[str, Any], run: Path) -> None:
    contamination = report.get("contamination") or {}
    if contamination.get("warning"):
        err_console.print(f"[bold yellow]warning:[/] {contamination['warning']}", soft_wrap=True)
    at, cal = report["at_run_threshold"], report["calibration"]
    table = Table(title=f"{run.name} on {report['cohort']}: {report['scored']} patients scored")
    for column in ("measure", "value", "95% CI"):
        table.add_column(column)
    rows = [
        ("ROC AUC", at["roc_auc"]),
        ("PR AUC", at["pr_auc"]),
        ("calibration in the large (0 = ideal)", cal["in_the_large"]),
        ("calibration slope (1 = ideal)", cal["slope"]),
        ("sensitivity at the run's threshold", at["sensitivity"]),
        ("specificity at the run's threshold", at["specificity"]),
    ]
    for name, entry in rows:
        table.add_row(name, _fmt(entry["value"]), _interval(entry.get("ci")))
    console.print(table)
    cut = report["threshold_for_target_sensitivity"]
    mix = report["case_mix"]
    console.print(
        f"threshold for {cut['target']:.0%} sensitivity here: {cut['threshold_here']:.3f} (the "
        f"run's: {cut['run_threshold']:.3f}); inputs absent here: "
        f"{', '.join(mix['absent_inputs']) or 'none'}; large case-mix shifts: "
        f"{', '.join(mix['large_shifts']) or 'none'}",
        highlight=False,
    )
    if report.get("recalibration"):
        _print_recalibration(report["recalibration"])
    console.print(f"report: {report['folder']} (metrics.json, model_card.md, plots, case_mix.csv)")


def _print_recalibration(recal: dict[str, Any]) -> None:
    split, held = recal["split"], recal["held_out"]
    fit, rest = split["fit"], split["held out"]
    before, after = held["before"], held["after"]
    table = Table(
        title=f"recalibration fitted on {fit['patients']} patients ({fit['positives']} positive), "
        f"scored on the held-out {rest['patients']} ({rest['positives']} positive)"
    )
    for column in ("on the held-out part", "before", "95% CI", "after", "95% CI "):
        table.add_column(column)
    cut_name = f"at the run's threshold {before['threshold']:.3f}"
    rows = [
        ("calibration in the large (0 = ideal)", "calibration", "in_the_large"),
        ("calibration slope (1 = ideal)", "calibration", "slope"),
        ("Brier score", None, "brier"),
        (f"sensitivity {cut_name}", None, "sensitivity"),
        (f"specificity {cut_name}", None, "specificity"),
    ]
    for name, section, key in rows:
        one, two = ((part[section] if section else part)[key] for part in (before, after))
        table.add_row(
            name,
            _fmt(one["value"]),
            _interval(one.get("ci")),
            _fmt(two["value"]),
            _interval(two.get("ci")),
        )
    console.print(table)
    cut, auc = held["threshold_for_target_sensitivity"], held["discrimination"]["roc_auc"]
    console.print(
        f"after recalibration, {cut['target']:.0%} sensitivity needs "
        f"{cut['chosen_on_fitting_part']:.3f} (chosen on the fitting part): sensitivity "
        f"{_fmt(cut['sensitivity']['value'])} ({_interval(cut['sensitivity'].get('ci'))}), "
        f"specificity {_fmt(cut['specificity']['value'])} "
        f"({_interval(cut['specificity'].get('ci'))}) on the held-out part; ROC AUC there "
        f"{_fmt(auc['value'])} ({_interval(auc.get('ci'))}), unchanged by the recalibration; "
        f"the fitting patients are listed in {split['ids_file']}",
        highlight=False,
    )


def _print_evaluation(result: dict[str, Any], run: Path) -> None:
    from deeppcos.evaluation.metrics import METRICS

    fusion = result["fusion"]
    table = Table(title=f"locked test part: {result['scored']} patients scored")
    for column in ("metric", "value", "95% CI"):
        table.add_column(column)
    for key in (k for k in METRICS if k != "accuracy"):  # every metric the file has but accuracy
        entry = fusion[key]
        name = f"{key} ({entry['value_method']})" if entry.get("value_method") else key
        table.add_row(name, _fmt(entry["value"]), _interval(entry.get("ci")))
    console.print(table)
    for name, branch in result["branches"].items():
        console.print(
            f"{name} branch alone: ROC AUC {_fmt(branch['roc_auc'])} "
            f"({_interval(branch.get('roc_auc_ci'))})"
        )
    _print_severity(result.get("severity"), "locked test part")
    console.print(
        f"{result.get('fusion_method', 'late')} fusion; "
        f"threshold {result['threshold']:.3f}; results in {run / 'evaluation'}/ "
        "(metrics.json, model_card.md, roc.png, pr.png, calibration.png, …)"
    )


