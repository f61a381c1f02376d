"""Training commands: train (a run folder) and embed (frozen embeddings ahead of training)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from deeppcos.cli.common import (
    REPORT_LEVELS,
    _count,
    _errors_as_messages,
    _fmt,
    _interval,
    _progress,
    _report_counts_in_words,
    _require_dask,
    _require_image,
    _stage_progress,
    app,
    console,
)


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="run config YAML (configs/)")],
    out: Annotated[
        Path | None, typer.Option(help="run folder to write (default: runs/<config name>)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a complete run at --out")] = False,
    label_corrections: Annotated[
        list[Path] | None,
        typer.Option(
            help="opt-in: reviewers' feedback log(s) (RUN.feedback.sqlite); each patient's "
            "latest corrected label replaces the cohort's label"
        ),
    ] = None,
) -> None:
    """Train the enabled branches with patient-grouped cross-validation into a run folder."""
    from deeppcos.config import load_config
    from deeppcos.pipeline.training import train as train_run

    with _errors_as_messages():
        cfg = load_config(config)
        if cfg.image.enabled:
            _require_image(f"the image branch (image.enabled: true in {config})")
        target = out or Path("runs") / cfg.name
        corrections = _corrections(label_corrections or [])
        with _stage_progress() as progress:
            run = train_run(
                cfg, target, overwrite=overwrite, progress=progress, label_corrections=corrections
            )
    _print_load_report_counts(run)
    _print_branch_metrics(run)


def _print_load_report_counts(run: Path) -> None:
    """The training cohort's load report as ``_print_report``'s headline (counts per level and
    action), and the file that lists every entry."""
    from rich.markup import escape

    from deeppcos.runs.reader import Run

    folder = Run(run)
    counts: dict[str, int] = folder.cohort_summary()["report"]
    where = folder.load_report_file
    if not counts:
        line = f"load report: nothing changed, nothing excluded ({where})"
    else:
        levels: Counter[str] = Counter()
        for key, n in counts.items():
            levels[key.split("/", 1)[0]] += n
        levels_text = ", ".join(
            _count(levels[level], level, f"{level}s" if level in ("warning", "error") else level)
            for level in REPORT_LEVELS
            if levels[level]
        )
        line = (
            f"load report ({levels_text}): {_report_counts_in_words(counts)}; every entry in "
            f"{where}"
        )
    console.print(escape(line), highlight=False, soft_wrap=True)


def _corrections(logs: list[Path]):  # -> pd.Series | None
    if not logs:
        return None
    import pandas as pd

    from deeppcos.exceptions import DataFileError
    from deeppcos.runs.feedback import FeedbackLog

    parts = []
    for log in logs:
        if not log.is_file():
            raise DataFileError(f"{log}: feedback log not found")
        parts.append(FeedbackLog(log).label_corrections())
    merged = pd.concat(parts)
    # A later log (on the command line) wins for a patient corrected in several.
    return merged[~merged.index.duplicated(keep="last")]




def _print_branch_metrics(run: Path) -> None:
    from deeppcos.runs.reader import Run

    metrics = Run(run).metrics()
    table = Table(title=f"out-of-fold metrics ({metrics.development_patients} patients)")
    for column in ("branch", "ROC AUC", "95% CI", "PR AUC", "Brier", "n"):
        table.add_column(column)
    rows = {name: branch.oof for name, branch in metrics.branches.items()}
    fusion = metrics.fusion
    if fusion is not None:
        both = " (patients with every modality)" if len(fusion.routes) > 1 else ""
        for method, oof in fusion.method_oof().items():
            rows[f"{method} fusion{both}"] = oof
        if fusion.oof is not None:
            rows["calibrated risk, every route"] = fusion.oof
    for name, oof in rows.items():
        table.add_row(
            name,
            str(oof.roc_auc),
            _interval(oof.roc_auc_ci),
            str(oof.pr_auc),
            str(oof.brier),
            str(oof.n),
        )
    console.print(table)
    at = fusion.oof_at_threshold if fusion is not None else None
    if fusion is not None and at is not None and at.threshold is not None:
        sensitivity, specificity = at.figure("sensitivity"), at.figure("specificity")
        console.print(
            f"decision threshold {at.threshold:.3f} (target sensitivity "
            f"{fusion.target_sensitivity:.2f}): sensitivity "
            f"{_fmt(sensitivity.value if sensitivity else None)}, specificity "
            f"{_fmt(specificity.value if specificity else None)} out of fold"
        )
    if fusion is not None:
        console.print(f"fusion kept: {fusion.method} (higher out-of-fold ROC AUC)")
        _print_routes(fusion.routes)
    _print_severity(dict(metrics.severity) if metrics.severity else None, "out of fold")
    console.print(f"run folder: {run}")


def _print_routes(routes: Mapping[str, Any]) -> None:
    """Who was scored by what, when some patients lack a modality."""
    if len(routes) < 2:
        return
    parts = [
        f"{entry['patients']} {ROUTE_WORDS.get(route, route)}: {entry['scored_by']}"
        for route, entry in routes.items()
    ]
    console.print("scored by route (a missing modality is not evidence): " + "; ".join(parts))


ROUTE_WORDS = {
    "tabular+image": "with labs and images",
    "tabular": "with labs only",
    "image": "with images only",
}


def _print_severity(severity: dict[str, Any] | None, where: str) -> None:
    if not severity:
        return
    if "skipped" in severity:
        console.print(f"severity head skipped: {severity['skipped']}")
        return
    scores = severity.get("oof", severity)
    if "quadratic_kappa" not in scores:
        console.print(f"severity: {scores.get('note', 'no graded patients')}")
        return
    kappa, f1 = scores["quadratic_kappa"], scores["macro_f1"]
    source = severity.get("source")
    console.print(
        f"severity grade ({source} grades, {scores['n']} patients, {where}; 'none' unless "
        f"flagged): quadratic kappa {_fmt(kappa['value'])} ({_interval(kappa['ci'])}), macro F1 "
        f"{_fmt(f1['value'])} ({_interval(f1['ci'])})"
    )
    given = severity.get("oof_given_pcos", severity.get("given_pcos", {}))
    if "quadratic_kappa" in given:
        entry = given["quadratic_kappa"]
        console.print(
            f"  grade given PCOS, on the {given['n']} patients labelled PCOS: quadratic kappa "
            f"{_fmt(entry['value'])} ({_interval(entry['ci'])})"
        )
    agreement = severity.get("presence_agreement")
    if agreement:
        console.print(
            f"  decision and grade disagree for {agreement['contradictions']} patients "
            "(a flagged patient always has a PCOS grade, an unflagged one 'none')"
        )




# --- evaluate and predict ---------------------------------------------------------------------




@app.command()
def embed(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="run config YAML with image.mode: frozen")
    ],
    dask: Annotated[
        str | None,
        typer.Option(
            help="embed on a Dask cluster, one task per chunk: scheduler address "
            "(tcp://host:8786), scheduler file (.json) or local[:N]"
        ),
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(min=1, help="images per chunk (default: the config's image.chunk_size)"),
    ] = None,
) -> None:
    """Embed every image of a config's cohort into the frozen-mode cache, ahead of training."""
    with _errors_as_messages():
        _require_image("deeppcos embed")
        if dask is not None:
            _require_dask("deeppcos embed --dask")
    from deeppcos.config import load_config
    from deeppcos.exceptions import ConfigError
    from deeppcos.image.precompute import precompute
    from deeppcos.pipeline.training import cohort_for, resolve_branch_params

    with _errors_as_messages():
        cfg = load_config(config)
        params = resolve_branch_params(cfg).get("image")
        if params is None or not params.frozen:
            raise ConfigError(
                f"{config}: embed needs an enabled image branch with image.params.mode: frozen"
            )
        if chunk_size is not None:
            params = params.model_copy(update={"chunk_size": chunk_size})
        with _progress("loading the cohort") as progress:
            cohort = cohort_for(cfg, progress)
        with _progress("embedding images") as progress:
            done = precompute(cohort, params, scheduler=dask, progress=progress)
    speed = f" ({done.images_per_second:.0f} images/s)" if done.embedded else ""
    console.print(
        f"{done.images} images: {done.cached_before} already cached, {done.embedded} embedded in "
        f"{done.seconds:.1f} s{speed} on {done.workers} worker(s); cache: {done.cache}",
        soft_wrap=True,
    )


# --- tune and studies ------------------------------------------------------------------------
