"""Cohort commands: synth (a synthetic cohort), validate (load and report), audit (leaks and
shortcuts), criteria (the diagnostic criteria of each patient)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from deeppcos.cli.common import (
    EXIT_AUDIT,
    EXIT_STRICT,
    SEVERITY_RANK,
    SpecArg,
    _errors_as_messages,
    _load,
    _print_report,
    _print_summary,
    _progress,
    _write_json,
    app,
    console,
)


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
