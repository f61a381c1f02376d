"""Rendering of an ``AuditResult``: a self-contained HTML report and a rich table for the terminal.

The HTML report has no external assets: styles are inline and example duplicate pairs are small
base64 PNG thumbnails, so the file can be mailed or attached to a review as it is.
"""

from __future__ import annotations

import base64
import html
import json
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd

from deeppcos.audit.rules import (
    SEVERITY_ORDER,
    SHORTCUT_HIGH,
    SHORTCUT_WARNING,
    TABULAR_HIGH,
    TABULAR_WARNING,
    json_safe,
)
from deeppcos.data.imageio import read_image, to_gray_uint8

if TYPE_CHECKING:
    from deeppcos.audit.base import AuditResult, Finding

SEVERITY_COLOURS = {"high": "#c0392b", "warning": "#d68910", "info": "#2471a3", "ok": "#1e8449"}
RICH_STYLES = {"high": "bold red", "warning": "yellow", "info": "cyan", "ok": "green"}
SECTIONS = (
    ("images", "Image files"),
    ("exact", "1. Exact duplicates"),
    ("near", "2. Near-duplicates"),
    ("split", "3. Split straddling"),
    ("shortcut", "4. Image shortcut probes"),
    ("tabular", "5. Tabular leakage"),
    ("labels", "6. Labels and groups"),
)
MAX_EXAMPLE_PAIRS = 6
THUMB_HEIGHT = 120

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:.3em .6em;vertical-align:top;text-align:left}
th{background:#f4f6f7}.sev{color:#fff;border-radius:3px;padding:.1em .5em;font-weight:600;
font-size:.85em;white-space:nowrap}.muted{color:#666;font-size:.9em}
.finding{border-left:4px solid #ccc;padding:.2em .9em;margin:1em 0;background:#fbfcfc}
.pair{display:inline-block;margin:.5em 1em .5em 0;text-align:center;font-size:.8em}
.pair img{border:1px solid #999}.bar{background:#d5dbdb;height:.8em;display:inline-block}
code{background:#f4f6f7;padding:0 .2em}
"""


# --- terminal --------------------------------------------------------------------------------


def print_findings(result: AuditResult, console: Any = None) -> None:
    """A rich table of findings, worst first, coloured by severity."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    settings = result.settings
    table = Table(
        title=f"Leakage and shortcut audit: {settings.get('cohort', '')} "
        f"(worst: {result.worst_severity})",
        show_lines=False,
    )
    table.add_column("Severity", no_wrap=True)
    table.add_column("Check", no_wrap=True)
    table.add_column("Finding")
    for finding in sorted_findings(result.findings):
        style = RICH_STYLES[finding.severity]
        table.add_row(f"[{style}]{finding.severity}[/]", finding.check, finding.title)
    console.print(table)


def sorted_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: -SEVERITY_ORDER[f.severity])


# --- HTML ------------------------------------------------------------------------------------


def render_html(result: AuditResult) -> str:
    settings = result.settings
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Audit: {esc(str(settings.get('cohort', '')))}</title><style>{_CSS}</style>",
        "</head><body>",
        f"<h1>Leakage and shortcut audit: {esc(str(settings.get('cohort', '')))}</h1>",
        f"<p class='muted'>{settings.get('images', 0)} images, {settings.get('patients', 0)} "
        f"patients; label: {esc(str(settings.get('label_name', '')))}; near-duplicate threshold "
        f"{settings.get('near_duplicate_threshold')} bits; split from "
        f"{esc(str(settings.get('part_source') or 'none'))}; seed {settings.get('seed')}; "
        f"ran in {settings.get('elapsed_s')} s. Worst severity: "
        f"{_badge(result.worst_severity)}</p>",
        "<h2>Verdicts</h2>",
        _verdict_table(result.findings),
        "<p class='muted'>How predictiveness is judged: cross-validated ROC AUC over "
        f"{settings.get('folds')} patient-grouped stratified folds (duplicates kept together), "
        f"reported as is (never flipped), with a 95% bootstrap interval over patient groups "
        f"({settings.get('bootstrap')} resamples). Image properties and groups: AUC ≥ "
        f"{SHORTCUT_HIGH} high (a shortcut), {SHORTCUT_WARNING}–{SHORTCUT_HIGH} warning. "
        f"Tabular columns: AUC ≥ {TABULAR_HIGH} high (nearly encodes the label), "
        f"{TABULAR_WARNING}–{TABULAR_HIGH} warning (a strong single predictor).</p>",
    ]
    for prefix, heading in SECTIONS:
        findings = result.by_check(prefix)
        if not findings:
            continue
        parts.append(f"<h2>{esc(heading)}</h2>")
        if prefix == "near":
            parts.append(_example_pairs(result))
        if prefix in ("shortcut", "tabular") and len(result.probes):
            parts.append(_probe_table(result.probes, prefix))
        parts.extend(_finding_block(f) for f in sorted_findings(findings))
    parts.append("</body></html>")
    return "\n".join(parts)


def _badge(severity: str) -> str:
    return f"<span class='sev' style='background:{SEVERITY_COLOURS[severity]}'>{severity}</span>"


def _verdict_table(findings: list[Finding]) -> str:
    rows = "".join(
        f"<tr><td>{_badge(f.severity)}</td><td><code>{html.escape(f.check)}</code></td>"
        f"<td>{html.escape(f.title)}</td></tr>"
        for f in sorted_findings(findings)
    )
    return (
        "<table class='verdicts'><tr><th>Severity</th><th>Check</th><th>Verdict</th></tr>"
        f"{rows}</table>"
    )


def _finding_block(finding: Finding) -> str:
    colour = SEVERITY_COLOURS[finding.severity]
    figures = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_figure_text(v))}</td></tr>"
        for k, v in finding.figures.items()
    )
    table = f"<table>{figures}</table>" if figures else ""
    return (
        f"<div class='finding' style='border-color:{colour}'>"
        f"<p>{_badge(finding.severity)} <b>{html.escape(finding.title)}</b> "
        f"<code>{html.escape(finding.check)}</code></p>"
        f"<p>{html.escape(finding.detail)}</p>{table}</div>"
    )


def _figure_text(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(json_safe(value), ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _probe_table(probes: pd.DataFrame, prefix: str) -> str:
    kinds = ("image", "acquisition", "combined") if prefix == "shortcut" else ("tabular",)
    rows = probes[probes["kind"].isin(kinds)]
    if not len(rows):
        return ""
    rows = rows.sort_values("auc", ascending=False, na_position="last")
    body = []
    for _, row in rows.iterrows():
        auc = row.get("auc")
        has_auc = auc is not None and not pd.isna(auc)
        bar = f"<span class='bar' style='width:{int(120 * auc)}px'></span> " if has_auc else ""
        interval = (
            f"{row['ci_low']:.2f}–{row['ci_high']:.2f}"
            if has_auc and not pd.isna(row.get("ci_low"))
            else ""
        )
        body.append(
            f"<tr><td><code>{html.escape(str(row['property']))}</code></td>"
            f"<td>{html.escape(str(row['kind']))}</td>"
            f"<td>{bar}{f'{auc:.3f}' if has_auc else html.escape(str(row.get('note', '')))}</td>"
            f"<td>{interval}</td><td>{_badge(str(row['severity']))}</td></tr>"
        )
    return (
        "<table><tr><th>Property</th><th>Kind</th><th>Cross-validated AUC</th><th>95% CI</th>"
        f"<th>Verdict</th></tr>{''.join(body)}</table>"
    )


# --- example pairs ---------------------------------------------------------------------------


def example_pairs(result: AuditResult, limit: int = MAX_EXAMPLE_PAIRS) -> pd.DataFrame:
    """The most telling duplicate pairs: across parts or labels first, then the least similar."""
    pairs = result.duplicate_pairs
    if not len(pairs):
        return pairs
    info = result.image_features.set_index("image_id")
    pairs = pairs.copy()
    for side in ("a", "b"):
        ids = pairs[f"image_{side}"]
        for column in ("part", "label", "patient_id"):
            values = info[column] if column in info else pd.Series(index=info.index, dtype=object)
            pairs[f"{column}_{side}"] = ids.map(values).astype(object).values
    pairs["cross_part"] = _differs(pairs["part_a"], pairs["part_b"])
    pairs["cross_label"] = _differs(pairs["label_a"], pairs["label_b"])
    # Half the examples are exact copies crossing parts/labels, half the farthest near ones,
    # which show the reader what the threshold admits.
    pairs = pairs.sort_values(
        ["cross_label", "cross_part", "distance"], ascending=[False, False, False]
    )
    # One pair per cluster: six views of one cluster would tell the reader little.
    if "near_cluster" in info:
        pairs = pairs.assign(cluster=pairs["image_a"].map(info["near_cluster"]).values)
        pairs = pairs.drop_duplicates("cluster")
    near = pairs[~pairs["exact"].astype(bool)].head(limit // 2)
    rest = pairs.drop(index=near.index).head(limit - len(near))
    return pd.concat([rest, near])


def _differs(a: pd.Series, b: pd.Series) -> pd.Series:
    known = a.notna() & b.notna()
    return known & (a.astype(str) != b.astype(str))


def _example_pairs(result: AuditResult) -> str:
    chosen = example_pairs(result)
    if not len(chosen):
        return ""
    info = result.image_features.set_index("image_id")
    blocks = []
    for _, pair in chosen.iterrows():
        thumbs = [_thumbnail(info, pair["image_a"]), _thumbnail(info, pair["image_b"])]
        if any(t is None for t in thumbs):
            continue
        caption = (
            f"{pair['image_a']} ({_where(pair, 'a')}) vs {pair['image_b']} ({_where(pair, 'b')}), "
            f"{pair['distance']} bits{', identical pixels' if pair['exact'] else ''}"
        )
        images = "".join(f"<img alt='' src='data:image/png;base64,{t}'> " for t in thumbs)
        blocks.append(f"<div class='pair'>{images}<br>{html.escape(caption)}</div>")
    if not blocks:
        return ""
    return "<h3>Example duplicate pairs</h3>" + "".join(blocks)


def _where(pair: pd.Series, side: str) -> str:
    bits = [f"patient {pair[f'patient_id_{side}']}"]
    if pd.notna(pair[f"part_{side}"]):
        bits.append(str(pair[f"part_{side}"]))
    if pd.notna(pair[f"label_{side}"]):
        bits.append(f"label {pair[f'label_{side}']}")
    return ", ".join(bits)


def _thumbnail(info: pd.DataFrame, image_id: str) -> str | None:
    try:
        row = info.loc[image_id]
        frame = None if pd.isna(row["frame"]) else int(row["frame"])
        gray = to_gray_uint8(read_image(row["path"], frame))
    except Exception:  # a thumbnail must never break the report
        return None
    height, width = gray.shape
    scale = THUMB_HEIGHT / height
    size = (max(1, min(int(width * scale), 2 * THUMB_HEIGHT)), THUMB_HEIGHT)
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(small))
    return base64.b64encode(buffer.tobytes()).decode("ascii") if ok else None
