"""Plots written into run folders (matplotlib, headless; figures closed after use)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


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
