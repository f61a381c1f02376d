"""What every command shares: the Typer app, the consoles, error handling and exit codes, progress
bars, and printing a cohort's load report."""

from __future__ import annotations

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

from deeppcos._version import __version__

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
    "label_noise": (
        "patient set aside as label noise by the split",
        "patients set aside as label noise by the split",
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


def _interval(ci: Any) -> str:
    if not ci or any(c is None for c in ci):
        return "no interval"
    return f"{_fmt(ci[0])}–{_fmt(ci[1])}"


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"
