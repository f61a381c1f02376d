"""The per-patient report: one self-contained HTML page (inline CSS, images as base64 PNG, no
links out), or a PDF drawn with matplotlib's ``PdfPages``.

Why matplotlib for the PDF: it is already a dependency and needs no system libraries, whereas
HTML-to-PDF converters need either a browser or native libraries (weasyprint needs Pango and
cairo). The PDF carries the same content as the HTML, laid out on A4 pages.

Both are rendered from a :class:`~deeppcos.explain.patient.PatientExplanation` only; nothing
else is read, so a report shows exactly what the explanation object holds. They speak the
cohort's own words (``expl.words``: its label and its images), and the PCOS-specific section —
the Rotterdam criteria checklist — appears only for a PCOS cohort.
"""

from __future__ import annotations

import base64
import html
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeppcos.explain import plots
from deeppcos.explain.fusion import reads_embeddings
from deeppcos.explain.wording import format_percent

if TYPE_CHECKING:
    from deeppcos.explain.patient import PatientExplanation

__all__ = ["GUIDELINE_NAMES", "render_html", "write_pdf", "write_report"]

GUIDELINE_NAMES = {
    "rotterdam-2003": "Rotterdam 2003 (ESHRE/ASRM)",
    "2023-international": "2023 International evidence-based guideline",
}

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1c2833;
margin:0;background:#f4f6f7;line-height:1.45}
main{max-width:980px;margin:0 auto;padding:24px 28px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#d5dbdb;padding-bottom:4px}.meta{color:#566573;font-size:13px}
.banner{background:#fef9e7;border:1px solid #f7dc6f;padding:8px 12px;border-radius:4px;
font-size:13px;margin:12px 0}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 190px;border:1px solid #d5dbdb;border-radius:6px;padding:10px 12px}
.card .k{font-size:12px;color:#566573;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:24px;font-weight:600}.card .s{font-size:12px;color:#566573}
.pos{color:#c0392b}.neg{color:#2471a3}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeded;vertical-align:top}
th{background:#f8f9f9}.badge{display:inline-block;padding:1px 8px;border-radius:10px;
font-size:12px;font-weight:600}.met{background:#fadbd8;color:#922b21}
.notmet{background:#d6eaf8;color:#1b4f72}.unknown{background:#eaeded;color:#566573}
.imgs{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0;flex:1 1 280px;max-width:460px}
figure img{width:100%;border:1px solid #d5dbdb}figcaption{font-size:12px;color:#566573}
img.chart{max-width:100%}ul{padding-left:20px}li{margin:3px 0}.small{font-size:12px;
color:#566573}footer{margin-top:28px;font-size:12px;color:#566573}
"""


# --- HTML ---------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(data: bytes, alt: str, css: str = "") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img class="{css}" alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _decision_text(expl: PatientExplanation) -> tuple[str, str]:
    decision = expl.prediction.get("decision")
    threshold = expl.prediction.get("threshold")
    at = f"threshold {format_percent(threshold)}" if threshold is not None else "no threshold"
    if decision is None:
        return "No prediction", f"neither {expl.words.table} nor images"
    if decision:
        return "Above threshold", f"flag for {expl.words.a_label} work-up ({at})"
    return "Below threshold", f"not flagged ({at})"


def branch_estimates(expl: PatientExplanation, percent: Any = format_percent) -> str:
    """The branch models' own probabilities in words, labelled for what they are: under late
    fusion the two inputs the fusion combines; under intermediate fusion separate models' own
    estimates, not part of the score (its image share is not the image model's opinion): any
    fusion whose model reads the embedding and the features itself (:func:`reads_embeddings`)."""
    p = expl.prediction
    models = [
        f"{name} model {percent(p[key])}"
        for name, key in (("image", "p_image"), ("tabular", "p_tabular"))
        if p.get(key) is not None
    ]
    if not models:
        return ""
    both = expl.modalities == "tabular+image"
    if reads_embeddings(expl.fusion_method) and both:
        return (
            "for comparison, separate models' own estimates (not part of this score): "
            + ", ".join(models)
        )
    if both:
        return "each model's own estimate, which the fusion combines: " + ", ".join(models)
    return "the model that scored this patient: " + ", ".join(models)


def _scores_text(expl: PatientExplanation) -> str:
    """Which data scored her, the fused score, and each model's own probability labelled for
    what it is (only the models that ran)."""
    p = expl.prediction
    parts = [
        expl.modality_summary(),
        f"score before calibration {format_percent(p.get('probability'))}",
    ]
    estimates = branch_estimates(expl)
    if estimates:
        parts.append(estimates)
    return " · ".join(parts)


def _summary(expl: PatientExplanation) -> str:
    p = expl.prediction
    title, detail = _decision_text(expl)
    cards = [
        (
            "Calibrated risk",
            format_percent(p.get("risk")),
            f"probability of {expl.words.label} after calibration",
        ),
        ("Decision", title, detail),
    ]
    severity = expl.severity_summary()
    if severity is not None:
        cards.append(("Severity grade", *severity))
    cards.append(("Modalities used", expl.modalities, _scores_text(expl)))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
            f'<div class="s">{_e(s)}</div></div>'
            for k, v, s in cards
        )
        + "</div>"
    )


def _contributions(expl: PatientExplanation, k: int) -> str:
    if expl.logit is None:
        return "<p>No prediction was possible, so there is nothing to attribute.</p>"
    chart = _img(plots.png(plots.contributions_figure(expl, k)), "contributions", "chart")
    items = "".join(
        f'<li class="{"pos" if f.logit > 0 else "neg"}"><span style="color:#1c2833">'
        f"{_e(f.sentence(expl.risk))}</span>"
        + (
            f" <span class='small'>(read off the {_e(expl.words.images)})</span>"
            if f.ultrasound_derived
            else ""
        )
        + "</li>"
        for f in expl.top_features(k)
    )
    intro = (
        f"<p class='small'>The score is {expl.logit:+.2f} logit points (probability "
        f"{format_percent(expl.prediction.get('probability'))} before calibration), from "
        f"{_e(expl.modality_summary())}. It is the baseline "
        f"({expl.shares.get('bias', 0.0):+.2f}) plus the contributions below, exactly. Red "
        "raised the risk, blue lowered it; a dotted bar is the effect of a test that was not "
        "done, not a finding.</p>"
    )
    if expl.fusion_note and "ultrasound" in expl.shares:
        intro += f"<p class='banner'>{_e(expl.fusion_note)}</p>"
    listing = f"<ul>{items}</ul>" if items else "<p>No tabular data contributed.</p>"
    return intro + chart + "<h3 style='font-size:14px'>Top tabular features</h3>" + listing


def _shares(expl: PatientExplanation) -> str:
    s = expl.shares
    if not s:
        return "<p>No prediction.</p>"
    chart = _img(plots.png(plots.shares_figure(expl)), "modality shares", "chart")
    if "ultrasound" not in s or "tabular" not in s:
        return chart + f"<p class='small'>Scored from {_e(expl.modality_summary())}.</p>"
    fraction = s.get("ultrasound_fraction")
    part = (
        f"The images account for {format_percent(fraction)} of the size of the two modalities' "
        "contributions."
        if fraction is not None and not math.isnan(fraction)
        else ""
    )
    rows = [
        (expl.words.images_title, s["ultrasound"], s.get("risk_without_ultrasound")),
        ("Tabular data", s["tabular"], s.get("risk_without_tabular")),
    ]
    table = "".join(
        f"<tr><td>{_e(n)}</td><td>{v:+.2f}</td><td>{_e(format_percent(r))}</td></tr>"
        for n, v, r in rows
    )
    notes = []
    if reads_embeddings(expl.fusion_method):
        notes.append(
            f"Under {expl.fusion_method} fusion these are the two parts of one model's score, "
            "not the image model's and the tabular model's own opinions (see the note above)."
        )
    if abs(s.get("tabular_adjustment", 0.0)) >= 1e-3:
        notes.append(
            f"{s['tabular_adjustment']:+.2f} of the tabular share is the fusion's cap on a "
            "branch's score (|logit| ≤ 9.2), not any one feature."
        )
    return (
        chart + "<table><tr><th>Modality</th><th>Logit points</th><th>Calibrated risk without it "
        "(the other modality's model alone)</th>"
        + f"</tr>{table}</table><p class='small'>{_e(part)} {_e(' '.join(notes))}</p>"
    )


def _images(expl: PatientExplanation) -> str:
    words = expl.words
    if not expl.images:
        if expl.prediction.get("p_image") is None:
            return f"<p>This patient has no {_e(words.images)}.</p>"
        return "<p>No image maps were drawn for this report.</p>"
    method = {
        "gradcam": f"Grad-CAM (where the image model found evidence for {words.label})",
        "gradient_shap": "SHAP expected gradients (pixels that raised the image model's output)",
    }
    figures = "".join(
        "<figure>"
        + _img(image.overlay_png(), image.caption)
        + f"<figcaption>{_e(image.caption)}: image model {format_percent(image.probability)}; "
        f"original {image.original_shape[1]}×{image.original_shape[0]} px; "
        f"{_e(method.get(image.method, image.method))}</figcaption></figure>"
        for image in expl.images
    )
    intermediate = (
        f" The maps and percentages are the image model's own; under {expl.fusion_method} "
        "fusion the score reads the images through that model's embedding, together with the "
        "table."
        if reads_embeddings(expl.fusion_method)
        else ""
    )
    return (
        f'<div class="imgs">{figures}</div><p class="small">Colour marks where the image model '
        f"found evidence for {_e(words.label)}, from blue (weak) to red (strong); uncoloured "
        "areas carry none. Maps are drawn at each image's original size; burned-in text in the "
        f"margins is blanked.{_e(intermediate)}</p>"
    )


def _criteria(expl: PatientExplanation) -> str:
    c = expl.criteria
    if c is None:
        return "<p>No tabular data to check the criteria against.</p>"
    css = {"met": "met", "not met": "notmet", "unknown": "unknown"}
    rows = "".join(
        f"<tr><td>{_e(item.title)}</td><td><span class='badge {css[item.state]}'>"
        f"{_e(item.state)}</span></td><td>{_e(item.rule)}</td>"
        f"<td>{'<br>'.join(_e(e) for e in item.evidence) or '–'}</td></tr>"
        for item in c.items
    )
    verdict = {
        "met": "at least two of the three criteria are met",
        "not met": "two criteria cannot be met even if every unknown one were",
        "unknown": "undetermined with the data present",
    }[c.rotterdam_pcos]
    phenotype = f"; phenotype {c.phenotype}" if c.phenotype else ""
    caveats = "".join(f"<li>{_e(x)}</li>" for x in c.caveats)
    return (
        f"<p>Guideline: <b>{_e(GUIDELINE_NAMES.get(c.guideline, c.guideline))}</b> (the run's). "
        f"{c.n_met} of 3 criteria met, {c.n_known} known: "
        f"<b>Rotterdam criteria {_e(c.rotterdam_pcos)}</b> ({_e(verdict)}{_e(phenotype)}).</p>"
        "<table><tr><th>Criterion</th><th>State</th><th>Rule</th><th>Data</th></tr>"
        f"{rows}</table><details><summary class='small'>Notes on the rules</summary>"
        f"<ul class='small'>{caveats}</ul></details>"
    )


def _card(expl: PatientExplanation) -> str:
    m = expl.model_card
    rows = [
        (
            "Run",
            f"{m.get('run')} (trained {m.get('trained')}, deeppcos {m.get('deeppcos_version')})",
        ),
        (
            "Training cohort",
            f"{m.get('cohort')}: {m.get('development_patients')} development patients, "
            f"{m.get('test_patients')} in a locked test part",
        ),
        (
            "Model",
            f"branches {', '.join(m.get('branches', []))}; {m.get('fusion_method')} fusion; "
            f"{m.get('calibration')} calibration" + _routes_text(m.get("routes") or {}, expl),
        ),
        (
            "Decision threshold",
            f"risk ≥ {format_percent(m.get('threshold'))}, chosen for sensitivity "
            f"{m.get('target_sensitivity')} on out-of-fold predictions",
        ),
        ("Out of fold", _figures(m.get("out_of_fold"))),
        (
            "Locked test part",
            _figures(m["locked_test"])
            if m.get("locked_test")
            else "not scored yet (run 'deeppcos evaluate RUN')",
        ),
    ]
    if m.get("model_card"):
        rows.append(("Full model card", f"{m['model_card']} in the run folder"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _routes_text(routes: dict[str, str], expl: PatientExplanation | None = None) -> str:
    """How patients missing a modality are scored, for a run with more than one route."""
    single = {k: v for k, v in routes.items() if "+" not in k}
    if len(routes) < 2 or not single:
        return ""
    names = dict(ROUTE_NAMES)
    if expl is not None:
        names = {"tabular": f"without {expl.words.images}", "image": f"without {expl.words.table}"}
    parts = [f"{names.get(k, k)}: {v}" for k, v in single.items()]
    return "; patients " + ", ".join(parts) + " (a missing modality is not evidence)"


ROUTE_NAMES = {"tabular": "without images", "image": "without laboratory data"}


def _figures(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "–"
    names = {
        "roc_auc": "ROC AUC",
        "sensitivity": "sensitivity",
        "specificity": "specificity",
        "ppv": "PPV",
        "npv": "NPV",
        "brier": "Brier",
    }
    parts = []
    for key, name in names.items():
        entry = figures.get(key)
        if not entry:
            continue
        ci = entry.get("ci")
        interval = f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci and None not in ci else ""
        parts.append(f"{name} {entry['value']:.2f}{interval}")
    n = f"; n = {figures['n']}" if "n" in figures else ""
    return "; ".join(parts) + n


def report_title(expl: PatientExplanation) -> str:
    """The report's title, naming the cohort's label."""
    return f"Explanation of {expl.words.a_label} risk prediction"


def render_html(expl: PatientExplanation, top: int = 8) -> str:
    """The report as one self-contained HTML document."""
    words = expl.words
    caveats = "".join(f"<li>{_e(c)}</li>" for c in expl.caveats)
    part = {
        "development": " · in the run's development data (in-sample)",
        "test": " · in the run's locked test part (never trained on)",
        "label_noise": " · set aside as label noise (never trained on)",
    }.get(expl.in_training_data or "", "")
    sections = [
        ("Prediction", _summary(expl)),
        ("What drove the score", _contributions(expl, top)),
        (f"{words.images_title} and tabular data: shares of the score", _shares(expl)),
        (words.images_title, _images(expl)),
    ]
    if words.pcos:
        sections.append(("Rotterdam criteria from the data present", _criteria(expl)))
    sections += [
        ("About the model", _card(expl)),
        ("Caveats", f"<ul>{caveats}</ul>"),
    ]
    body = "".join(f"<section><h2>{_e(t)}</h2>{content}</section>" for t, content in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>deeppcos explanation · patient {_e(expl.patient_id)}</title>"
        f"<style>{CSS}</style></head><body><main>"
        f"<h1>{_e(report_title(expl))}</h1><div class='meta'>Patient "
        f"<b>{_e(expl.patient_id)}</b> · cohort {_e(expl.cohort)}{_e(part)} · run "
        f"{_e(expl.run)} · scored by {_e(expl.scored_by)} · {_e(expl.created)}</div>"
        "<div class='banner'><b>Decision support, not a diagnosis.</b> Read with the history, "
        "examination, laboratory results and imaging.</div>"
        f"{body}<footer>deeppcos · research software for decision support; it does not "
        f"diagnose {_e(words.label)}.</footer></main></body></html>"
    )


# --- PDF ----------------------------------------------------------------------------------------

A4 = (8.27, 11.69)


def _text_block(
    figure: Any, y: float, lines: list[str], size: float = 8.5, width: int = 110
) -> float:
    """Write wrapped lines from height ``y`` (figure fraction) down; return the next free y."""
    step = size / 72 / A4[1] * 1.35
    width = round(width * 8.5 / size)  # characters per line shrink as the font grows
    for line in lines:
        for k, chunk in enumerate(textwrap.wrap(line, width) or [""]):
            figure.text(0.07 + (0.02 if k else 0.0), y, chunk, fontsize=size, va="top")
            y -= step
    return y


def _pdf_page_one(expl: PatientExplanation, top: int) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=A4)
    figure.text(0.07, 0.965, report_title(expl), fontsize=15, weight="bold")
    figure.text(
        0.07,
        0.945,
        f"Patient {expl.patient_id} · cohort {expl.cohort} · run {expl.run} · "
        f"scored by {expl.scored_by} · {expl.created}",
        fontsize=8.5,
        color="#566573",
    )
    title, detail = _decision_text(expl)
    p = expl.prediction
    lines = [
        "Decision support, not a diagnosis.",
        f"Calibrated risk {format_percent(p.get('risk'))} — {title}: {detail}.",
        f"Modalities used: {expl.modalities} ({_scores_text(expl)}).",
    ]
    severity = expl.severity_summary()
    if severity is not None:
        lines.append(f"Severity grade: {severity[0]} ({severity[1]}).")
    if expl.fusion_note and "ultrasound" in expl.shares:
        lines.append(expl.fusion_note)
    y = _text_block(figure, 0.92, lines, size=9.5)
    if expl.logit is not None:
        axes = figure.add_axes((0.36, y - 0.36, 0.58, 0.32))
        plots.draw_contributions(axes, expl, top)
        y -= 0.41
        shares = figure.add_axes((0.36, y - 0.08, 0.58, 0.07))
        plots.draw_shares(shares, expl)
        y -= 0.13
    _text_block(
        figure,
        y,
        ["Top tabular features:"] + ["• " + f.sentence(expl.risk) for f in expl.top_features(top)],
    )
    return figure


def p_image_missing(expl: PatientExplanation) -> bool:
    return expl.prediction.get("p_image") is None


def _pdf_page_images(expl: PatientExplanation) -> Any:
    import io

    import matplotlib.image as mpimg
    from matplotlib.figure import Figure

    figure = Figure(figsize=A4)
    figure.text(
        0.07, 0.965, f"{expl.words.images_title} with saliency maps", fontsize=13, weight="bold"
    )
    columns = 2
    for k, image in enumerate(expl.images[:6]):
        row, col = divmod(k, columns)
        axes = figure.add_axes((0.07 + col * 0.45, 0.64 - row * 0.3, 0.4, 0.27))
        axes.imshow(mpimg.imread(io.BytesIO(image.overlay_png()), format="png"))
        axes.set_axis_off()
        axes.set_title(
            f"{image.caption}: image model {format_percent(image.probability)}; "
            f"{image.original_shape[1]}×{image.original_shape[0]} px ({image.method})",
            fontsize=7.5,
        )
    if not expl.images:
        text = (
            f"This patient has no {expl.words.images}."
            if p_image_missing(expl)
            else "No image maps were drawn for this report."
        )
        figure.text(0.07, 0.9, text)
    else:
        figure.text(
            0.07,
            0.945,
            f"Colour marks where the image model found evidence for {expl.words.label}, from "
            "blue (weak) to red (strong).",
            fontsize=8.5,
            color="#566573",
        )
    return figure


def _pdf_page_text(expl: PatientExplanation) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=A4)
    heading = "Criteria, model and caveats" if expl.words.pcos else "Model and caveats"
    figure.text(0.07, 0.965, heading, fontsize=13, weight="bold")
    lines: list[str] = []
    c = expl.criteria if expl.words.pcos else None
    if c is not None:
        lines.append(
            f"Rotterdam criteria ({GUIDELINE_NAMES.get(c.guideline, c.guideline)}, the run's "
            f"guideline) from the data present: {c.rotterdam_pcos} — "
            f"{c.n_met} of 3 met, {c.n_known} known"
            + (f"; phenotype {c.phenotype}" if c.phenotype else "")
        )
        for item in c.items:
            evidence = "; ".join(item.evidence) or "–"
            lines.append(
                f"• {item.title}: {item.state.upper()} — rule: {item.rule}. Data: {evidence}"
            )
    m = expl.model_card
    lines += [
        "",
        f"Model: run {m.get('run')}, cohort {m.get('cohort')} "
        f"({m.get('development_patients')} development patients); {m.get('fusion_method')} "
        f"fusion, {m.get('calibration')} calibration; threshold "
        f"{format_percent(m.get('threshold'))}.",
        f"Out of fold: {_figures(m.get('out_of_fold'))}.",
        "Locked test part: "
        + (_figures(m["locked_test"]) if m.get("locked_test") else "not scored yet")
        + ".",
        "",
        "Caveats:",
        *[f"• {x}" for x in expl.caveats],
    ]
    _text_block(figure, 0.93, lines)
    return figure


def write_pdf(expl: PatientExplanation, path: Path | str, top: int = 8) -> Path:
    """The report as a 3-page A4 PDF (matplotlib ``PdfPages``; no system libraries needed)."""
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(path) as pdf:
        for page in (_pdf_page_one(expl, top), _pdf_page_images(expl), _pdf_page_text(expl)):
            pdf.savefig(page)
        info = pdf.infodict()
        info["Title"] = f"deeppcos explanation, patient {expl.patient_id}"
        info["Subject"] = "Decision support, not a diagnosis"
    return path


def write_report(expl: PatientExplanation, path: Path | str, top: int = 8) -> Path:
    """Write ``path`` as HTML (``.html``/``.htm``) or PDF (``.pdf``), by its suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return write_pdf(expl, path, top)
    if suffix not in (".html", ".htm"):
        raise ValueError(f"{path}: the report is written as .html or .pdf; got {suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(expl, top), encoding="utf-8")
    return path
