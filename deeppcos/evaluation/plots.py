"""Plots written into run folders (matplotlib, headless; figures closed after use).

Evaluation plots take ``{model name: (y, p)}`` where several models share an axis (ROC, PR,
reliability), so "tabular", "image" and "fusion" can be compared on one figure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from deeppcos.evaluation._resample import clean_binary
from deeppcos.evaluation.metrics import calibration_table, classification_metrics


def plot_histories(histories: dict[str, dict[str, list[float]]], path: Path, title: str) -> Path:
    """One panel per metric (loss, AUC, …), one line per fold/phase, train solid, val dashed."""
    metrics = sorted({_base(m) for h in histories.values() for m in h})
    if not metrics:
        return path
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, (name, history) in enumerate(histories.items()):
            colour = f"C{i % 10}"
            for key, values in history.items():
                if _base(key) == metric and values:
                    style = "--" if key.startswith(("val", "validation")) else "-"
                    ax.plot(
                        range(1, len(values) + 1),
                        values,
                        style,
                        color=colour,
                        label=f"{name} {'val' if style == '--' else 'train'}",
                    )
        ax.set_title(metric)
        ax.set_xlabel("epoch / round")
    axes[0][0].legend(fontsize=6, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _base(key: str) -> str:
    for prefix in ("val_", "validation_", "train_"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


# --- evaluation plots -------------------------------------------------------------------------
# Each function writes one PNG and returns its path; the figure is closed even if drawing fails,
# so long runs that plot per fold or per model do not accumulate open figures.

Curves = Mapping[str, tuple[Any, Any]]
DPI = 130


def plot_roc(
    curves: Curves,
    path: Path | str,
    *,
    thresholds: Mapping[str, float] | None = None,
    title: str = "ROC curve",
    seed: int = 0,
    n_boot: int = 1000,
) -> Path:
    """ROC curves of one or more models (``{"tabular": (y, p), "fusion": (y, p)}``) on one axis.

    The legend gives each AUC with its 95% patient bootstrap interval; ``thresholds`` (model name
    -> threshold) marks that model's operating point with its sensitivity and specificity.
    """
    with _figure(path, (5.6, 5.2)) as (_fig, ax):
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="chance")
        for i, (name, (y, p)) in enumerate(curves.items()):
            y_arr, p_arr = _clean(y, p)
            fpr, tpr, _ = roc_curve(y_arr, p_arr)
            m = _metrics(y_arr, p_arr, thresholds, name, seed, n_boot)
            ax.plot(fpr, tpr, color=f"C{i}", lw=1.8, label=f"{name}: AUC {_with_ci(m['roc_auc'])}")
            if thresholds and name in thresholds:
                sens, spec = m["sensitivity"]["value"], m["specificity"]["value"]
                ax.plot(
                    1 - spec,
                    sens,
                    "o",
                    color=f"C{i}",
                    ms=8,
                    mec="black",
                    label=f"{name} at p ≥ {m['threshold']:.3g}: sens {sens:.2f}, spec {spec:.2f}",
                )
        ax.set(
            xlim=(-0.01, 1.01),
            ylim=(-0.01, 1.01),
            title=title,
            aspect="equal",
            xlabel="1 − specificity (false-positive rate)",
            ylabel="sensitivity (true-positive rate)",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return Path(path)


def plot_pr(
    curves: Curves,
    path: Path | str,
    *,
    thresholds: Mapping[str, float] | None = None,
    title: str = "Precision–recall curve",
    seed: int = 0,
    n_boot: int = 1000,
) -> Path:
    """Precision–recall curves of one or more models; the legend gives average precision + CI.

    The dotted line at each cohort's prevalence is what a model without skill reaches; an
    operating point from ``thresholds`` is marked at its (sensitivity, PPV).
    """
    with _figure(path, (5.6, 5.2)) as (_fig, ax):
        prevalences = set()
        for i, (name, (y, p)) in enumerate(curves.items()):
            y_arr, p_arr = _clean(y, p)
            precision, recall, _ = precision_recall_curve(y_arr, p_arr)
            m = _metrics(y_arr, p_arr, thresholds, name, seed, n_boot)
            ax.step(
                recall,
                precision,
                where="post",
                color=f"C{i}",
                lw=1.8,
                label=f"{name}: AP {_with_ci(m['pr_auc'])}",
            )
            prevalence = round(float(y_arr.mean()), 3)
            if prevalence not in prevalences:
                prevalences.add(prevalence)
                ax.axhline(
                    prevalence,
                    ls=":",
                    color="grey",
                    lw=1,
                    label=f"no skill (prevalence {prevalence:.2f})",
                )
            if thresholds and name in thresholds:
                sens, ppv = m["sensitivity"]["value"], m["ppv"]["value"]
                if sens is not None and ppv is not None:
                    ax.plot(
                        sens,
                        ppv,
                        "o",
                        color=f"C{i}",
                        ms=8,
                        mec="black",
                        label=f"{name} at p ≥ {m['threshold']:.3g}: sens {sens:.2f}, PPV {ppv:.2f}",
                    )
        ax.set(
            xlim=(-0.01, 1.01),
            ylim=(-0.01, 1.01),
            title=title,
            aspect="equal",
            xlabel="recall (sensitivity)",
            ylabel="precision (PPV)",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    return Path(path)


def plot_reliability(
    curves: Curves,
    path: Path | str,
    *,
    n_bins: int = 10,
    title: str = "Reliability diagram",
) -> Path:
    """Observed rate against mean predicted probability per equal-width bin, one line per model,
    with the patients per bin underneath (a bin of 3 patients says little about calibration)."""
    with _figure(path, (5.6, 6.4), rows=2, height_ratios=(3, 1.2)) as (_fig, (top, bottom)):
        top.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect calibration")
        width = 1 / n_bins / (len(curves) + 0.5)
        for i, (name, (y, p)) in enumerate(curves.items()):
            y_arr, p_arr = _clean(y, p)
            table = calibration_table(y_arr, p_arr, n_bins)
            filled = table[table["n"] > 0]
            # ECE over this plot's bins (classification_metrics fixes 10 bins for its key).
            ece = float(
                np.abs(filled["observed_rate"] - filled["mean_predicted"])
                @ filled["n"]
                / filled["n"].sum()
            )
            top.plot(
                filled["mean_predicted"],
                filled["observed_rate"],
                "o-",
                color=f"C{i}",
                label=f"{name} (ECE {ece:.3f})",
            )
            offset = (i - (len(curves) - 1) / 2) * width
            bars = bottom.bar(
                table["lower"] + 0.5 / n_bins + offset,
                table["n"],
                width=width,
                color=f"C{i}",
                label=name,
            )
            if len(curves) == 1:
                bottom.bar_label(bars, fontsize=7, padding=1)
        top.set(xlim=(0, 1), ylim=(-0.03, 1.03), title=title, ylabel="observed rate of positives")
        top.grid(alpha=0.3)
        top.legend(fontsize=7, loc="upper left")
        bottom.set(
            xlim=(0, 1),
            xlabel=f"predicted probability ({n_bins} equal-width bins)",
            ylabel="patients",
        )
        bottom.set_xticks(np.linspace(0, 1, n_bins + 1))
        bottom.tick_params(axis="x", labelsize=7)
        bottom.margins(y=0.2)
    return Path(path)


def plot_decision_curves(
    tables: Mapping[str, Any], path: Path | str, *, title: str = "Decision curve"
) -> Path:
    """Net benefit against the threshold probability: each model's curve (``tables``: name →
    frame of ``threshold``, ``model``, ``treat_all``), treating everyone, and no one."""
    with _figure(path, (6.0, 4.4)) as (_fig, ax):
        ax.axhline(0, color="black", lw=1, label="treat no one")
        for i, (name, table) in enumerate(tables.items()):
            ax.plot(table["threshold"], table["model"], color=f"C{i}", lw=2, label=f"model, {name}")
            ax.plot(
                table["threshold"],
                table["treat_all"],
                ":",
                color=f"C{i}",
                label=f"treat everyone, {name}",
            )
        best = max(float(np.nanmax(t["model"])) for t in tables.values())
        ax.set(
            xlabel="threshold probability",
            ylabel="net benefit",
            title=title,
            xlim=(0, float(max(t["threshold"].max() for t in tables.values()))),
            ylim=(-0.05, max(best, 0.05) * 1.15),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return Path(path)


def plot_confusion_matrix(
    matrix: Any,
    path: Path | str,
    *,
    labels: Sequence[str] | None = None,
    title: str = "Confusion matrix",
) -> Path:
    """Annotated confusion matrix, rows true class, columns predicted; binary or ordinal grades.

    Each cell shows the count and its share of the true class (row), and is coloured by that
    share, so the diagonal reads as per-class recall (for a binary matrix ``[[tn, fp], [fn,
    tp]]``: specificity, then sensitivity) whatever the class sizes.
    """
    counts = np.asarray(matrix, dtype=int)
    k = counts.shape[0]
    names = list(labels) if labels is not None else [str(i) for i in range(k)]
    if counts.shape != (k, k) or len(names) != k:
        raise ValueError(
            f"need a square matrix and one label per row; got {counts.shape}, {len(names)} labels"
        )
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = 2.2 + 0.9 * k
    with _figure(path, (side + 0.8, side)) as (fig, ax):
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                colour = "white" if share[i, j] > 0.6 else "black"
                ax.text(
                    j,
                    i,
                    f"{counts[i, j]}\n({share[i, j]:.0%})",
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=9,
                )
        ax.set_xticks(
            range(k), names, rotation=30 if k > 2 else 0, ha="right" if k > 2 else "center"
        )
        ax.set_yticks(range(k), names)
        ax.set(xlabel="predicted", ylabel="true", title=title)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return Path(path)


def plot_confidence_histograms(
    y: Any,
    p: Any,
    path: Path | str,
    *,
    threshold: float | None = None,
    class_names: tuple[str, str] = ("negative", "positive"),
    bins: int = 20,
    title: str = "Predicted probability by true class",
) -> Path:
    """Histogram of the predicted probability for each true class, one panel each.

    With ``threshold`` the panels say how many negatives are called positive (false alarms) and
    how many positives fall below it (missed cases) — the errors a clinician would see.
    """
    y_arr, p_arr = _clean(y, p)
    edges = np.linspace(0, 1, bins + 1)
    with _figure(path, (6.0, 5.0), rows=2) as (_fig, axes):
        for ax, cls, colour in zip(axes, (0, 1), ("C0", "C3"), strict=True):
            values = p_arr[y_arr == cls]
            heights, _, _ = ax.hist(values, bins=edges, color=colour, alpha=0.8)
            # Headroom for the annotation, which sits over the side where this class is rare.
            ax.set_ylim(0, max(1.0, heights.max(initial=0)) * 1.3)
            ax.set_ylabel(f"{class_names[cls]}\n(n = {len(values)})")
            ax.grid(alpha=0.3)
            if threshold is not None and len(values):
                ax.axvline(threshold, color="black", ls="--", lw=1)
                wrong = int((values >= threshold).sum() if cls == 0 else (values < threshold).sum())
                what = "called positive (false alarms)" if cls == 0 else "missed (below threshold)"
                ax.text(
                    0.99 if cls == 0 else 0.01,
                    0.95,
                    f"{what}: {wrong} of {len(values)} ({wrong / len(values):.0%})",
                    transform=ax.transAxes,
                    ha="right" if cls == 0 else "left",
                    va="top",
                    fontsize=8,
                    bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
                )
        axes[0].set_title(title if threshold is None else f"{title} (threshold {threshold:.3g})")
        axes[1].set_xlabel("predicted probability")
        axes[1].set_xlim(0, 1)
    return Path(path)


@contextmanager
def _figure(
    path: Path | str,
    size: tuple[float, float],
    *,
    rows: int = 1,
    height_ratios: tuple[float, ...] | None = None,
) -> Iterator[tuple[Figure, Any]]:
    kwargs = {"height_ratios": height_ratios} if height_ratios else {}
    fig, axes = plt.subplots(rows, 1, figsize=size, sharex=rows > 1, gridspec_kw=kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight")  # never crop axis labels
    finally:
        plt.close(fig)


def _clean(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y_arr, p_arr, _ = clean_binary(y, p, probabilities=True)
    return y_arr, p_arr


def _metrics(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: Mapping[str, float] | None,
    name: str,
    seed: int,
    n_boot: int,
) -> dict[str, Any]:
    # The threshold only matters for the operating point; the AUC intervals do not depend on it.
    threshold = (thresholds or {}).get(name, 0.5)
    return classification_metrics(y, p, threshold, seed=seed, n_boot=n_boot)


def _with_ci(entry: dict[str, Any]) -> str:
    if entry["value"] is None:
        return "undefined"
    if entry["ci"] is None:
        return f"{entry['value']:.3f}" + (" (no interval)" if entry.get("ci_note") else "")
    low, high = entry["ci"]
    return f"{entry['value']:.3f} ({low:.3f}–{high:.3f})"
