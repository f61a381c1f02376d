"""A model card in Markdown: what the model is for, what it was trained on, how well it works
(with intervals, overall and per subgroup), what the leakage/shortcut audit found, and its limits.

The card is written for a reader who will not open the run folder: every figure carries its
interval, every subgroup its gap to the whole cohort, and the decision-support caveat is always
printed, whatever ``intended_use`` says.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import pandas as pd

from deeppcos._version import __version__
from deeppcos.evaluation.subgroups import SUBGROUP_METRICS


def decision_support(label: str = "PCOS") -> str:
    """The decision-support caveat (Markdown bold), naming the cohort's label ('PCOS',
    'cardiomegaly'); it is printed in every card and report, whatever ``intended_use`` says."""
    return (
        "**This model is decision support, not a diagnosis.** Its output is a probability to be "
        "read by a clinician together with the history, examination, laboratory results and "
        f"imaging; it must not be used on its own to diagnose, exclude or grade {label}, nor to "
        "choose a treatment."
    )


DECISION_SUPPORT = decision_support("PCOS")

METRIC_NAMES = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1",
    "brier": "Brier score (lower is better)",
    "ece": "ECE, 10 bins (lower is better)",
    "log_loss": "Log loss (lower is better)",
    "quadratic_kappa": "Quadratic weighted kappa",
    "macro_f1": "Macro F1",
}
COUNT_KEYS = ("n", "positives", "threshold", "tp", "fp", "tn", "fn", "excluded")
SEVERITY_RANK = {"high": 0, "warning": 1, "info": 2, "ok": 3}

STANDARD_CAVEATS = (
    "Intervals are 95% bootstrap intervals over the patients of this cohort — BCa (bias-corrected "
    "and accelerated) for every metric except ECE, which is shown bias-corrected with the basic "
    "bootstrap interval, and Wilson score intervals for proportions of exactly 0 or 1; an "
    "interval that would not contain its estimate is not shown, and the reason is given "
    "instead (marked †). They describe sampling uncertainty only, not what happens at another "
    "site, on another scanner or in another population.",
    "A threshold chosen on out-of-fold predictions reaches its target sensitivity there by "
    "construction; its sensitivity on new patients must be confirmed on data that did not choose "
    "it (the locked test part, or an external cohort).",
    "The plug-in ECE is biased upwards on small samples (even a calibrated model shows one from "
    "noise); the value shown is bias-corrected (the plug-in is kept in metrics.json as "
    "'plugin'). Read it with the reliability diagram's bin counts.",
    "Subgroup gaps are point differences, not tests; small subgroups have wide intervals.",
)


def write_model_card(
    path: Path | str,
    *,
    run_name: str,
    cohort_summary: Mapping[str, Any],
    provenance: str,
    intended_use: str,
    metrics: Mapping[str, Any],
    subgroups: pd.DataFrame | Sequence[Mapping[str, Any]],
    audit_findings: Sequence[Mapping[str, Any]],
    limits: Sequence[str],
    details: Mapping[str, Any] | None = None,
    label: str = "PCOS",
) -> Path:
    """Write the card to ``path`` (Markdown) and return the path.

    ``metrics`` is one model's ``classification_metrics`` (or ``binary_metrics``/
    ``ordinal_metrics``) result, or ``{model name: result}`` for several models side by side.
    ``subgroups`` is ``subgroup_metrics``'s table (or its records). ``audit_findings`` are dicts
    with ``severity``, ``check``, ``title`` (and optionally ``detail``), as in the audit's JSON.
    ``details`` adds rows to "Model details" (model type, branches, config, …). ``label`` is
    the cohort's label as a reader says it ('PCOS', 'cardiomegaly'), for the decision-support
    caveat.
    """
    models = _as_models(metrics)
    findings = [_finding(f) for f in audit_findings]
    sections = [
        f"# Model card: {_cell(run_name)}",
        _audit_banner(findings),
        _model_details(run_name, models, details or {}),
        "## Intended use\n\n" + decision_support(label) + "\n\n" + intended_use.strip(),
        _data_section(cohort_summary, provenance),
        _metrics_section(models),
        _subgroup_section(subgroups),
        _audit_section(findings),
        _limits_section(limits),
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(s for s in sections if s).rstrip() + "\n", encoding="utf-8")
    return path


# --- sections -------------------------------------------------------------------------------


def _audit_banner(findings: list[dict[str, str]]) -> str:
    high = sum(f["severity"] == "high" for f in findings)
    if not high:
        return ""
    return (
        f"> **Warning:** the leakage/shortcut audit reported {high} high-severity finding"
        f"{'s' if high > 1 else ''} (see below). Read every metric in this card in that light."
    )


def _model_details(
    run_name: str, models: dict[str, Mapping[str, Any]], details: Mapping[str, Any]
) -> str:
    rows = [("Run", run_name), ("deeppcos version", __version__)]
    rows.append(("Card written", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")))
    rows.append(("Models evaluated", ", ".join(models)))
    for name, m in models.items():
        if m.get("threshold") is not None:
            label = "Decision threshold" + (f" ({name})" if len(models) > 1 else "")
            rows.append((label, f"p ≥ {m['threshold']:.4g} is called positive"))
    rows += [(str(k), _inline(v)) for k, v in details.items()]
    return "## Model details\n\n" + _table(["Item", "Value"], rows)


def _data_section(cohort_summary: Mapping[str, Any], provenance: str) -> str:
    rows = [(str(k), _inline(v)) for k, v in cohort_summary.items()]
    table = _table(["Cohort", "Value"], rows) if rows else "_No cohort summary was supplied._"
    return f"## Data and provenance\n\n{provenance.strip()}\n\n{table}"


def _metrics_section(models: dict[str, Mapping[str, Any]]) -> str:
    names = list(models)
    keys = [k for k in METRIC_NAMES if any(_metric(m, k) for m in models.values())]
    extra = sorted(
        {k for m in models.values() for k, v in m.items() if _is_entry(v)} - set(METRIC_NAMES)
    )
    rows = [
        [METRIC_NAMES.get(k, k), *(with_ci(_metric(models[n], k)) for n in names)]
        for k in [*keys, *extra]
    ]
    rows += [
        [key, *(_inline(models[n].get(key, "")) for n in names)]
        for key in COUNT_KEYS
        if any(key in m for m in models.values())
    ]
    intro = (
        "Point estimate with its 95% patient-level bootstrap interval in brackets; "
        "a patient is called positive when p ≥ threshold. `tp`, `fp`, `tn`, `fn` are the "
        "confusion-matrix counts at that threshold."
    )
    if not rows:
        return "## Metrics\n\n_No metrics were supplied._"
    return f"## Metrics\n\n{intro}\n\n" + _table(["Metric", *names], rows)


def _subgroup_section(subgroups: pd.DataFrame | Sequence[Mapping[str, Any]]) -> str:
    frame = subgroups if isinstance(subgroups, pd.DataFrame) else pd.DataFrame(list(subgroups))
    if frame.empty:
        return "## Subgroups\n\n_No subgroup analysis was supplied._"
    cohort = frame[frame["group"] == "all"]
    headers = ["Group", "Level", "n", "Positives"]
    for metric in SUBGROUP_METRICS:
        headers += [METRIC_NAMES[metric].split(" (")[0], "Gap"]
    rows = []
    for _, row in frame.iterrows():
        cells = [row["group"], row["level"], _inline(row["n"]), _inline(row["positives"])]
        for metric in SUBGROUP_METRICS:
            cells += _subgroup_cells(row, metric, cohort)
        rows.append([*cells, row.get("note", "")])
    intro = (
        "Gap = subgroup minus whole cohort (negative: worse in the subgroup). A gap in **bold** "
        "is one where the whole cohort's value lies outside the subgroup's 95% interval; "
        "small groups have no interval (see the note)."
    )
    return f"## Subgroups\n\n{intro}\n\n" + _table([*headers, "Note"], rows)


def _subgroup_cells(row: pd.Series, metric: str, cohort: pd.DataFrame) -> list[str]:
    value, low, high = row.get(metric), row.get(f"{metric}_low"), row.get(f"{metric}_high")
    gap = row.get(f"{metric}_gap")
    ci = None if _missing(low) or _missing(high) else [low, high]
    cell = with_ci({"value": None if _missing(value) else value, "ci": ci})
    if _missing(gap) or row["group"] == "all":
        return [cell, ""]
    gap_text = f"{gap:+.3f}".replace("-", "−")
    overall = cohort[metric].iloc[0] if len(cohort) else None
    if ci is not None and overall is not None and not (low <= overall <= high):
        gap_text = f"**{gap_text}**"
    return [cell, gap_text]


def _audit_section(findings: list[dict[str, str]]) -> str:
    title = "## Leakage/shortcut audit findings"
    if not findings:
        return (
            f"{title}\n\n_No audit findings were supplied. Run `deeppcos audit` on the cohort: "
            "duplicates across splits and image-property shortcuts can make any metric above "
            "meaningless._"
        )
    ordered = sorted(findings, key=lambda f: SEVERITY_RANK.get(f["severity"], 9))
    counts = {s: sum(f["severity"] == s for f in findings) for s in SEVERITY_RANK}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    rows = [[f["severity"], f"`{f['check']}`", f["title"], f["detail"]] for f in ordered]
    return f"{title}\n\n{summary}.\n\n" + _table(["Severity", "Check", "Finding", "Detail"], rows)


def _limits_section(limits: Iterable[str]) -> str:
    items = [*(s.strip() for s in limits if s.strip()), *STANDARD_CAVEATS]
    return "## Limitations and caveats\n\n" + "\n".join(f"- {_oneline(s)}" for s in items)


# --- helpers --------------------------------------------------------------------------------


def _as_models(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{name: metrics}``: one unnamed result becomes ``{"model": result}``."""
    single = "n" in metrics or any(_is_entry(v) for v in metrics.values())
    if single:
        return {"model": metrics}
    return {str(k): v for k, v in metrics.items() if isinstance(v, Mapping)}


def _metric(m: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """``{"value", "ci"}`` from either layout: nested entries or ``binary_metrics``'s flat keys."""
    value = m.get(key)
    if _is_entry(value):
        return dict(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"value": value, "ci": m.get(f"{key}_ci")}
    return None


def _is_entry(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, Mapping) and "value" in value


def _finding(finding: Any) -> dict[str, str]:
    data = finding.to_dict() if hasattr(finding, "to_dict") else dict(finding)
    return {k: str(data.get(k, "") or "") for k in ("severity", "check", "title", "detail")}


def with_ci(entry: Mapping[str, Any] | None) -> str:
    """``{"value", "ci", "ci_note"}`` as "0.812 (0.771–0.850)", or why it has no interval."""
    if entry is None:
        return ""
    value, ci = entry.get("value"), entry.get("ci")
    if value is None:
        return "undefined"
    if not ci or any(_missing(c) for c in ci):
        note = entry.get("ci_note")
        return f"{value:.3f} (no interval†: {note})" if note else f"{value:.3f}"
    return f"{value:.3f} ({ci[0]:.3f}–{ci[1]:.3f})"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_inline(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_inline(v) for v in value)
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _oneline(text: Any) -> str:
    return " ".join(str(text).split())


def _cell(text: Any) -> str:
    # A "|" inside a cell would end it; newlines would end the row.
    return _oneline(text).replace("|", "\\|")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
