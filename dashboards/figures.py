"""Interactive charts (plotly) for the pages. No Streamlit here; every function returns a figure.

Colours follow the report's: red raises the risk or marks positives, blue lowers it or marks
negatives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

if TYPE_CHECKING:
    from deeppcos.explain.patient import PatientExplanation

RAISE = "#c0392b"
LOWER = "#2471a3"
GREY = "#7f8c8d"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "template": "plotly_white"}
Curve = tuple[np.ndarray, np.ndarray]


def _clean(y: Any, p: Any) -> Curve:
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    keep = ~(np.isnan(y) | np.isnan(p))
    return y[keep].astype(int), p[keep]


def _usable(y: np.ndarray) -> bool:
    return len(y) > 0 and len(np.unique(y)) == 2


def roc_figure(curves: Mapping[str, Curve], threshold: float | None = None) -> go.Figure:
    """ROC curves; the first curve's operating point at ``threshold`` is marked."""
    from sklearn.metrics import roc_auc_score, roc_curve

    figure = go.Figure()
    figure.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot", "color": GREY})
    for k, (name, (y_raw, p_raw)) in enumerate(curves.items()):
        y, p = _clean(y_raw, p_raw)
        if not _usable(y):
            continue
        fpr, tpr, _ = roc_curve(y, p)
        auc = roc_auc_score(y, p)
        figure.add_scatter(
            x=fpr,
            y=tpr,
            mode="lines",
            name=f"{name} (AUC {auc:.3f})",
            line={"color": PALETTE[k % len(PALETTE)]},
        )
        if k == 0 and threshold is not None:
            called = p >= threshold
            figure.add_scatter(
                x=[called[y == 0].mean()],
                y=[called[y == 1].mean()],
                mode="markers",
                name=f"threshold {threshold:.3f}",
                marker={"size": 12, "color": RAISE},
            )
    figure.update_layout(
        title="ROC, locked test part",
        xaxis_title="1 − specificity (false-positive rate)",
        yaxis_title="sensitivity",
        **LAYOUT,
    )
    return figure


def pr_figure(curves: Mapping[str, Curve], threshold: float | None = None) -> go.Figure:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure = go.Figure()
    for k, (name, (y_raw, p_raw)) in enumerate(curves.items()):
        y, p = _clean(y_raw, p_raw)
        if not _usable(y):
            continue
        precision, recall, _ = precision_recall_curve(y, p)
        ap = average_precision_score(y, p)
        figure.add_scatter(
            x=recall,
            y=precision,
            mode="lines",
            name=f"{name} (AP {ap:.3f})",
            line={"color": PALETTE[k % len(PALETTE)], "shape": "hv"},
        )
        if k == 0 and threshold is not None and (p >= threshold).any():
            called = p >= threshold
            figure.add_scatter(
                x=[called[y == 1].mean()],
                y=[y[called].mean()],
                mode="markers",
                name=f"threshold {threshold:.3f}",
                marker={"size": 12, "color": RAISE},
            )
    if curves:
        y0, _ = _clean(*next(iter(curves.values())))
        if len(y0):
            figure.add_hline(y=y0.mean(), line={"dash": "dot", "color": GREY})
    figure.update_layout(
        title="Precision–recall, locked test part",
        xaxis_title="recall (sensitivity)",
        yaxis_title="precision (PPV)",
        yaxis_range=[0, 1.02],
        **LAYOUT,
    )
    return figure


def calibration_figure(curves: Mapping[str, Curve], n_bins: int = 10) -> go.Figure:
    """Reliability diagram: observed rate against mean predicted probability per bin; the
    marker size is the bin's patient count."""
    from deeppcos.evaluation.metrics import calibration_table

    figure = go.Figure()
    figure.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot", "color": GREY})
    for k, (name, (y_raw, p_raw)) in enumerate(curves.items()):
        y, p = _clean(y_raw, p_raw)
        if not len(y):
            continue
        table = calibration_table(y, p, n_bins)
        table = table[table["n"] > 0]
        figure.add_scatter(
            x=table["mean_predicted"],
            y=table["observed_rate"],
            mode="lines+markers",
            name=name,
            marker={"size": 6 + 14 * np.sqrt(table["n"] / table["n"].max())},
            line={"color": PALETTE[k % len(PALETTE)]},
            customdata=table["n"],
            hovertemplate="predicted %{x:.2f}<br>observed %{y:.2f}"
            "<br>n = %{customdata}<extra></extra>",
        )
    figure.update_layout(
        title="Calibration (reliability)",
        xaxis_title="mean predicted risk",
        yaxis_title="observed rate",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
        **LAYOUT,
    )
    return figure


def confusion_figure(matrix: Any, labels: list[str], title: str) -> go.Figure:
    """Counts with each row's share (rows: truth, columns: what was called)."""
    counts = np.asarray(matrix, dtype="float64")
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    text = [
        [f"{int(c)}<br>({s:.0%} of row)" for c, s in zip(row, srow, strict=True)]
        for row, srow in zip(counts, shares, strict=True)
    ]
    figure = go.Figure(
        go.Heatmap(
            z=shares,
            x=[f"called {x}" for x in labels],
            y=[f"truly {x}" for x in labels],
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1.6,
            showscale=False,
            hoverinfo="skip",
        )
    )
    figure.update_layout(title=title, yaxis_autorange="reversed", height=320, **LAYOUT)
    return figure


def confidence_figure(y: Any, p: Any, threshold: float) -> go.Figure:
    """Histograms of the calibrated risk for negatives and positives, threshold marked."""
    y, p = _clean(y, p)
    figure = go.Figure()
    bins = {"start": 0.0, "end": 1.0, "size": 0.05}
    figure.add_histogram(x=p[y == 0], name="truly negative", marker_color=LOWER, xbins=bins)
    figure.add_histogram(x=p[y == 1], name="truly positive", marker_color=RAISE, xbins=bins)
    figure.add_vline(x=threshold, line={"color": "black", "dash": "dash"})
    figure.update_layout(
        barmode="overlay",
        title="Calibrated risk by true label",
        xaxis_title="risk",
        yaxis_title="patients",
        **LAYOUT,
    )
    figure.update_traces(opacity=0.6)
    return figure


# --- cohort ------------------------------------------------------------------------------------


def _category_figure(patients: pd.DataFrame, feature: str, label_name: str) -> go.Figure:
    """A categorical feature by label: each category's share of its label group, side by side."""
    figure = go.Figure()
    for name, mask, colour in (
        (f"no {label_name}", patients["label"] == 0, LOWER),
        (label_name, patients["label"] == 1, RAISE),
    ):
        part = patients.loc[mask.fillna(False).astype(bool), feature]
        shares = part.value_counts(normalize=True, sort=False, dropna=True) * 100
        figure.add_bar(
            x=[str(c) for c in shares.index],
            y=shares.to_numpy(),
            name=f"{name} (n = {part.notna().sum()})",
            marker_color=colour,
        )
    figure.update_layout(
        barmode="group",
        title=f"{feature} by label (missing: {patients[feature].isna().sum()})",
        xaxis_title=feature,
        yaxis_title="% of the group",
        **LAYOUT,
    )
    return figure


def distribution_figure(patients: pd.DataFrame, feature: str, label_name: str) -> go.Figure:
    """A feature's distribution by label: overlaid histograms on shared bins, each as a share of
    its own group (the groups differ in size); missing values left out."""
    if isinstance(patients[feature].dtype, pd.CategoricalDtype):
        return _category_figure(patients, feature, label_name)
    values = patients[feature].dropna()
    figure = go.Figure()
    bins = _bins(values)
    groups = [
        (f"no {label_name}", patients["label"] == 0, LOWER),
        (label_name, patients["label"] == 1, RAISE),
        ("unlabelled", patients["label"].isna(), GREY),
    ]
    for name, mask, colour in groups:
        part = patients.loc[mask.fillna(False).astype(bool), feature].dropna()
        if len(part) == 0 and name == "unlabelled":
            continue
        figure.add_histogram(
            x=part,
            name=f"{name} (n = {len(part)})",
            marker_color=colour,
            xbins=bins,
            histnorm="percent",
            opacity=0.55,
        )
    figure.update_layout(
        barmode="overlay",
        title=f"{feature} by label (missing: {patients[feature].isna().sum()})",
        xaxis_title=feature,
        yaxis_title="% of the group",
        **LAYOUT,
    )
    return figure


def _bins(values: pd.Series, n: int = 30) -> dict[str, float] | None:
    if values.empty:
        return None
    low, high = float(values.min()), float(values.max())
    if values.nunique() <= 12:  # flags, counts, scores: one bar per value
        return {"start": low - 0.5, "end": high + 0.5, "size": 1.0}
    if bool((values == values.round()).all()):  # whole numbers: bars on whole-number edges
        size = float(max(1, int(np.ceil((high - low) / n))))
        return {"start": low - 0.5, "end": high + 0.5 + size, "size": size}
    size = (high - low) / n or 1.0
    return {"start": low, "end": high + size, "size": size}


def missingness_figure(table: pd.DataFrame) -> go.Figure:
    shown = table[table["missing"] > 0]
    figure = go.Figure(
        go.Bar(x=shown["missing"], y=shown["feature"], orientation="h", marker_color=GREY)
    )
    figure.update_layout(
        title="Share of patients missing each feature",
        xaxis_tickformat=".0%",
        xaxis_range=[0, 1],
        yaxis_autorange="reversed",
        height=max(260, 18 * len(shown) + 80),
        **LAYOUT,
    )
    return figure


def correlation_figure(matrix: pd.DataFrame) -> go.Figure:
    figure = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(),
            x=list(matrix.columns),
            y=list(matrix.index),
            colorscale="RdBu",
            zmin=-1,
            zmax=1,
            reversescale=True,
            hovertemplate="%{y} × %{x}: %{z:.2f}<extra></extra>",
        )
    )
    size = max(420, 18 * len(matrix) + 160)
    figure.update_layout(
        title="Spearman correlations",
        height=size,
        yaxis_autorange="reversed",
        xaxis={"dtick": 1, "tickangle": -60},
        yaxis={"dtick": 1},
        **LAYOUT,
    )
    return figure


def bar_figure(
    table: pd.DataFrame, x: str, y: str, title: str, colours: list[str] | None = None
) -> go.Figure:
    figure = go.Figure(go.Bar(x=table[x], y=table[y], marker_color=colours or PALETTE[0]))
    figure.update_layout(title=title, height=300, **LAYOUT)
    return figure


# --- one patient -------------------------------------------------------------------------------


def _words(expl: Any) -> Any:
    """The explanation's cohort words (PCOS and ultrasound for an object without them)."""
    from deeppcos.explain.wording import CohortWords

    words = getattr(expl, "words", None)
    return words if isinstance(words, CohortWords) else CohortWords()


def waterfall_figure(expl: PatientExplanation, top: int = 10) -> go.Figure:
    """The fused score built up from the baseline: the images, the ``top`` tabular features,
    and the rest summed, in logit points (exact SHAP shares of the fusion's logit)."""
    shares = expl.shares
    steps: list[tuple[str, float]] = []
    if "ultrasound" in shares:  # only for a patient who has images (the key kept for any kind)
        steps.append((_words(expl).images, float(shares["ultrasound"])))
    shown = expl.top_features(top)
    steps += [(f.display, f.logit) for f in shown]
    names = {f.name for f in shown}
    rest = sum(f.logit for f in expl.features if f.name not in names)
    rest += shares.get("tabular_adjustment", 0.0)
    if abs(rest) >= 0.005:
        steps.append(("all other tabular inputs", rest))
    bias = float(shares.get("bias", 0.0))
    labels = ["baseline", *[s[0] for s in steps], "score"]
    values = [bias, *[s[1] for s in steps], 0.0]
    running = np.cumsum(values[:-1])
    low, high = min(0.0, float(running.min())), max(0.0, float(running.max()))
    pad = 0.25 * ((high - low) or 1.0)
    figure = go.Figure(
        go.Waterfall(
            orientation="h",
            y=labels,
            x=values,
            measure=["absolute", *["relative"] * len(steps), "total"],
            increasing={"marker": {"color": RAISE}},
            decreasing={"marker": {"color": LOWER}},
            totals={"marker": {"color": GREY}},
            text=[f"{v:+.2f}" for v in values[:-1]] + [f"{expl.logit:+.2f}"],
            textposition="outside",
            cliponaxis=False,
        )
    )
    figure.update_layout(
        title="What drove the score (logit points; red raised, blue lowered the risk)",
        yaxis_autorange="reversed",
        height=max(320, 30 * len(labels) + 90),
        showlegend=False,
        xaxis_range=[low - pad, high + pad],
        **LAYOUT,
    )
    return figure


def shares_figure(expl: PatientExplanation) -> go.Figure:
    """The total contribution of each modality she has, in logit points."""
    shares = expl.shares
    present = [k for k in ("ultrasound", "tabular") if k in shares]
    words = {"ultrasound": _words(expl).images, "tabular": "tabular data"}
    names = [words[k] for k in present]
    values = [float(shares[k]) for k in present]
    span = max(abs(v) for v in values) or 1.0
    figure = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=[RAISE if v > 0 else LOWER for v in values],
            text=[f"{v:+.2f}" for v in values],
            textposition="outside",
            cliponaxis=False,
        )
    )
    from deeppcos.explain.fusion import reads_embeddings

    inside = reads_embeddings(getattr(expl, "fusion_method", None))
    figure.update_layout(
        title="Modality shares (logit points"
        + ("; parts of one model's score)" if inside else ")"),
        height=200,
        xaxis_range=[-1.4 * span, 1.4 * span],
        **LAYOUT,
    )
    return figure
