"""Scoring commands: predict (new patients, in chunks, on Dask) and explain (one patient's report,
or the model's global view)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from deeppcos.cli.common import (
    _count,
    _errors_as_messages,
    _print_report,
    _report_counts_in_words,
    _require_dask,
    _stage_progress,
    _write_json,
    app,
    console,
)


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
