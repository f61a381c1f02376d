"""The ``deeppcos`` command line. Thin: it parses, calls the library, prints.

Heavy libraries are imported inside the commands, so ``deeppcos --help`` answers at once.

Exit codes scripts can rely on: 0 success; 1 a deeppcos error (bad spec, bad data; the message
says which file, row and column); 2 wrong usage; 3 ``validate --strict`` found exclusions or
warnings; 4 ``audit --fail-on`` found a finding at or above that severity; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from deeppcos import __version__
from deeppcos.commands import command_line

# TensorFlow's C++ start-up chatter is noise to a user; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    name="deeppcos",
    help="Detect PCOS and grade its severity from ovarian ultrasound and clinical labs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help, not Rich's panels: Rich squeezes the option column to fit the terminal
    # and cuts long names ("--label-correcti…" at 80 columns); Click always prints an option's
    # full name and moves its help to the next line when the name is long.
    rich_markup_mode=None,
)
console = Console()
err_console = Console(stderr=True)

EXIT_ERROR, EXIT_STRICT, EXIT_AUDIT, EXIT_INTERRUPTED = 1, 3, 4, 130
SEVERITY_RANK = {"ok": 0, "info": 1, "warning": 2, "high": 3}

SpecArg = Annotated[Path, typer.Argument(help="cohort spec or config YAML (see configs/)")]


def _version(value: bool) -> None:
    if value:
        console.print(f"deeppcos {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version")
    ] = False,
) -> None:
    """deeppcos command line."""


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar that library code drives through a ``progress(done, total)`` call."""
    with _stage_progress() as update:
        yield lambda done, total: update(description, done, total)


def _fail(exc: Exception) -> typer.Exit:
    from rich.markup import escape  # the message is text: "deeppcos[serve]" is no markup tag

    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


@contextmanager
def _errors_as_messages() -> Iterator[None]:
    from deeppcos.exceptions import DeepPCOSError

    try:
        yield
    except DeepPCOSError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _write_json(data: Any, target: str) -> None:
    text = json.dumps(data, indent=1, default=str)
    if target == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(target).write_text(text + "\n", encoding="utf-8")


def _require_image(feature: str) -> None:
    """TensorFlow and Keras (the 'image' extra), or a MissingExtraError naming ``feature``."""
    from deeppcos.extras import require

    require("keras", "image", feature)  # imports TensorFlow, its backend


def _require_dask(feature: str) -> None:
    """dask and distributed (the 'dask' extra), or a MissingExtraError naming ``feature``."""
    from deeppcos.extras import require

    require("distributed", "dask", feature)  # imports dask


# --- synth -----------------------------------------------------------------------------------


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="folder to write the cohort into")],
    patients: Annotated[int, typer.Option("--patients", "-n", min=10, help="patients")] = 600,
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same files")] = 0,
    image_size: Annotated[int, typer.Option(min=32, max=1024, help="image side in pixels")] = 256,
    with_ultrasound_columns: Annotated[
        bool, typer.Option(help="also put follicle counts and ovarian volumes in the table")
    ] = False,
) -> None:
    """Write a synthetic PCOS cohort: patients.csv, images.csv, images/, cohort.yaml."""
    from deeppcos.data.synthetic import generate_cohort

    with _errors_as_messages(), _progress("writing images") as progress:
        spec_path = generate_cohort(
            out,
            n_patients=patients,
            seed=seed,
            image_size=image_size,
            with_ultrasound_columns=with_ultrasound_columns,
            progress=progress,
        )
    console.print(f"wrote {patients} patients to {out}; spec: {spec_path}")


# --- validate --------------------------------------------------------------------------------


def _load(spec: Path):  # -> Cohort
    from deeppcos.data.loaders import load_cohort

    with _progress("checking images") as progress:
        return load_cohort(spec, progress=progress)


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"cohort {summary['name']}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("patients", str(summary["patients"]))
    table.add_row("  with images", str(summary["patients_with_images"]))
    table.add_row("  with tabular data", str(summary["patients_with_tabular"]))
    table.add_row("images", str(summary["images"]))
    table.add_row("features", str(summary["features"]))
    if "labels" in summary:
        labels = ", ".join(f"{k}: {v}" for k, v in summary["labels"].items())
        table.add_row(f"label ({summary['label_name']})", labels)
    if "severity" in summary:
        table.add_row("severity", ", ".join(f"{k}: {v}" for k, v in summary["severity"].items()))
    if summary["ultrasound_features"]:
        table.add_row("ultrasound-derived", ", ".join(summary["ultrasound_features"]))
    table.add_row("fingerprint", summary["fingerprint"][:16])
    console.print(table)


# What each kind of load-report entry did, in words: (one, several).
REPORT_ACTIONS = {
    "renamed": ("column renamed", "columns renamed"),
    "converted": ("column converted to other units", "columns converted to other units"),
    "recomputed": ("column recomputed from its parts", "columns recomputed from their parts"),
    "coerced": ("unreadable value set to missing", "unreadable values set to missing"),
    "out_of_range": ("value outside its plausible range", "values outside their plausible range"),
    "dropped_column": ("column dropped", "columns dropped"),
    "recoded": ("code recoded", "codes recoded"),
    "excluded_row": ("patient row left out", "patient rows left out"),
    "excluded_image": ("image left out", "images left out"),
    "conflicting_copy": (
        "identical copy with the opposite label",
        "identical copies with opposite labels",
    ),
    "unknown_column": ("unknown column", "unknown columns"),
    "note": ("note", "notes"),
}
REPORT_LEVELS = ("error", "excluded", "warning", "info")  # most serious first


def _count(n: int, one: str, several: str) -> str:
    return f"{n} {one if n == 1 else several}"


def _report_counts_in_words(counts: dict[str, int]) -> str:
    """``{"warning/out_of_range": 37, "info/renamed": 38}`` (``LoadReport.counts()``) →
    "38 columns renamed, 37 values outside their plausible range"."""
    by_action: dict[str, int] = {}
    for key, n in counts.items():
        action = key.split("/", 1)[-1]
        by_action[action] = by_action.get(action, 0) + n
    ordered = sorted(by_action.items(), key=lambda item: -item[1])  # stable: ties keep order
    return ", ".join(
        _count(n, *REPORT_ACTIONS.get(action, (action.replace("_", " "),) * 2))
        for action, n in ordered
    )


def _report_line(entry: Any) -> str:  # entry: ReportEntry
    """One entry as a sentence: its level, where (file, row, column) and what happened."""
    found = f" (found {entry.found!r})" if entry.found is not None else ""
    where = entry.location(short=True)
    return f"{entry.level}: {where + ': ' if where else ''}{entry.message}{found}"


def _print_report(report, limit: int, more: str = "") -> None:  # report: LoadReport
    """The load report: a line of counts in words, then up to ``limit`` entries (one of each
    kind first), each naming its file, row and column; the rest counted in words, and ``more``
    says where to read them."""
    if not len(report):
        console.print("load report: nothing changed, nothing excluded")
        return
    from rich.markup import escape

    levels = {level: sum(e.level == level for e in report) for level in REPORT_LEVELS}
    levels_text = ", ".join(
        _count(n, level, f"{level}s" if level in ("warning", "error") else level)
        for level, n in levels.items()
        if n
    )
    console.print(
        escape(f"load report ({levels_text}): {_report_counts_in_words(report.counts())}"),
        highlight=False,
    )
    shown = _report_sample(list(report), limit)
    for entry in shown:
        console.print(f"  {escape(_report_line(entry))}", highlight=False)
    if len(report) > len(shown):
        ids = {id(e) for e in shown}
        rest = Counter(f"{e.level}/{e.action}" for e in report if id(e) not in ids)
        hint = f"; {more}" if more else ""
        line = f"  … {len(report) - len(shown)} more ({_report_counts_in_words(rest)}){hint}"
        console.print(escape(line), highlight=False)


def _report_sample(entries: list[Any], limit: int) -> list[Any]:
    """Up to ``limit`` entries showing every kind (level and action) before a second of any:
    the kinds in turn, the most serious level first; shown in that order, then the report's."""
    rank = {level: i for i, level in enumerate(REPORT_LEVELS)}
    kinds: dict[tuple[str, str], list[Any]] = {}
    for entry in sorted(entries, key=lambda e: rank.get(e.level, len(rank))):
        kinds.setdefault((entry.level, entry.action), []).append(entry)
    picked: list[Any] = []
    depth = 0
    while len(picked) < min(limit, len(entries)):
        picked += [group[depth] for group in kinds.values() if depth < len(group)]
        depth += 1
    order = {id(e): i for i, e in enumerate(entries)}
    return sorted(picked[:limit], key=lambda e: (rank.get(e.level, len(rank)), order[id(e)]))


@app.command()
def validate(
    spec: SpecArg,
    json_out: Annotated[
        str | None,
        typer.Option("--json", help="write the summary and report as JSON ('-' = stdout)"),
    ] = None,
    report_csv: Annotated[Path | None, typer.Option(help="write every report entry as CSV")] = None,
    strict: Annotated[
        bool, typer.Option(help="exit 3 if anything was excluded or warned about")
    ] = False,
    show: Annotated[int, typer.Option(help="report entries to print")] = 20,
) -> None:
    """Load a cohort, check it, and print counts and the load report."""
    with _errors_as_messages():
        cohort = _load(spec)
        summary = cohort.summary()
    if json_out:
        _write_json({"summary": summary, "report": cohort.report.to_records()}, json_out)
    if json_out != "-":
        _print_summary(summary)
        _print_report(cohort.report, show, "use --report-csv FILE to list them all")
    if report_csv:
        from deeppcos.runs.csvsafe import write_csv

        write_csv(cohort.report.to_frame(), report_csv, index=False)
    if strict and any(e.level in ("warning", "excluded") for e in cohort.report):
        raise typer.Exit(EXIT_STRICT)


# --- audit -----------------------------------------------------------------------------------


@app.command()
def audit(
    spec: SpecArg,
    json_out: Annotated[
        str | None, typer.Option("--json", help="write the findings as JSON ('-' = stdout)")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="write a readable HTML report")] = None,
    near_threshold: Annotated[
        int | None, typer.Option(help="Hamming distance (of 64 bits) for near-duplicates")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed for the cross-validated probes")] = 0,
    fail_on: Annotated[
        str, typer.Option(help="exit 4 when a finding reaches this severity: high, warning, never")
    ] = "never",
    against: Annotated[
        Path | None,
        typer.Option(
            help="another cohort (spec or config): list the images of SPEC that are copies of "
            "its images, and whether their labels agree (instead of the cohort's own audit)"
        ),
    ] = None,
    pairs_csv: Annotated[
        Path | None, typer.Option(help="with --against: write every pair found as CSV")
    ] = None,
) -> None:
    """Find duplicates, near-duplicates, split leakage and shortcuts in a cohort, or copies
    shared with another cohort (--against)."""
    from deeppcos.audit.checks import DEFAULT_NEAR_DUP_BITS, audit_cohort

    if fail_on not in ("high", "warning", "never"):
        raise typer.BadParameter("expected high, warning or never", param_hint="--fail-on")
    if against is not None:
        _audit_against(spec, against, near_threshold or DEFAULT_NEAR_DUP_BITS, json_out, pairs_csv)
        return
    with _errors_as_messages():
        cohort = _load(spec)
        with _progress("auditing images") as progress:
            result = audit_cohort(
                cohort,
                near_duplicate_threshold=near_threshold or DEFAULT_NEAR_DUP_BITS,
                seed=seed,
                progress=progress,
            )
    if json_out:
        if json_out == "-":
            _write_json(result.to_dict(), "-")
        else:
            result.to_json(json_out)
    if json_out != "-":
        result.print_rich(console)
    if html:
        result.to_html(html)
        console.print(f"HTML report: {html}")
    if fail_on != "never" and SEVERITY_RANK[result.worst_severity] >= SEVERITY_RANK[fail_on]:
        raise typer.Exit(EXIT_AUDIT)


def _audit_against(
    spec: Path, other: Path, near_bits: int, json_out: str | None, pairs_csv: Path | None
) -> None:
    from deeppcos.audit.cross import cross_audit
    from deeppcos.runs.csvsafe import write_csv

    with _errors_as_messages():
        first, second = _load(spec), _load(other)
        with _progress("reading both cohorts' images") as progress:
            result = cross_audit(first, second, near_bits=near_bits, progress=progress)
    if json_out:
        _write_json(result.to_dict(), json_out)
    if pairs_csv is not None:
        write_csv(result.pairs, pairs_csv, index=False)
    if json_out == "-":
        return
    summary = result.summary()
    table = Table(
        title=f"images shared by {summary['cohort_a']} ({summary['images_a']} images) and "
        f"{summary['cohort_b']} ({summary['images_b']})"
    )
    for column in ("copies", "pairs", "labels agree", "labels disagree", "label unknown"):
        table.add_column(column, justify="right" if column != "copies" else "left")
    names = {
        "same_file": "identical files",
        "same_pixels": "identical pixels, other file",
        "near": f"near copies (≤ {near_bits} of 64 bits)",
    }
    for kind, figures in summary["by_kind"].items():
        table.add_row(
            names[kind],
            str(figures["pairs"]),
            str(figures["labels_agree"]),
            str(figures["labels_disagree"]),
            str(figures["labels_unknown"]),
        )
    console.print(table)
    a_images, a_patients = (
        summary["images_of_a_with_a_copy_in_b"],
        summary["patients_of_a_with_a_copy_in_b"],
    )
    b_images, b_patients = (
        summary["images_of_b_with_a_copy_in_a"],
        summary["patients_of_b_with_a_copy_in_a"],
    )
    console.print(
        f"{a_images} images ({a_patients} patients) of {summary['cohort_a']} have a copy in "
        f"{summary['cohort_b']}; {b_images} images ({b_patients} patients) of "
        f"{summary['cohort_b']} have one in {summary['cohort_a']}",
        highlight=False,
    )


# --- criteria --------------------------------------------------------------------------------


@app.command()
def criteria(
    spec: SpecArg,
    guideline: Annotated[
        str, typer.Option(help="rotterdam-2003 or 2023-international")
    ] = "rotterdam-2003",
    json_out: Annotated[
        str | None, typer.Option("--json", help="write the counts as JSON ('-' = stdout)")
    ] = None,
    labels_csv: Annotated[
        Path | None, typer.Option(help="write each patient's criteria, phenotype and grade")
    ] = None,
) -> None:
    """Derive the Rotterdam criteria, phenotype A–D and a severity grade from a cohort's
    columns, and count how many patients meet each criterion."""
    from deeppcos.knowledge.criteria import (
        GUIDELINES,
        CriteriaRules,
        criteria_summary,
        is_guideline,
        label_cohort,
    )

    if not is_guideline(guideline):
        raise typer.BadParameter(f"expected one of {list(GUIDELINES)}", param_hint="--guideline")
    with _errors_as_messages():
        cohort = _load(spec)
        result = label_cohort(cohort, CriteriaRules(guideline=guideline))
        label = cohort.patients["label"] if cohort.patients["label"].notna().any() else None
        summary = criteria_summary(result, label=label)
    if labels_csv:
        from deeppcos.runs.csvsafe import write_csv

        write_csv(result.frame, labels_csv, index=False)
    if json_out:
        _write_json(summary, json_out)
    if json_out != "-":
        _print_criteria(summary)


def _print_criteria(summary: dict[str, Any]) -> None:
    table = Table(title=f"Criteria ({summary['guideline']}), {summary['n_patients']} patients")
    for column in ("criterion", "met", "not met", "unknown"):
        table.add_column(column, justify="left" if column == "criterion" else "right")
    for name, counts in summary["criteria"].items():
        table.add_row(name, *(str(counts.get(k, 0)) for k in ("met", "not_met", "unknown")))
    console.print(table)
    console.print(f"criteria met (0–3): {summary['n_criteria_met']}")
    console.print(f"phenotypes: {summary['phenotype']}; severity: {summary['severity']}")
    if "label_agreement" in summary:
        console.print(f"against the cohort's label: {summary['label_agreement']}")
    console.print(f"columns read: {', '.join(summary['columns_used'])}")
    for caveat in summary["caveats"]:
        console.print(f"[yellow]caveat:[/yellow] {caveat}")


# --- train -----------------------------------------------------------------------------------


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

    summary = json.loads((run / "cohort.json").read_text(encoding="utf-8"))
    counts: dict[str, int] = summary["report"]
    where = run / "load_report.csv"
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


@contextmanager
def _stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar whose description follows the current stage (fold, refit, …)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def update(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=total)

        yield update


def _print_branch_metrics(run: Path) -> None:
    from deeppcos.runs.folder import read_metrics

    metrics = read_metrics(run)
    table = Table(title=f"out-of-fold metrics ({metrics['development_patients']} patients)")
    for column in ("branch", "ROC AUC", "95% CI", "PR AUC", "Brier", "n"):
        table.add_column(column)
    rows = dict(metrics["branches"])
    fusion = metrics.get("fusion")
    if fusion:
        both = " (patients with every modality)" if len(fusion.get("routes", {})) > 1 else ""
        for method, entry in fusion.get("methods", {}).items():
            rows[f"{method} fusion{both}"] = {"oof": entry["oof_uncalibrated"]}
        rows["calibrated risk, every route"] = fusion
    for name, branch in rows.items():
        oof = branch["oof"]
        table.add_row(
            name,
            str(oof.get("roc_auc")),
            _interval(oof.get("roc_auc_ci")),
            str(oof.get("pr_auc")),
            str(oof.get("brier")),
            str(oof["n"]),
        )
    console.print(table)
    if fusion:
        at = fusion["oof_at_threshold"]
        console.print(
            f"decision threshold {at['threshold']:.3f} (target sensitivity "
            f"{fusion['decision']['target_sensitivity']:.2f}): sensitivity "
            f"{at['sensitivity']['value']:.3f}, specificity {at['specificity']['value']:.3f} "
            "out of fold"
        )
        console.print(f"fusion kept: {fusion['method']} (higher out-of-fold ROC AUC)")
        _print_routes(fusion)
    _print_severity(metrics.get("severity"), "out of fold")
    console.print(f"run folder: {run}")


def _print_routes(fusion: dict[str, Any]) -> None:
    """Who was scored by what, when some patients lack a modality."""
    routes = fusion.get("routes", {})
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


def _interval(ci: Any) -> str:
    if not ci or any(c is None for c in ci):
        return "no interval"
    return f"{_fmt(ci[0])}–{_fmt(ci[1])}"


# --- evaluate and predict ---------------------------------------------------------------------


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
    fusion = result["fusion"]
    table = Table(title=f"locked test part: {result['scored']} patients scored")
    for column in ("metric", "value", "95% CI"):
        table.add_column(column)
    for key in (
        "roc_auc",
        "pr_auc",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "f1",
        "brier",
        "ece",
    ):
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


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="a run folder written by 'deeppcos train'")],
    out: Annotated[Path, typer.Option(help="predictions file (.csv or .parquet)")],
    patients: Annotated[
        Path | None,
        typer.Option(
            help="patients table in the training cohort's layout (e.g. the Kaggle sheet) or "
            "with canonical column names; the diagnosis column may be absent"
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            help="images: a manifest (patient_id, path) or a folder of DIR/<patient_id>/… or "
            "DIR/<patient_id>[_…].png files"
        ),
    ] = None,
    spec: Annotated[Path | None, typer.Option(help="or: any cohort spec to score")] = None,
    fhir: Annotated[
        Path | None,
        typer.Option(
            help="or: FHIR R4 Patient and Observation resources: a Bundle (JSON), an NDJSON "
            "bulk-export file, or a folder of them"
        ),
    ] = None,
    fhir_window_days: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="with --fhir: only values from this many days before each "
            "patient's latest one (latest value per code)",
        ),
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="stream --patients (CSV/TSV/Parquet) in chunks of this many rows "
            "into a Parquet --out, with bounded memory",
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            help="score the chunks on a Dask cluster: scheduler address "
            "(tcp://host:8786), scheduler file (.json) or local[:N]"
        ),
    ] = None,
) -> None:
    """Predict new patients: probability, calibrated risk, decision, severity, modalities used."""
    import tempfile

    from deeppcos.data.loaders import load_cohort
    from deeppcos.exceptions import DataFileError
    from deeppcos.inference.predictor import load_run
    from deeppcos.inference.scoring import new_patients_spec

    sources = [patients is not None or images is not None, spec is not None, fhir is not None]
    if sum(sources) != 1:
        raise typer.BadParameter("give either --patients and/or --images, or --spec, or --fhir")
    if chunk_size is not None or dask is not None:
        _predict_in_chunks(run, out, patients, images, chunk_size, dask)
        return
    with _errors_as_messages(), tempfile.TemporaryDirectory() as workdir:
        for given in (patients, images, spec):
            if given is not None and not given.exists():  # before loading models (seconds)
                raise DataFileError(f"{given}: not found")
        predictor = load_run(run)
        if fhir is not None:
            cohort = _fhir_cohort(fhir, fhir_window_days, predictor)
        elif spec is None:
            spec_used = new_patients_spec(
                predictor.training_spec(), patients, images, Path(workdir)
            )
            cohort = load_cohort(spec_used)
        else:
            cohort = load_cohort(spec)
        predictions = predictor.predict(cohort)
        _print_report(cohort.report, 5)  # after scoring: it adds categories the model never saw
    if out.suffix == ".parquet":
        predictions.to_parquet(out, index=False)
    else:
        from deeppcos.runs.csvsafe import write_csv

        write_csv(predictions, out, index=False)
    counts = predictions["modalities"].astype(str).value_counts().to_dict()
    flagged = int(predictions["decision"].fillna(False).sum())
    assert predictor.threshold is not None  # load_run always sets it
    console.print(
        f"{_scored_in_words(counts)}; {flagged} flagged (risk ≥ {_percent(predictor.threshold)}); "
        f"written to {out}",
        highlight=False,
        markup=False,
    )
    if predictions["severity"].notna().any():
        console.print(f"severity grades: {_grades_in_words(predictions)}", markup=False)


# How each route of ``modalities`` reads to a user; "none" is a patient with neither.
MODALITY_WORDS = {
    "tabular+image": "with labs and images",
    "tabular": "with labs only",
    "image": "with images only",
}


def _percent(p: float) -> str:
    """0.0703 → "7.0%"; a small share keeps two significant digits (0.00042 → "0.042%")."""
    return f"{p:.1%}" if p >= 0.001 else f"{100 * p:.2g}%"


def _scored_in_words(counts: dict[str, int]) -> str:
    """``{"tabular+image": 100, "tabular": 5, "none": 2}`` → "105 patients scored: 100 with
    labs and images, 5 with labs only; 2 not scored (neither labs nor images)"."""
    unscored = counts.get("none", 0)
    scored = {k: n for k, n in counts.items() if k != "none" and n}
    known = [k for k in MODALITY_WORDS if k in scored]
    parts = [f"{scored[k]} {MODALITY_WORDS[k]}" for k in known]
    parts += [f"{n} with {k.replace('+', ' and ')}" for k, n in scored.items() if k not in known]
    text = _count(sum(scored.values()), "patient", "patients") + " scored"
    if parts:
        text += ": " + ", ".join(parts)
    if unscored:
        text += f"; {unscored} not scored (neither labs nor images)"
    return text


def _grades_in_words(predictions: Any) -> str:  # predictions: pd.DataFrame
    """Patients per severity grade, mildest first: "427 none, 45 mild, 40 moderate, 88 severe"."""
    counts = predictions["severity"].dropna().astype(str).value_counts().to_dict()
    # The predictor writes one p_severity_<grade> column per grade, lowest grade first.
    levels = [c.removeprefix("p_severity_") for c in predictions if c.startswith("p_severity_")]
    levels += [g for g in counts if g not in levels]
    return ", ".join(f"{counts.get(g, 0)} {g}" for g in levels)


def _fhir_cohort(bundle: Path, window_days: float | None, predictor: Any):  # -> Cohort
    from deeppcos.data.fhir import FhirOptions, load_fhir_cohort
    from deeppcos.inference.batch import model_inputs
    from deeppcos.knowledge.catalog import CATALOG

    # The ranges the run checked in training (a PCOS run's differ from another's for age).
    options = FhirOptions(window_days=window_days, ranges=predictor.input_ranges(list(CATALOG)))
    return load_fhir_cohort(bundle, options, model_inputs(predictor))


def _predict_in_chunks(
    run: Path,
    out: Path,
    patients: Path | None,
    images: Path | None,
    chunk_size: int | None,
    dask: str | None,
) -> None:
    from deeppcos.inference.batch import DEFAULT_CHUNK_SIZE, score_table

    if patients is None:
        raise typer.BadParameter("--chunk-size and --dask stream a --patients table")
    if dask is not None:
        with _errors_as_messages():
            _require_dask("deeppcos predict --dask")
    with _errors_as_messages(), _stage_progress() as progress:
        result = score_table(
            run,
            patients,
            out,
            images=images,
            chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
            scheduler=dask,
            progress=lambda done, total: progress("scoring patients", done, total or done),
        )
    report = _report_counts_in_words(result.report_counts) or "empty"
    console.print(
        f"{_scored_in_words(result.modalities)}; in {result.chunks} chunks on {result.workers} "
        f"worker(s), {result.patients_per_second:.0f} patients/s; written to {result.out}",
        highlight=False,
        markup=False,
    )
    console.print(f"load report ({report}): {result.report_csv}", highlight=False, markup=False)
    if result.resumed:
        console.print(
            f"resumed: {_count(result.resumed, 'chunk', 'chunks')} scored by an interrupted run "
            "kept, not scored again",
            highlight=False,
        )


# --- embed ----------------------------------------------------------------------------------


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


@app.command()
def serve(
    run: Annotated[Path, typer.Argument(help="a run folder written by 'deeppcos train'")],
    host: Annotated[str, typer.Option(help="address to bind; beyond loopback needs a key")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            help="environment variable holding the API key clients send as X-API-Key "
            "(default: DEEPPCOS_API_KEY, used when set)"
        ),
    ] = None,
    max_request_mb: Annotated[
        float, typer.Option(min=0.001, help="largest request body accepted (413 beyond)")
    ] = 32.0,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="worker processes, each with its own copy of the model (about one per core)"
        ),
    ] = 1,
    max_explained_patients: Annotated[
        int, typer.Option(min=1, help="patients one explain: true request may ask for")
    ] = 20,
) -> None:
    """Serve a run over HTTP (FastAPI): /health, /model, /predict; OpenAPI at /docs.

    Concurrent requests are scored together (micro-batching); explanations run on their own
    copy of the model, so a long one does not hold up predictions.
    """
    from deeppcos.extras import require

    with _errors_as_messages():
        for module in ("fastapi", "uvicorn"):
            require(module, "serve", "deeppcos serve")
    from deeppcos.exceptions import ConfigError
    from deeppcos.inference.serve import (
        SERVE_SETTINGS_ENV,
        ServiceLimits,
        create_app,
        resolve_api_key,
        serve_settings,
    )

    try:
        key = resolve_api_key(host, api_key_env)
    except ConfigError as exc:  # refused to start: a usage error, exit 2
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    with _errors_as_messages():
        limits = ServiceLimits(
            max_request_bytes=int(max_request_mb * (1 << 20)),
            max_explained_patients=max_explained_patients,
        )
        # Built here even with several workers: a broken run fails now, not in each worker.
        application = create_app(run, api_key=key, limits=limits)
    import uvicorn

    auth = "an API key (X-API-Key, also for /docs)" if key else "no API key (loopback only)"
    processes = f" in {workers} worker processes" if workers > 1 else ""
    err_console.print(
        f"serving {run} on http://{host}:{port}{processes} with {auth}; docs at /docs"
    )
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "warning"}
    if workers == 1:
        uvicorn.run(application, access_log=False, **options)
        return
    del application
    os.environ[SERVE_SETTINGS_ENV] = serve_settings(run, host, api_key_env, limits)
    _serve_in_workers(workers, options)


def _serve_in_workers(workers: int, options: dict[str, Any]) -> None:
    """uvicorn's multi-process mode, with TCP_NODELAY on the shared listening socket.

    uvicorn binds that socket itself with protocol 0, so asyncio does not turn Nagle's algorithm
    off on the connections it accepts (it does only for IPPROTO_TCP sockets), and every small
    response then waits ~40 ms for the client's delayed ACK (measured: /health 1 ms with one
    process, 44 ms with two). Linux copies the option from the listening socket to each
    accepted one.
    """
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        "deeppcos.inference.serve:app_from_environment",
        factory=True,
        workers=workers,
        access_log=False,
        **options,
    )
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the workers: not an error
        Multiprocess(config, sockets=[sock]).run()


# --- explain ---------------------------------------------------------------------------------

EXPLAIN_SALIENCY = ("gradcam", "gradient_shap", "none")
EXPLAIN_PARTS = ("all", "development", "test")


@app.command()
def explain(
    run: Annotated[Path, typer.Argument(help="a run folder written by 'deeppcos train'")],
    out: Annotated[
        Path, typer.Option(help="report (.html or .pdf) with --patient; a folder with --global")
    ],
    patient: Annotated[
        str | None, typer.Option(help="the patient_id to explain (the cohort's own id)")
    ] = None,
    global_view: Annotated[
        bool,
        typer.Option("--global", help="cohort-wide view: importance, beeswarm, dependence, shares"),
    ] = False,
    pdf: Annotated[bool, typer.Option(help="also write the report as PDF beside the HTML")] = False,
    spec: Annotated[
        Path | None, typer.Option(help="cohort spec to read patients from (default: the run's)")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the explanation as JSON")
    ] = None,
    saliency: Annotated[
        str, typer.Option(help="image maps: gradcam, gradient_shap or none")
    ] = "gradcam",
    top: Annotated[
        int | None,
        typer.Option(min=1, max=50, help="features in the report (8) / dependence plots (4)"),
    ] = None,
    part: Annotated[str, typer.Option(help="--global: all, development or test")] = "all",
) -> None:
    """Explain one prediction (--patient ID: HTML/PDF report) or the model (--global: PNGs)."""
    if (patient is None) == (not global_view):
        raise typer.BadParameter("give either --patient ID or --global")
    if saliency not in EXPLAIN_SALIENCY:
        raise typer.BadParameter(
            f"expected one of {', '.join(EXPLAIN_SALIENCY)}", param_hint="--saliency"
        )
    if part not in EXPLAIN_PARTS:
        raise typer.BadParameter(f"expected one of {', '.join(EXPLAIN_PARTS)}", param_hint="--part")
    if patient is not None and out.suffix.lower() not in (".html", ".htm", ".pdf"):
        raise typer.BadParameter("the report is written as .html or .pdf", param_hint="--out")
    from deeppcos.inference.predictor import load_run

    with _errors_as_messages():
        predictor = load_run(run)
        if spec is not None:
            from deeppcos.data.loaders import load_cohort

            cohort = load_cohort(spec)
        else:
            cohort = predictor.cohort()
        if patient is not None:
            _explain_patient(predictor, cohort, patient, out, pdf, json_out, saliency, top or 8)
        else:
            _explain_global(predictor, cohort, out, json_out, part, top or 4)


def _explain_patient(
    predictor: Any,
    cohort: Any,
    patient: str,
    out: Path,
    pdf: bool,
    json_out: Path | None,
    saliency: str,
    top: int,
) -> None:
    from deeppcos.explain.patient import explain_patient
    from deeppcos.explain.report import write_report
    from deeppcos.explain.wording import format_percent

    explanation = explain_patient(
        predictor, patient, cohort, saliency=None if saliency == "none" else saliency
    )
    written = [write_report(explanation, out, top)]
    if pdf and out.suffix.lower() != ".pdf":
        written.append(write_report(explanation, out.with_suffix(".pdf"), top))
    if json_out is not None:
        _write_json(explanation.to_dict(), str(json_out))
        written.append(json_out)
    p = explanation.prediction
    verdict = {True: "above", False: "below", None: "no"}[p["decision"]]
    console.print(
        f"patient {patient}: calibrated risk {format_percent(p['risk'])}, {verdict} the "
        f"threshold {format_percent(p['threshold'])} ({explanation.modalities}); written "
        + ", ".join(str(w) for w in written)
    )


def _explain_global(
    predictor: Any, cohort: Any, out: Path, json_out: Path | None, part: str, top: int
) -> None:
    from deeppcos.explain.global_view import global_explanation, write_global_view

    explanation = global_explanation(predictor, cohort, part=part)
    written = write_global_view(explanation, out, top)
    if json_out is not None:
        _write_json(explanation.to_dict(), str(json_out))
    console.print(
        f"{len(explanation.labels)} patients explained ({part}); in {out}: "
        + ", ".join(p.name for p in written.values())
    )


# --- dashboard -------------------------------------------------------------------------------

DASHBOARD_PORT = 8501


def dashboard_app() -> Path:
    """``dashboards/app.py``: installed beside the ``deeppcos`` package (or in the checkout)."""
    # The package folder is this file's: no import of the package root needed for it.
    return Path(__file__).resolve().parents[1] / "dashboards" / "app.py"


def dashboard_command(port: int, address: str) -> list[str]:
    """The ``streamlit run`` command line: headless, no file watcher, no usage statistics."""
    return [
        sys.executable, "-m", "streamlit", "run", str(dashboard_app()),
        "--server.port", str(port), "--server.address", address,
        "--server.headless", "true", "--server.fileWatcherType", "none",
        "--server.runOnSave", "false", "--server.maxUploadSize", "25",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
        # A full garbage collection after every rerun costs ~0.5 s once TensorFlow is loaded.
        "--runner.postScriptGC", "false",
    ]  # fmt: skip


def start_dashboard(
    run: Path | None, port: int = DASHBOARD_PORT, address: str = "127.0.0.1"
) -> int:
    """Serve the dashboard (``streamlit run``, run folder in ``$DEEPPCOS_RUN``) until Ctrl-C."""
    import subprocess

    from deeppcos.extras import require

    with _errors_as_messages():
        for module in ("streamlit", "plotly"):
            require(module, "dashboard", "deeppcos dashboard")
    if not dashboard_app().is_file():
        raise _fail(RuntimeError(f"{dashboard_app()}: the dashboard app is not installed"))
    env = dict(os.environ)
    if run is not None:
        env["DEEPPCOS_RUN"] = str(run.resolve())
        if not (run / "run.json").is_file():
            err_console.print(f"[yellow]warning:[/] {run}: not a complete run (the page says why)")
    console.print(f"dashboard: http://{address}:{port}  (Ctrl-C stops it)")
    try:
        return subprocess.call(dashboard_command(port, address), env=env)
    except KeyboardInterrupt:
        return 0


@app.command()
def dashboard(
    run: Annotated[
        Path | None, typer.Argument(help="run folder to show (default: demo/run if present)")
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to serve on")] = DASHBOARD_PORT,
    address: Annotated[
        str, typer.Option(help="address to bind; 0.0.0.0 exposes it to the network")
    ] = "127.0.0.1",
) -> None:
    """Open the Streamlit dashboard on a run: cohort, performance, patients, tuning, predict."""
    raise typer.Exit(start_dashboard(run, port, address))


# --- demo ------------------------------------------------------------------------------------


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
